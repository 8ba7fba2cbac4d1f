"""Quickstart: SimCLR on a tiny ResNet over synthetic LUS clips, on CPU.

    lusjax train --config configs/quickstart.py --config.workdir=runs/qs
    lusjax quickstart            # this, then the probe table (SSL vs random init)

Expected: a few minutes on 2 CPU cores; the online probe accuracy rises well
above chance, and the pretrained encoder's linear probe beats a random-init one.
"""

from configs import common


def get_config(arg=None):
    c = common.base("simclr", "resnet_tiny", image_size=64)
    c.workdir = "runs/quickstart"
    c.model.dtype = "float32"  # CPU: bf16 is emulated and slower
    # The ultrasound augmentations cost ~5x the generic ones on a CPU (they are ~2 ms
    # of a GPU step); the quickstart's 2-core budget leaves them out.
    for k in ("zoom_prob", "speckle_prob", "shadow_prob", "tgc_prob", "wedge_prob"):
        c.aug.us[k] = 0.0
    c.ssl.update(proj_hidden_dim=256, proj_dim=64, temperature=0.2)
    c.batch_size = 128
    c.total_steps = 300
    c.optim.update(lr=1.0, warmup_steps=30)
    c.log_every = 10
    c.ckpt_every = 100
    c.keep_ckpts = 2
    c.probe.update(eval_every=100, eval_frames=512)
    return c
