"""`lusjax bench step`: throughput of the jitted SSL train step (JSON lines + Markdown).

    lusjax bench step --config configs/simclr_resnet.py:r50 --batch-size 256 \
        --input synthetic --steps 20 [--config.model.dtype=bfloat16 ...]

Measures the real step of `lusjax/train.py` (augmentation, both views through
backbone + head, method loss, online probe, optimizer update) on the devices
of this host: compile time, step time, images/s (one image = one augmented
view through forward and backward), peak device memory, and MFU = FLOPs per
device (XLA's cost analysis of the lowered step, see `_flops`) / (step time x
bf16 peak per device). `step_tflops` is the whole step's (all devices).

`--input synthetic`: random uint8 views already on the device (the step alone);
with `--config.data.worker_side_aug=True` they are float32 views as the CPU
workers would deliver them, and the step does no augmentation (`device_aug`).
`--input pipeline`: batches from the grain pipeline over the configured
dataset (end to end: host decode + transfer + step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from lusjax import config as config_lib
from lusjax import sharding, train
from lusjax.data import augment
from lusjax.errors import UserError

# Dense bf16 peak FLOP/s per device, from the vendors' datasheets.
PEAK_BF16 = {
    "H100": 989e12,  # H100 SXM5 (PCIe: 756e12)
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
}

# HBM bandwidth per device in bytes/s, from the same datasheets (for rooflines:
# benchmarks/roofline.py).
PEAK_HBM = {
    "H100": 3.35e12,  # H100 SXM5 (PCIe: 2.0e12)
    "H200": 4.8e12,
    "A100": 2.039e12,  # A100 80GB SXM (40GB: 1.555e12)
    "L4": 0.3e12,
    "TPU v4": 1.2e12,
    "TPU v5 lite": 0.819e12,
    "TPU v5": 2.765e12,
    "TPU v6 lite": 1.64e12,
}

# Steps traced by `--profile` (after the timed ones).
PROFILE_STEPS = 5


def device_peak(kind: str, table: dict[str, float] = PEAK_BF16) -> float | None:
    """bf16 peak of one device of `kind` (jax's device_kind), None when unknown (CPU);
    `table=PEAK_HBM`: its memory bandwidth instead."""
    for name, peak in sorted(table.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return peak
    return None


def _flops(lowered) -> float | None:
    """FLOPs of one step per device: XLA's cost analysis of the *lowered* program.

    Not the compiled one: on GPU, convolutions become cuDNN custom calls that the
    compiled cost analysis does not count (it under-reports a ResNet step ~30x),
    and it is per device there but global on CPU. The lowered program is backend
    independent, and its shard_map body has per-device shapes. GPU plugins do not
    implement the lowered analysis (PJRT C API): the same HLO then goes to the CPU
    backend's analysis.
    """
    try:
        cost = lowered.cost_analysis()
    except Exception:
        cost = None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        cost = _cpu_cost_analysis(lowered)
    return float(cost["flops"]) if cost and "flops" in cost else None


def _cpu_cost_analysis(lowered) -> dict | None:
    """XLA's HLO cost analysis of `lowered` on the CPU backend (private jax API: None
    if it moved)."""
    try:
        from jax._src import xla_bridge
        from jax._src.lib import _jax

        module = lowered.compiler_ir("hlo").as_hlo_module()
        return _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module)
    except Exception:
        return None


def _peak_memory() -> float | None:
    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use")]
    return max(peaks) / 2**30 if peaks else None


def _input_fn(cfg, mesh, input_kind: str, workers: int | None):
    """(next_batch, close) for one input kind; batches are global arrays on `mesh`."""
    b, s, c = cfg.batch_size, cfg.image_size, 1  # stored frames at the input size
    put = sharding.batch_sharding(mesh)
    if input_kind == "synthetic":
        rng = np.random.default_rng(0)
        if cfg.data.worker_side_aug:  # what the pipeline then delivers: augmented float32
            so = augment.output_size(cfg.aug, (s, s, c))
            views = [rng.random((b, so, so, c), dtype=np.float32) for _ in range(2)]
        else:  # raw uint8 frames, augmented inside the step
            views = [rng.integers(0, 256, (b, s, s, c), dtype=np.uint8) for _ in range(2)]
        host = {
            "view1": views[0],
            "view2": views[1],
            "label": rng.integers(-1, 4, (b,)).astype(np.int32),
            "index": np.arange(b, dtype=np.int32),
        }
        batch = jax.make_array_from_process_local_data(put, host)
        return (lambda: batch), (lambda: None)  # already on the device
    from lusjax.app.default_data import ensure_data
    from lusjax.data import pipeline  # "pipeline" (bench() checked the names)

    data_cfg = cfg.data
    if workers is not None:
        data_cfg = ml_collections.ConfigDict(cfg.data.to_dict())
        data_cfg.workers = workers
    it = pipeline.train_iterator(
        ensure_data(data_cfg),
        data_cfg.train_split,
        data_cfg,
        global_batch_size=b,
        seed=cfg.seed,
        aug_cfg=cfg.aug,
    )
    return (
        (lambda: jax.make_array_from_process_local_data(put, next(it))),
        getattr(it, "close", lambda: None),
    )


def bench(
    cfg,
    *,
    steps: int,
    warmup: int,
    inputs: Sequence[str],
    workers: Sequence[int | None] = (None,),
    profile_dir: str = "",
    on_compiled=None,
) -> list[dict]:
    """Compiles the step once, then times `steps` steps after `warmup` for each input
    (and, for "pipeline", each grain worker count); returns one record per run.
    `on_compiled(lowered, compiled)`, if given, sees the step before it runs (its HLO:
    benchmarks/roofline.py)."""
    unknown = [x for x in inputs if x not in ("synthetic", "pipeline")]
    if unknown:  # before the minutes of compiling
        raise UserError(f"--input must be synthetic or pipeline, not {unknown[0]!r}")
    mesh = sharding.make_mesh()
    parts = train.build(cfg, num_classes=4, mesh=mesh)
    state = parts.init_state(jax.random.PRNGKey(cfg.seed))
    synthetic = _input_fn(cfg, mesh, "synthetic", None)
    t0 = time.perf_counter()
    lowered = parts.step.lower(state, synthetic[0]())
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    if on_compiled is not None:
        on_compiled(lowered, compiled)
    flops = _flops(lowered)  # per device
    kind = jax.devices()[0].device_kind
    peak = device_peak(kind)
    n_dev = mesh.size
    records = []
    for input_kind in inputs:
        for w in workers if input_kind == "pipeline" else (None,):
            next_batch, close = (
                synthetic if input_kind == "synthetic" else _input_fn(cfg, mesh, input_kind, w)
            )
            try:
                for _ in range(warmup):
                    state, metrics = compiled(state, next_batch())
                jax.block_until_ready(metrics)
                t0 = time.perf_counter()
                for _ in range(steps):
                    state, metrics = compiled(state, next_batch())
                jax.block_until_ready(metrics)
                step_s = (time.perf_counter() - t0) / steps
                if profile_dir and input_kind == "synthetic":
                    # A few more steps under the profiler (after timing: it slows them).
                    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
                        for _ in range(PROFILE_STEPS):
                            state, metrics = compiled(state, next_batch())
                        jax.block_until_ready(metrics)
            finally:
                close()
            mem = _peak_memory()
            records.append(
                {
                    "method": cfg.method,
                    "model": cfg.model.name,
                    "dtype": cfg.model.dtype,
                    "image_size": cfg.image_size,
                    "batch_size": cfg.batch_size,
                    "input": input_kind if w is None else f"{input_kind} ({w} workers)",
                    "device_aug": not cfg.data.worker_side_aug,
                    "optim": cfg.optim.name,
                    "device": kind,
                    "devices": n_dev,
                    "compile_s": round(compile_s, 2),
                    "step_ms": round(step_s * 1e3, 3),
                    "images_per_s": round(2 * cfg.batch_size / step_s, 1),
                    "step_tflops": round(flops * n_dev / 1e12, 4) if flops else None,
                    "mfu": round(flops / (step_s * peak), 4) if flops and peak else None,
                    "peak_mem_gib": round(mem, 2) if mem else None,
                    "loss": float(jax.device_get(metrics["loss"])),
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                }
            )
    return records


def markdown(records: list[dict]) -> str:
    """A Markdown table of benchmark records."""
    cols = (
        "method",
        "model",
        "image_size",
        "batch_size",
        "input",
        "device",
        "images_per_s",
        "step_ms",
        "compile_s",
        "mfu",
        "peak_mem_gib",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(k)) for k in cols) + " |" for r in records]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lusjax bench step`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = config_lib.split_overrides(argv)
    p = argparse.ArgumentParser(
        prog="lusjax bench step",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  lusjax bench step --config "
        "configs/simclr_resnet.py:r50 --batch-size 128,256\n"
        "Any config key can be overridden: --config.KEY=VALUE",
    )
    p.add_argument(
        "--config",
        default="configs/simclr_resnet.py:r18",
        help="config file[:arg] (default: configs/simclr_resnet.py:r18)",
    )
    p.add_argument("--batch-size", default="", help="comma-separated global batch sizes")
    p.add_argument("--input", default="synthetic", help="synthetic,pipeline (comma-separated)")
    p.add_argument(
        "--workers",
        default="",
        help="grain worker counts for --input pipeline, comma-separated "
        "(default: the config's data.workers)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    p.add_argument(
        "--profile",
        default="",
        metavar="DIR",
        help="also trace 5 synthetic-input steps with jax.profiler into DIR "
        "(summary: python benchmarks/profile_top.py DIR)",
    )
    args = p.parse_args(rest)
    records = []
    batches = [int(x) for x in args.batch_size.split(",") if x] or [None]
    workers = [int(x) for x in args.workers.split(",") if x] or [None]
    for batch_size in batches:
        over = list(overrides) + [("workdir", "/tmp/lusjax-bench")]
        if batch_size:
            over.append(("batch_size", str(batch_size)))
        cfg = config_lib.load(args.config, over)
        for rec in bench(
            cfg,
            steps=args.steps,
            warmup=args.warmup,
            inputs=[x for x in args.input.split(",") if x],
            workers=workers,
            profile_dir=args.profile,
        ):
            print(json.dumps(rec), flush=True)
            records.append(rec)
    if args.markdown:
        print(markdown(records))
    return 0
