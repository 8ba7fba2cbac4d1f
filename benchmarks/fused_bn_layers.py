"""Fused BatchNorm (`lusjax.models.fused_bn`) against flax's nn.BatchNorm, one layer at a
time: forward + backward ms and the relative L2 error of y and dx, at the BN tails of
ResNet-18/50 at 224 px. Prints one JSON line per (shape, variant).

    python benchmarks/fused_bn_layers.py [--batch 512] [--dtype bfloat16] [--model r18,r50]
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from lusjax.models import fused_bn, layers

# (H, C, relu, residual) of the BN tails of ResNet-18/50 at 224 px.
_R18 = [(112, 64, True, False), (56, 64, True, False), (56, 64, True, True)] + [
    (h, c, True, r) for h, c in ((28, 128), (14, 256), (7, 512)) for r in (False, True)
]
_R50 = [(56, 64, True, False), (56, 256, True, True), (56, 256, False, False)] + [
    (h, c, True, r)
    for h, c in ((28, 128), (28, 512), (14, 256), (14, 1024), (7, 512), (7, 2048))
    for r in (False,) * (c in (128, 256, 512)) + (True,) * (c not in (128, 256, 512))
]


def flax_tail(x, scale, bias, res, relu, eps=layers.BN_EPSILON):
    bn = nn.BatchNorm(use_running_average=False, epsilon=eps, dtype=x.dtype)
    c = x.shape[-1]
    variables = {
        "params": {"scale": scale, "bias": bias},
        "batch_stats": {"mean": jnp.zeros(c), "var": jnp.ones(c)},
    }
    y, _ = bn.apply(variables, x, mutable=["batch_stats"])
    y = y if res is None else y + res
    return nn.relu(y) if relu else y


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="fused BN vs nn.BatchNorm, one layer at a time")
    p.add_argument("--batch", type=int, default=512, help="images per step (2 views x 256)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--model", default="r18,r50")
    p.add_argument("--iters", type=int, default=30)
    args = p.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    cases = {"r18": _R18, "r50": _R50}
    seen = set()
    for model in args.model.split(","):
        for h, c, relu, with_res in cases[model]:
            if (h, c, relu, with_res) in seen:
                continue
            seen.add((h, c, relu, with_res))
            shape = (args.batch, h, h, c)
            k = jax.random.split(jax.random.key(0), 4)
            x = (jax.random.normal(k[0], shape) * 2 + 1).astype(dtype)
            g = jax.random.normal(k[1], shape).astype(dtype)
            res = jax.random.normal(k[2], shape).astype(dtype) if with_res else None
            scale = 1 + 0.1 * jax.random.normal(k[3], (c,))
            bias = jnp.zeros((c,))
            variants = {
                "flax": lambda *a, relu=relu: flax_tail(*a, relu),
                "fused_jnp": lambda *a, relu=relu: fused_bn.fused_bn(*a, relu=relu, impl="jnp")[0],
                "pallas": lambda *a, relu=relu: fused_bn.fused_bn(*a, relu=relu, impl="pallas")[0],
            }
            ref = None
            for name, f in variants.items():
                step = jax.jit(
                    lambda x, s, b, r, g, f=f: (lambda y, vjp: (y, vjp(g)))(*jax.vjp(f, x, s, b, r))
                )
                out = jax.block_until_ready(step(x, scale, bias, res, g))
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    out = step(x, scale, bias, res, g)
                jax.block_until_ready(out)
                ms = (time.perf_counter() - t0) / args.iters * 1e3
                rec = {"shape": list(shape), "relu": relu, "residual": with_res}
                rec.update(variant=name, fwd_bwd_ms=round(ms, 4))
                if ref is None:
                    ref = out
                else:
                    for key, a, b in (("y", out[0], ref[0]), ("dx", out[1][0], ref[1][0])):
                        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
                        # Relative L2: a ReLU mask that differs where the pre-activation
                        # rounds to either side of 0 (bf16) moves a few elements a lot.
                        rec[f"rel_l2_{key}"] = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                print(json.dumps(rec), flush=True)
            del x, g, res, ref, out
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
