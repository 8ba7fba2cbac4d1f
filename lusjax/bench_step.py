"""`lusjax bench step`: throughput of the jitted SSL train step (JSON lines + Markdown).

    lusjax bench step --config configs/simclr_resnet.py:r50 --batch-size 256 \
        --input synthetic --steps 20 [--config.model.dtype=bfloat16 ...]

Measures the real step of `lusjax/train.py` (augmentation, both views through
backbone + head, method loss, online probe, optimizer update) on the devices
of this host: compile time, step time, images/s (one image = one augmented
view through forward and backward), peak device memory, and MFU = model FLOPs
(XLA's cost analysis of the compiled step) / (step time x device bf16 peak).

`--input synthetic`: random uint8 views already on the device (the step alone).
`--input pipeline`: batches from the grain pipeline over the configured
dataset (end to end: host decode + transfer + step).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import jax
import numpy as np

from lusjax import config as config_lib
from lusjax import sharding, train
from lusjax.errors import UserError

# Dense bf16 peak FLOP/s per device, from the vendors' datasheets.
PEAK_BF16 = {
    "H100": 989e12,   # H100 SXM5 (PCIe: 756e12)
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
}


def device_peak(kind: str) -> float | None:
    """bf16 peak of one device of `kind` (jax's device_kind), None when unknown (CPU)."""
    for name, peak in sorted(PEAK_BF16.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return peak
    return None


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _peak_memory() -> float | None:
    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use")]
    return max(peaks) / 2**30 if peaks else None


def bench(cfg, *, steps: int, warmup: int, input_kind: str) -> dict:
    """Times `steps` train steps after `warmup`; returns one JSON-able record."""
    mesh = sharding.make_mesh()
    parts = train.build(cfg, num_classes=4, mesh=mesh)
    state = parts.init_state(jax.random.PRNGKey(cfg.seed))
    b, s, c = cfg.batch_size, cfg.image_size, 1  # stored frames at the input size
    if input_kind == "synthetic":
        rng = np.random.default_rng(0)
        host = {"view1": rng.integers(0, 256, (b, s, s, c), dtype=np.uint8),
                "view2": rng.integers(0, 256, (b, s, s, c), dtype=np.uint8),
                "label": rng.integers(-1, 4, (b,)).astype(np.int32),
                "index": np.arange(b, dtype=np.int32)}
        batch = jax.device_put(host, sharding.batch_sharding(mesh))
        next_batch = lambda: batch  # noqa: E731 - already on the device
    elif input_kind == "pipeline":
        from lusjax.data import pipeline
        from lusjax.data.default import ensure_data

        it = pipeline.train_iterator(ensure_data(cfg.data), cfg.data.train_split, cfg.data,
                                     global_batch_size=b, seed=cfg.seed, aug_cfg=cfg.aug)
        put = sharding.batch_sharding(mesh)
        next_batch = lambda: jax.make_array_from_process_local_data(put, next(it))  # noqa: E731
    else:
        raise UserError(f"--input must be synthetic or pipeline, not {input_kind!r}")

    t0 = time.perf_counter()
    compiled = parts.step.lower(state, next_batch()).compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled)
    for _ in range(warmup):
        state, metrics = compiled(state, next_batch())
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, next_batch())
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps

    kind = jax.devices()[0].device_kind
    peak = device_peak(kind)
    n_dev = mesh.size
    return {
        "method": cfg.method, "model": cfg.model.name, "dtype": cfg.model.dtype,
        "image_size": cfg.image_size, "batch_size": b, "input": input_kind,
        "device": kind, "devices": n_dev, "compile_s": round(compile_s, 2),
        "step_ms": round(step_s * 1e3, 3),
        "images_per_s": round(2 * b / step_s, 1),
        "step_tflops": round(flops / 1e12, 4) if flops else None,
        "mfu": round(flops / (step_s * peak * n_dev), 4) if flops and peak else None,
        "peak_mem_gib": round(_peak_memory(), 2) if _peak_memory() else None,
        "loss": float(jax.device_get(metrics["loss"])),
    }


def markdown(records: list[dict]) -> str:
    """A Markdown table of benchmark records."""
    cols = ("method", "model", "image_size", "batch_size", "input", "device", "images_per_s",
            "step_ms", "compile_s", "mfu", "peak_mem_gib")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(k)) for k in cols) + " |" for r in records]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lusjax bench step`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = config_lib.split_overrides(argv)
    p = argparse.ArgumentParser(prog="lusjax bench step", description=__doc__.split("\n\n")[0],
                                epilog="Any config key can be overridden: --config.KEY=VALUE")
    p.add_argument("--config", default="configs/simclr_resnet.py:r18",
                   help="config file[:arg] (default: configs/simclr_resnet.py:r18)")
    p.add_argument("--batch-size", default="", help="comma-separated global batch sizes")
    p.add_argument("--input", default="synthetic", help="synthetic,pipeline (comma-separated)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = p.parse_args(rest)
    records = []
    batches = [int(x) for x in args.batch_size.split(",") if x] or [None]
    for batch_size in batches:
        for input_kind in [x for x in args.input.split(",") if x]:
            over = list(overrides) + [("workdir", "/tmp/lusjax-bench")]
            if batch_size:
                over.append(("batch_size", str(batch_size)))
            cfg = config_lib.load(args.config, over)
            rec = bench(cfg, steps=args.steps, warmup=args.warmup, input_kind=input_kind)
            print(json.dumps(rec), flush=True)
            records.append(rec)
    if args.markdown:
        print(markdown(records))
    return 0
