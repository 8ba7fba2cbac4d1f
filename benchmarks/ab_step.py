"""A/B of backbone layer implementations inside the real train step, one process.

    python benchmarks/ab_step.py --variants lusjax,stem=conv \
        --config configs/simclr_resnet.py:r18 --batch-size 256 [--config.KEY=VALUE ...]

Each variant swaps some of lusjax's layers (`lusjax.models.layers`) for the plain
formulation they replaced, then runs `lusjax bench step` (compile once, time the
synthetic-input step) on this host's devices. Same model, same parameters, same
outputs up to float rounding; only the way XLA is asked to compute them differs.
Prints one JSON line per variant ("variant" key added).

  lusjax          the library as it is
  stem=conv       stem as a plain 7x7/2 conv over the one-channel image
  maxpool=argmax  stem max-pool with a custom gradient: the forward keeps the int8
                  window position of each maximum, the backward places the incoming
                  gradient with nine interior-padded pads (elementwise, fusible)
                  instead of XLA's select-and-scatter (8.2% of the ResNet-18 step on
                  an H200). Not yet timed on a GPU; on the 2-core CPU its forward +
                  backward alone is 2.8x slower (1,284 vs 451 ms, bf16 32x112x112x64),
                  but the CPU ranked the slice max-pool the wrong way round too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import jax
import jax.numpy as jnp

from lusjax import bench_step
from lusjax import config as config_lib
from lusjax.models import layers


def _plain_stem(features, dtype, name=None):
    return layers.conv(features, 7, 2, dtype=dtype, name=name)


def _windows(x):
    """The nine [B, Ho, Wo, C] strided slices of the 3x3/2 windows (padding 1, -inf)."""
    h, w = x.shape[1:3]
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return [xp[:, di:di + 2 * ho - 1:2, dj:dj + 2 * wo - 1:2, :]
            for di in range(3) for dj in range(3)]


@jax.custom_vjp
def argmax_max_pool(x):
    """3x3/2 max-pool (padding 1), values as nn.max_pool; gradient to the first maximum
    of each window in row-major order, as XLA's select-and-scatter."""
    return _argmax_fwd(x)[0]


def _argmax_fwd(x):
    win = _windows(x)
    out = win[0]
    for s in win[1:]:
        out = jnp.maximum(out, s)
    idx = jnp.full(out.shape, 8, jnp.int8)
    for k in range(7, -1, -1):  # the first k whose value is the maximum wins
        idx = jnp.where(win[k] == out, jnp.int8(k), idx)
    return out, (idx, x.shape)


def _argmax_bwd(res, g):
    idx, (b, h, w, c) = res
    ho, wo = g.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    grad = None
    for k in range(9):
        di, dj = divmod(k, 3)
        part = jax.lax.pad(jnp.where(idx == k, g, zero), zero,
                           ((0, 0, 0), (di, h + 2 - di - (2 * ho - 1), 1),
                            (dj, w + 2 - dj - (2 * wo - 1), 1), (0, 0, 0)))
        grad = part if grad is None else grad + part
    return (grad[:, 1:h + 1, 1:w + 1, :],)


argmax_max_pool.defvjp(_argmax_fwd, _argmax_bwd)

SWAPS = {"lusjax": {}, "stem=conv": {"StemConv7x7S2": _plain_stem},
         "maxpool=argmax": {"max_pool_3x3_s2": argmax_max_pool}}


@contextlib.contextmanager
def swapped(names: dict):
    """Temporarily replaces attributes of `lusjax.models.layers` (read at trace time)."""
    old = {k: getattr(layers, k) for k in names}
    try:
        for k, v in names.items():
            setattr(layers, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(layers, k, v)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = config_lib.split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/simclr_resnet.py:r18")
    p.add_argument("--variants", default="lusjax,stem=conv",
                   help=f"comma-separated, from: {', '.join(SWAPS)}")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile", default="", metavar="DIR",
                   help="also trace each variant into DIR/VARIANT (benchmarks/profile_top.py)")
    args = p.parse_args(rest)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in SWAPS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(SWAPS)}")
    over = list(overrides) + [("workdir", "/tmp/lusjax-bench")]
    if args.batch_size:
        over.append(("batch_size", str(args.batch_size)))
    cfg = config_lib.load(args.config, over)
    for v in variants:
        with swapped(SWAPS[v]):
            for rec in bench_step.bench(cfg, steps=args.steps, warmup=args.warmup,
                                        inputs=["synthetic"],
                                        profile_dir=f"{args.profile}/{v}" if args.profile else ""):
                print(json.dumps({"variant": v, **rec}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
