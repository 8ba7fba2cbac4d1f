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
The data and aug defaults are the modules' own `default_config()`, and the method's
ssl section and optimiser its module's `default_config()` and `default_optim()`
(`lusjax/ssl/<method>.py`; one place, documented there); the rest are spelled out here.
"""

import ml_collections

from lusjax import ssl, tb_events
from lusjax.data import augment, pipeline


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
    m = ssl.get(method)
    c = ml_collections.ConfigDict()
    c.workdir = ""  # required: where checkpoints, metrics and config go
    c.seed = 0
    c.method = method
    c.model = dict(name=model, num_channels=1, dtype="bfloat16", width=1.0, sync_bn=True)
    c.ssl = m.default_config()
    c.image_size = image_size  # network input side (augmentation output)
    c.data = data()
    c.aug = aug(image_size)

    c.batch_size = 256  # global, over all devices and hosts
    c.total_steps = 20_000  # data batches
    c.optim = dict(
        m.default_optim(),
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
