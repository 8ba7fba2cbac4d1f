"""Is the N-device train step the 1-device step? Loss and gradients on one global batch.

    python benchmarks/multi_device_check.py --methods simclr,mocov2,byol,swav \
        --dtypes float32,bfloat16 [--model resnet18 --image-size 96 --batch-size 64]

For each method and compute dtype, builds the real step of `lusjax/train.py`
twice, on a mesh of the first device and on a mesh of all local devices, from
the same initial state and the same global batch, with plain SGD at lr 1 (no
momentum, no weight decay, no warmup) so that the parameter update of one step
is minus the gradient. Prints one JSON line per case: the losses, the relative
L2 difference of the gradients, the largest element difference relative to the
largest gradient element, and of the BN running statistics. On GPUs this checks
global negatives (all-gather), synced BN (psum over NCCL) and the gradient
all-reduce; tests/ checks the same on forced CPU devices to 1e-5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from lusjax import config as config_lib
from lusjax import sharding, train

ROOT = Path(__file__).resolve().parent.parent
SGD_LR1 = [
    ("optim.name", "sgd"),
    ("optim.lr", "1.0"),
    ("optim.lr_scaling", "none"),
    ("optim.momentum", "0.0"),
    ("optim.weight_decay", "0.0"),
    ("optim.warmup_steps", "0"),
]


def one_step(cfg, mesh, batch):
    """(initial params, state after one step, metrics) of the real step on `mesh`."""
    parts = train.build(cfg, num_classes=4, mesh=mesh)
    state = parts.init_state(jax.random.PRNGKey(cfg.seed))
    before = jax.device_get(state["params"])
    put = jax.device_put(batch, sharding.batch_sharding(mesh))
    state, metrics = parts.step(state, put)
    return before, jax.device_get(state), jax.device_get(metrics)


def _rel(a: list, b: list) -> tuple[float, float]:
    num = np.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b)))
    den = np.sqrt(sum(float(np.sum(x**2)) for x in a)) or 1.0
    peak = max(float(np.max(np.abs(x))) for x in a) or 1.0
    worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    return num / den, worst / peak


def check(method: str, dtype: str, args) -> dict:
    over = [
        ("workdir", "/tmp/lusjax-mdc"),
        ("model.name", args.model),
        ("model.dtype", dtype),
        ("image_size", str(args.image_size)),
        ("aug.size", str(args.image_size)),
        ("batch_size", str(args.batch_size)),
        ("total_steps", "100"),
        *SGD_LR1,
    ]
    if method in ("mocov2", "swav"):
        over.append(("ssl.queue_size", str(4 * args.batch_size)))
    cfg = config_lib.load(str(ROOT / f"configs/{method}_resnet.py"), over)
    rng = np.random.default_rng(0)
    b, s = args.batch_size, args.image_size
    batch = {
        "view1": rng.integers(0, 256, (b, s, s, 1), dtype=np.uint8),
        "view2": rng.integers(0, 256, (b, s, s, 1), dtype=np.uint8),
        "label": rng.integers(-1, 4, (b,)).astype(np.int32),
        "index": np.arange(b, dtype=np.int32),
    }
    devices = jax.local_devices()
    p0, s1, m1 = one_step(cfg, sharding.make_mesh(devices[:1]), batch)
    _, sn, mn = one_step(cfg, sharding.make_mesh(devices), batch)
    # Backbone and head only: the online probe has its own Adam (not lr-1 SGD).
    enc = lambda params: jax.tree.leaves({k: params[k] for k in ("backbone", "head")})
    leaves0 = enc(p0)
    g1 = [x - y for x, y in zip(leaves0, enc(s1["params"]))]
    gn = [x - y for x, y in zip(leaves0, enc(sn["params"]))]
    grad_l2, grad_max = _rel(g1, gn)
    bn_l2, bn_max = _rel(jax.tree.leaves(s1["batch_stats"]), jax.tree.leaves(sn["batch_stats"]))
    return {
        "method": method,
        "dtype": dtype,
        "model": args.model,
        "image_size": s,
        "global_batch": b,
        "devices": [1, len(devices)],
        "device": devices[0].device_kind,
        "loss": [float(m1["loss"]), float(mn["loss"])],
        "loss_rel_diff": abs(float(m1["loss"]) - float(mn["loss"])) / abs(float(m1["loss"])),
        "grad_rel_l2": grad_l2,
        "grad_max_rel": grad_max,
        "bn_stats_rel_l2": bn_l2,
        "bn_stats_max_rel": bn_max,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="simclr,mocov2,byol,swav")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    if len(jax.local_devices()) < 2:
        raise SystemExit(
            "needs at least 2 local devices (on CPU: XLA_FLAGS="
            "--xla_force_host_platform_device_count=8)"
        )
    for method in args.methods.split(","):
        for dtype in args.dtypes.split(","):
            print(json.dumps(check(method, dtype, args)), flush=True)


if __name__ == "__main__":
    main()
