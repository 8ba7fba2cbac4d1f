"""A/B of layer and augmentation implementations inside the real train step, one process.

    python benchmarks/ab_step.py --variants lusjax,stem=nhwc \
        --config configs/simclr_resnet.py:r18 --batch-size 256 [--config.KEY=VALUE ...]

Each variant swaps some of lusjax's layers (`lusjax.models.layers`) for the plain
formulation they replaced, or a function for a candidate (`blur=*`), then runs
`lusjax bench step` (compile once, time the synthetic-input step) on this host's
devices. Same model, same parameters, same outputs up to float rounding; only the way
XLA is asked to compute them differs. Prints one JSON line per variant ("variant" key
added). "A+B" applies variants A and B together.

  lusjax          the library as it is
  stem=nhwc       ResNet's stem over NHWC tensors (`layers.imagenet_stem_nhwc`: 2x2
                  space-to-depth conv, the backend's max-pool), which the library uses
                  off GPUs; on GPUs it used it until the blocks form
  stem=blocks     ResNet's stem as `layers.imagenet_stem_blocks` on any backend: the
                  4x4 space-to-depth conv's output stays in 2x2 blocks through BN,
                  ReLU and the max-pool (the library's form on GPUs)
  stem=conv       stem=nhwc with a plain stride-2 conv over the one-channel image
                  instead of `layers.StemConvS2` (also MobileNetV3's 3x3 stem)
  stem=s2d4       stem=nhwc with `StemConvS2(block=4)`: a 4x4 space-to-depth conv and
                  a depth-to-space of its output
  maxpool=argmax  stem=nhwc with `layers.argmax_max_pool_3x3_s2` on any backend (off
                  GPUs the library uses nn.max_pool)
  maxpool=reduce_window
                  stem=nhwc with `nn.max_pool` (XLA's reduce-window, select-and-
                  scatter gradient) on any backend
  bn=pallas       training-mode BatchNorm (+ residual add + ReLU, `layers.bn_act`) as
                  the Pallas kernels of `lusjax.models.fused_bn` (backbone BNs only;
                  interpreted, i.e. slow, off GPUs)
  bn=fused_jnp    the same custom_vjp math as jnp, fused by XLA
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys

import jax

from lusjax import config as config_lib
from lusjax.app import bench_step
from lusjax.data import us_augment
from lusjax.models import fused_bn, layers


def _plain_stem(features, kernel_size, dtype, name=None):
    return layers.conv(features, kernel_size, 2, dtype=dtype, name=name)


def _blur_matrix(xp, n: int, sigma, radius: int):
    """[n, n] banded gaussian, rows normalised: `M @ x` = `us_augment.conv_axis(x, taps, 0)` /
    `us_augment.conv_axis(1, taps, 0)` (`gaussian_blur`'s border renormalisation)."""
    k = xp.arange(n, dtype=xp.float32)
    d = k[None, :] - k[:, None]
    w = xp.where(xp.abs(d) <= radius, xp.exp(-d * d / (2.0 * xp.maximum(sigma, 1e-3) ** 2)), 0.0)
    return (w / w.sum(axis=1, keepdims=True)).astype(xp.float32)


def gaussian_blur_matmul(xp, x, sigma_y, sigma_x, radius_y: int, radius_x: int):
    """`us_augment.gaussian_blur` as two matmuls with `_blur_matrix`es (jax only; a
    candidate: XLA fuses the shift-and-add form's two passes into one loop fusion that
    recomputes the first pass for every tap of the second)."""
    h, w = x.shape[0], x.shape[1]
    my, mx = _blur_matrix(xp, h, sigma_y, radius_y), _blur_matrix(xp, w, sigma_x, radius_x)
    if x.ndim == 2:
        return (my @ x @ mx.T).astype(xp.float32)
    y = xp.einsum("sh,hwc->swc", my, x)
    return xp.einsum("tw,swc->stc", mx, y).astype(xp.float32)


def gaussian_blur_barrier(xp, x, sigma_y, sigma_x, radius_y: int, radius_x: int):
    """`us_augment.gaussian_blur` with its first pass written to memory (a candidate: no
    recompute per tap of the second pass)."""
    h, w = x.shape[0], x.shape[1]
    ty, tx = (
        us_augment.gaussian_taps(xp, sigma_y, radius_y),
        us_augment.gaussian_taps(xp, sigma_x, radius_x),
    )
    ny = us_augment.conv_axis(xp, xp.ones((h,), xp.float32), ty, 0)
    nx = us_augment.conv_axis(xp, xp.ones((w,), xp.float32), tx, 0)
    extra = (1,) * (x.ndim - 2)
    y = jax.lax.optimization_barrier(
        us_augment.conv_axis(xp, x, ty, 0) / ny.reshape((h, 1) + extra)
    )
    return (us_augment.conv_axis(xp, y, tx, 1) / nx.reshape((1, w) + extra)).astype(xp.float32)


_NHWC = {"imagenet_stem": layers.imagenet_stem_nhwc}
SWAPS = {
    "lusjax": {},
    "stem=nhwc": _NHWC,
    "stem=blocks": {"imagenet_stem": layers.imagenet_stem_blocks},
    "stem=conv": {**_NHWC, "StemConvS2": _plain_stem},
    "stem=s2d4": {**_NHWC, "StemConvS2": functools.partial(layers.StemConvS2, block=4)},
    "maxpool=argmax": {**_NHWC, "max_pool_3x3_s2": layers.argmax_max_pool_3x3_s2},
    "maxpool=reduce_window": {
        **_NHWC,
        "max_pool_3x3_s2": layers.reduce_window_max_pool_3x3_s2,
    },
    "bn=pallas": {"batch_norm": functools.partial(fused_bn.batch_norm, impl="pallas")},
    "bn=fused_jnp": {"batch_norm": functools.partial(fused_bn.batch_norm, impl="jnp")},
    "blur=matmul": {"us_augment.gaussian_blur": gaussian_blur_matmul},
    "blur=barrier": {"us_augment.gaussian_blur": gaussian_blur_barrier},
}


def swaps_of(variant: str) -> dict:
    """The layer swaps of a variant; "A+B" merges A's and B's."""
    return {k: f for part in variant.split("+") for k, f in SWAPS[part].items()}


@contextlib.contextmanager
def swapped(names: dict):
    """Temporarily replaces attributes of `lusjax.models.layers` (or, for "us_augment.NAME",
    of `lusjax.data.us_augment`), read at trace time."""

    def where(k):
        return (us_augment, k.split(".", 1)[1]) if k.startswith("us_augment.") else (layers, k)

    old = {k: getattr(*where(k)) for k in names}
    try:
        for k, v in names.items():
            setattr(*where(k), v)
        yield
    finally:
        for k, v in old.items():
            setattr(*where(k), v)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = config_lib.split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/simclr_resnet.py:r18")
    p.add_argument(
        "--variants", default="lusjax,stem=nhwc", help=f"comma-separated, from: {', '.join(SWAPS)}"
    )
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--profile",
        default="",
        metavar="DIR",
        help="also trace each variant into DIR/VARIANT (benchmarks/profile_top.py)",
    )
    args = p.parse_args(rest)
    variants = args.variants.split(",")
    unknown = [p for v in variants for p in v.split("+") if p not in SWAPS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(SWAPS)}")
    over = list(overrides) + [("workdir", "/tmp/lusjax-bench")]
    if args.batch_size:
        over.append(("batch_size", str(args.batch_size)))
    cfg = config_lib.load(args.config, over)
    for v in variants:
        with swapped(swaps_of(v)):
            for rec in bench_step.bench(
                cfg,
                steps=args.steps,
                warmup=args.warmup,
                inputs=["synthetic"],
                profile_dir=f"{args.profile}/{v}" if args.profile else "",
            ):
                print(json.dumps({"variant": v, **rec}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
