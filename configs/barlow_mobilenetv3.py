"""Barlow Twins (cross-correlation to identity; Zbontar et al. 2021)
on MobileNetV3-Small (arg small, default) or -Large (arg large), 224 px.

    lusjax train --config configs/barlow_mobilenetv3.py:small --config.workdir=runs/barlow_mnv3 \
        --config.data.data_dir=data/lus

Correlation over the global batch (psum across devices).
"""

from configs import common


def get_config(arg=None):
    return common.mobilenet("barlow", arg)
