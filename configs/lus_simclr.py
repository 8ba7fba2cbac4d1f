"""SimCLR on real lung-ultrasound video: the starting recipe for one GPU.

    lusjax train --config configs/lus_simclr.py --config.workdir=runs/lus_simclr \
        --config.data.data_dir=data/lus128
    lusjax study --config configs/study.py:lus_simclr --config.data_dir=data/lus128

ResNet-18 (arg r18, default) or MobileNetV3-Small (arg mnv3s), one channel,
128 px, bfloat16, batch 256, LARS. Positive pairs are two frames of one clip
at most 0.5 s apart (temporal pairs; consecutive LUS frames share the probe
position, so this is the cheap "same view, slightly moved" positive), with the
ultrasound augmentations (zoom, speckle, acoustic shadows, TGC, wedge) on.

500 steps: chosen by the README's ablation (`lusjax study`, pocus_dev, folds
0-2, one H100), where it had the best 10%-label linear-probe balanced
accuracy (55.6%; 1,500 steps gave 52.4%, BYOL 47.6%, VICReg 50.8%, 224 px
49.2%, same-frame pairs and no ultrasound augmentations tied at 55.6%; every
CI is about +-12 points, so these are not significant differences). Measured
on one H100 with nothing else running: 1,500 steps of this recipe took 42-49 s
per fold including compilation and input start-up (0.0039-0.0041 kWh by NVML).
The online probe is off (probe.eval_every=0): the study evaluates the encoder
itself, per fold.
"""

from configs import common

MODELS = {"r18": "resnet18", "mnv3s": "mobilenetv3_small"}


def get_config(arg=None):
    c = common.base("simclr", common._pick(MODELS, arg, "r18"), image_size=128)
    c.model.num_channels = 1
    c.model.dtype = "bfloat16"
    c.batch_size = 256
    c.total_steps = 500
    c.optim.update(name="lars", warmup_steps=150)  # as measured (30% of the steps)
    c.data.max_dt_s = 0.5  # temporal pairs: partner within 0.5 s of the anchor
    c.data.workers = 8  # grain worker processes (decode off the training process)
    for k in ("zoom_prob", "speckle_prob", "shadow_prob", "tgc_prob", "wedge_prob"):
        assert c.aug.us[k] > 0, k  # the ultrasound augmentations stay on (their defaults)
    c.log_every = 50
    c.ckpt_every = 250
    c.keep_ckpts = 2
    c.probe.eval_every = 0
    return c
