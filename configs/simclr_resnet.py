"""SimCLR (NT-Xent over the global batch; Chen et al. 2020)
on ResNet-18 (arg r18, default) or ResNet-50 (arg r50), 224 px.

    lusjax train --config configs/simclr_resnet.py:r50 --config.workdir=runs/simclr_resnet \
        --config.data.data_dir=data/lus

Cost: ResNet-50 at batch 256 needs one GPU; see the README's performance section.
"""

from configs import common


def get_config(arg=None):
    return common.resnet("simclr", arg)
