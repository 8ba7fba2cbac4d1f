"""Shared building blocks of the configs: every default of every section is here.

A config file picks a method and a backbone and changes what differs:

    from configs import common
    def get_config(arg=None):
        c = common.base("simclr", "resnet18")
        c.batch_size = 512
        return c

Sections: model, ssl (the method's hyper-parameters), data (input pipeline,
`lusjax.data.pipeline`), aug (on-device augmentation, `lusjax.data.augment`,
with aug.us the ultrasound-specific ones), optim (`lusjax.optim`), probe
(online linear probe), carbon (`lusjax.carbon`), and the loop's durations.
"""

import ml_collections

# Each method's hyper-parameters (the `ssl` section); see lusjax/ssl/<name>.py.
SSL = {
    "simclr": dict(proj_hidden_dim=2048, proj_dim=128, proj_layers=2, temperature=0.1),
    "mocov2": dict(proj_hidden_dim=2048, proj_dim=128, proj_layers=2, temperature=0.2,
                   queue_size=65536, base_momentum=0.99, final_momentum=1.0),
    "byol": dict(proj_hidden_dim=4096, proj_dim=256, proj_layers=2, pred_hidden_dim=4096,
                 base_momentum=0.99, final_momentum=1.0),
    "simsiam": dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3, pred_hidden_dim=512),
    "barlow": dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3, lamb=0.0051,
                   scale_loss=1.0),
    "vicreg": dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3, sim_weight=25.0,
                   var_weight=25.0, cov_weight=1.0),
    "swav": dict(proj_hidden_dim=2048, proj_dim=128, proj_layers=2, num_prototypes=3000,
                 temperature=0.1, sinkhorn_iters=3, epsilon=0.05, queue_size=0,
                 freeze_prototypes_steps=313),
}

# Optimiser per method, as in the papers / solo-learn (lr is per 256 images).
OPTIM = {
    "simclr": dict(name="lars", lr=0.3, weight_decay=1e-6, momentum=0.9),
    "mocov2": dict(name="sgd", lr=0.03, weight_decay=1e-4, momentum=0.9),
    "byol": dict(name="lars", lr=0.2, weight_decay=1.5e-6, momentum=0.9),
    "simsiam": dict(name="sgd", lr=0.05, weight_decay=1e-4, momentum=0.9),
    "barlow": dict(name="lars", lr=0.2, weight_decay=1.5e-6, momentum=0.9),
    "vicreg": dict(name="lars", lr=0.3, weight_decay=1e-4, momentum=0.9),
    "swav": dict(name="lars", lr=0.6, weight_decay=1e-6, momentum=0.9),
}


def us_aug() -> dict:
    """Ultrasound-specific augmentations (lusjax/data/us_augment.py)."""
    return dict(
        estimate_apex=True,       # find apex and fan edges per frame
        apex_y=0.0,               # fallback apex row (fraction of H; <0 above: linear-like)
        zoom_prob=0.3, zoom=(0.8, 1.25),          # depth rescale along the beam
        speckle_prob=0.2, speckle_strength=0.6,   # speckle re-synthesis
        speckle_psf=(1.0, 2.0), speckle_envelope=2.0,
        shadow_prob=0.2, shadow_width=(0.05, 0.15),             # rib shadow
        shadow_depth=(0.0, 0.25), shadow_strength=(0.6, 0.95),
        tgc_prob=0.3, tgc_db=4.0, tgc_points=5,   # time-gain-compensation curve
        wedge_prob=0.2, wedge_max=0.3,            # narrower fan wedge
    )


def aug(size: int) -> dict:
    """On-device augmentation (lusjax/data/augment.py); output size = model input."""
    return dict(
        size=size,
        crop_prob=1.0, crop_scale=(0.35, 1.0), crop_ratio=(3 / 4, 4 / 3),
        flip_prob=0.5,
        brightness_prob=0.8, brightness=0.25,
        contrast_prob=0.8, contrast=0.35,
        gamma_prob=0.3, gamma=(0.7, 1.4),
        blur_prob=0.5, blur_sigma=(0.1, 2.0),
        noise_prob=0.2, noise_std=0.04,
        us=us_aug(),
    )


