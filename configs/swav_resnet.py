"""SwAV (Sinkhorn prototypes, swapped prediction; Caron et al. 2020)
on ResNet-18 (arg r18, default) or ResNet-50 (arg r50), 224 px.

    lusjax train --config configs/swav_resnet.py:r18 --config.workdir=runs/swav_resnet \
        --config.data.data_dir=data/lus

Two views, no multi-crop; ssl.queue_size>0 adds a feature queue for small batches.
"""

from configs import common


def get_config(arg=None):
    return common.resnet("swav", arg)
