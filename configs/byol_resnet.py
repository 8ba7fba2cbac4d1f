"""BYOL (EMA target, predictor; Grill et al. 2020)
on ResNet-18 (arg r18, default) or ResNet-50 (arg r50), 224 px.

    lusjax train --config configs/byol_resnet.py:r18 --config.workdir=runs/byol_resnet \
        --config.data.data_dir=data/lus

No negatives: robust to small batches.
"""

from configs import common


def get_config(arg=None):
    return common.resnet("byol", arg)