def data() -> dict:
    """Input pipeline (lusjax/data/pipeline.py). data_dir "" = synthetic default."""
    return dict(
        data_dir="",
        train_split="train",
        val_split="val",
        # The embedded default: data_prep.write.write_synthetic(**synthetic), cached.
        synthetic=dict(n_clips=96, n_frames=32, size=64, seed=0),
        max_dt=4,               # positive pair = frames at most max_dt apart (0: same frame)
        max_dt_s=0.0,           # > 0: at most max_dt_s seconds apart instead (per-clip fps)
        min_dt=0,
        micle_prob=0.0,         # partner from another clip of the same patient
        clip_weighting="uniform",
        samples_per_clip=0,
        skip_short_clips=False,
        shuffle=True,
        workers=0,              # grain worker processes (0: in-process)
        read_threads=2,
        prefetch=2,
        worker_side_aug=False,  # augment on CPU workers instead of on device
    )


def base(method: str, model: str, *, image_size: int = 224) -> ml_collections.ConfigDict:
    """The full config for `method` on backbone `model`, with every default spelled out."""
    c = ml_collections.ConfigDict()
    c.workdir = ""               # required: where checkpoints, metrics and config go
    c.seed = 0
    c.method = method
    c.model = dict(name=model, num_channels=1, dtype="bfloat16", width=1.0, sync_bn=True)
    c.ssl = dict(SSL[method])
    c.image_size = image_size    # network input side (augmentation output)
    c.data = data()
    c.aug = aug(image_size)

    c.batch_size = 256           # global, over all devices and hosts
    c.total_steps = 20_000       # data batches
    c.optim = dict(OPTIM[method], lr_base_batch=256, lr_scaling="linear",
                   warmup_steps=1_000, end_lr_factor=0.0, grad_accum=1, probe_lr=1e-3)

    c.log_every = 50
    c.log_batch_hash = False     # metrics: a hash of each logged step's sample ids + aug key
                                 # (checks that a resumed run sees the same batches)
    c.ckpt_every = 1_000
    c.keep_ckpts = 3
    c.async_ckpt = True
    # Multi-host liveness (lusjax/watchdog.py): a process that makes no progress for this
    # many seconds (a stuck data loader, a dead peer) ends the job with an error naming
    # the stuck process. Must exceed the slowest step, compilation and checkpoint
    # save included. 0 = off; single-process runs never use it.
    c.watchdog_s = 600
    c.probe = dict(eval_every=1_000, eval_frames=2048)   # online probe on data.val_split
    c.carbon = dict(country="WORLD", measure=True)
    return c


RESNETS = {"r18": "resnet18", "r50": "resnet50"}
MOBILENETS = {"small": "mobilenetv3_small", "large": "mobilenetv3_large"}


def _pick(table: dict, arg, default: str) -> str:
    arg = arg or default
    if arg not in table:
        from lusjax.errors import UserError

        raise UserError(f"config argument {arg!r} is not one of {', '.join(table)}")
    return table[arg]


def resnet(method: str, arg=None) -> ml_collections.ConfigDict:
    """`method` on ResNet-18 (arg "r18", default) or ResNet-50 ("r50") at 224 px."""
    return base(method, _pick(RESNETS, arg, "r18"))


def mobilenet(method: str, arg=None) -> ml_collections.ConfigDict:
    """`method` on MobileNetV3-Small (arg "small", default) or -Large ("large") at 224 px."""
    c = base(method, _pick(MOBILENETS, arg, "small"))
    c.batch_size = 512           # light backbone: a larger batch keeps the GPU busy
    return c
