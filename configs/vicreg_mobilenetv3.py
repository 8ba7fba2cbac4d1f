"""VICReg (variance-invariance-covariance; Bardes et al. 2022)
on MobileNetV3-Small (arg small, default) or -Large (arg large), 224 px.

    lusjax train --config configs/vicreg_mobilenetv3.py:small --config.workdir=runs/vicreg_mnv3 \
        --config.data.data_dir=data/lus

Variance and covariance over the global batch.
"""

from configs import common


def get_config(arg=None):
    return common.mobilenet("vicreg", arg)
