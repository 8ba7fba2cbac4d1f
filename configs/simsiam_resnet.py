"""SimSiam (stop-gradient, predictor; Chen & He 2021)
on ResNet-18 (arg r18, default) or ResNet-50 (arg r50), 224 px.

    lusjax train --config configs/simsiam_resnet.py:r18 --config.workdir=runs/simsiam_resnet \
        --config.data.data_dir=data/lus

No negatives and no target network: the cheapest method per step.
"""

from configs import common


def get_config(arg=None):
    return common.resnet("simsiam", arg)
