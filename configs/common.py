"""Shared building blocks of the configs: the defaults of every section.

A config file picks a method and a backbone and changes what differs:

    from configs import common
    def get_config(arg=None):
        c = common.base("simclr", "resnet18")
        c.batch_size = 512
        return c

Sections: model, ssl (the method's hyper-parameters), data (input pipeline,
`lusjax.data.pipeline`), aug (on-device augmentation, `lusjax.data.augment`,
with aug.us the ultrasound-specific ones), optim (`lusjax.optim`), probe
(online linear probe), carbon (`lusjax.carbon`), metrics (TensorBoard events beside
metrics.jsonl, `lusjax.tb_events`), and the loop's durations.
The data and aug defaults are the modules' own `default_config()` (one place,
documented there); the rest are spelled out here.
"""

import ml_collections

from lusjax import tb_events
from lusjax.data import augment, pipeline

# Each method's hyper-parameters (the `ssl` section); see lusjax/ssl/<name>.py.
SSL = {
    "simclr": dict(proj_hidden_dim=2048, proj_dim=128, proj_layers=2, temperature=0.1),
    "mocov2": dict(
        proj_hidden_dim=2048,
        proj_dim=128,
        proj_layers=2,
        temperature=0.2,
        queue_size=65536,
        base_momentum=0.99,
        final_momentum=1.0,
    ),
    "byol": dict(
        proj_hidden_dim=4096,
        proj_dim=256,
        proj_layers=2,
        pred_hidden_dim=4096,
        base_momentum=0.99,
        final_momentum=1.0,
    ),
    "simsiam": dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3, pred_hidden_dim=512),
    "barlow": dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3, lamb=0.0051, scale_loss=1.0),
    "vicreg": dict(
        proj_hidden_dim=2048,
        proj_dim=2048,
        proj_layers=3,
        sim_weight=25.0,
        var_weight=25.0,
        cov_weight=1.0,
    ),
    "swav": dict(
        proj_hidden_dim=2048,
        proj_dim=128,
        proj_layers=2,
        num_prototypes=3000,
        temperature=0.1,
        sinkhorn_iters=3,
        epsilon=0.05,
        queue_size=0,
        freeze_prototypes_steps=313,
    ),
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


def data() -> dict:
    """Input pipeline (`lusjax.data.pipeline.default_config`, each key documented
    there), with a larger embedded synthetic dataset than that test-sized default:
    data_dir "" = the synthetic data, written once and cached."""
    d = pipeline.default_config().to_dict()
    d["synthetic"].update(n_clips=96, n_frames=32)
    return d


def aug(size: int) -> dict:
    """On-device augmentation (`lusjax.data.augment.default_config`, with aug.us the
    ultrasound-specific ones of `lusjax.data.us_augment`); output side = model input."""
    d = augment.default_config().to_dict()
    d["size"] = size
    return d


def base(method: str, model: str, *, image_size: int = 224) -> ml_collections.ConfigDict:
    """The full config for `method` on backbone `model`, with every default spelled out."""
    c = ml_collections.ConfigDict()
    c.workdir = ""  # required: where checkpoints, metrics and config go
    c.seed = 0
    c.method = method
    c.model = dict(name=model, num_channels=1, dtype="bfloat16", width=1.0, sync_bn=True)
    c.ssl = dict(SSL[method])
    c.image_size = image_size  # network input side (augmentation output)
    c.data = data()
    c.aug = aug(image_size)

    c.batch_size = 256  # global, over all devices and hosts
    c.total_steps = 20_000  # data batches
    c.optim = dict(
        OPTIM[method],
        lr_base_batch=256,
        lr_scaling="linear",
        warmup_steps=1_000,
        end_lr_factor=0.0,
        grad_accum=1,
        probe_lr=1e-3,
    )

    c.log_every = 50
    c.log_batch_hash = False  # metrics: a hash of each logged step's sample ids + aug key
    # (checks that a resumed run sees the same batches)
    # metrics.jsonl always; tensorboard: the same scalars (+ augmentation previews at the
    # first log step) as TensorBoard events in WORKDIR/tensorboard (lusjax/tb_events.py).
    # Default on when its writer (tensorboardX, the `tb` extra) is installed.
    c.metrics = dict(tensorboard=tb_events.available())
    c.ckpt_every = 1_000
    c.keep_ckpts = 3
    c.async_ckpt = True
    # Multi-host liveness (lusjax/watchdog.py): a process that makes no progress for this
    # many seconds (a stuck data loader, a dead peer) ends the job with an error naming
    # the stuck process. Must exceed the slowest step, compilation and checkpoint
    # save included. 0 = off; single-process runs never use it.
    c.watchdog_s = 600
    c.probe = dict(eval_every=1_000, eval_frames=2048)  # online probe on data.val_split
    c.carbon = dict(country="WORLD", measure=True)
    # Resuming a workdir with settings that change the training (model, method, batch,
    # optim, data, aug...) is an error unless this is True (lusjax/resume.py).
    c.allow_config_change = False
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
    c.batch_size = 512  # light backbone: a larger batch keeps the GPU busy
    return c
