"""SimCLR on MobileNetV3-Small (arg small, default) or -Large (arg large), 224 px.

    lusjax train --config configs/simclr_mobilenetv3.py:small --config.workdir=runs/simclr_mnv3 \
        --config.data.data_dir=data/lus

Batch 512: a light backbone needs a larger batch to fill a GPU.
"""

from configs import common


def get_config(arg=None):
    return common.mobilenet("simclr", arg)
