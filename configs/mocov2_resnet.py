"""MoCo v2 (momentum encoder + queue; Chen et al. 2020)
on ResNet-18 (arg r18, default) or ResNet-50 (arg r50), 224 px.

    lusjax train --config configs/mocov2_resnet.py:r50 --config.workdir=runs/mocov2_resnet \
        --config.data.data_dir=data/lus

The queues (ssl.queue_size keys per view) should be >= batch and well below the frame count.
"""

from configs import common


def get_config(arg=None):
    return common.resnet("mocov2", arg)
