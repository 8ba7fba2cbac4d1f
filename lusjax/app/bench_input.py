"""`lusjax bench input`: throughput of the input pipeline and of the on-device augmentation.

    lusjax bench input --size 64,224 --batch-size 256 --workers 0,2 --target-step-rate 5

For every (size, workers) it builds (or reuses, cached) a synthetic dataset of
that frame size, unless --data-dir (or --config without --size: the config's
data) says which dataset, runs `pipeline.train_iterator` for --batches batches after
--warmup, and prints one JSON line:
  batches_per_s, frames_per_s (2 views per example), cpu_s (CPU seconds of this
  process and its workers during the timed batches, when psutil is present),
  frames_per_cpu_s (= frames/s per busy core), frames_per_s_per_core (frames/s
  divided by the cores the pipeline may use: max(1, workers), at most the
  machine's), can_feed (batches_per_s >= --target-step-rate).
Then, per size, one line for the jitted on-device augmentation of both views
(`augment.augment_batch`, default `aug` config, output = input size):
  aug_ms_per_batch, aug_batches_per_s, device.
--config takes a training config (`configs/x.py[:arg]`, plus --config.k=v
overrides) for the data/aug/batch settings instead of the defaults.

Measured (batch 256, default configs): on the 2-core dev CPU about 15k frames per CPU-second at
64x64 and 2.7-3.5k at 224x224 (zlib decoding is ~65% of it); on an H100 the
device augmentation of both views takes 2.7 ms at 224x224.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np


def _ints(text: str) -> list[int]:
    return [int(t) for t in str(text).split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lusjax bench input", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="training config for data/aug/batch_size")
    p.add_argument("--data-dir", default=None, help="dataset (default: a cached synthetic one)")
    p.add_argument("--split", default="train")
    p.add_argument(
        "--size",
        default=None,
        help="synthetic frame size(s), comma separated (default 64, or the "
        "config's dataset with --config)",
    )
    p.add_argument("--n-clips", type=int, default=32, help="synthetic clips")
    p.add_argument("--n-frames", type=int, default=32, help="synthetic frames per clip")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="global batch size (default: the config's, else 256)",
    )
    p.add_argument("--workers", default="0", help="worker process counts, comma separated")
    p.add_argument("--read-threads", type=int, default=None)
    p.add_argument("--batches", type=int, default=20, help="timed batches")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    p.add_argument(
        "--target-step-rate",
        type=float,
        default=0.0,
        help="training steps/s the input must sustain (for can_feed)",
    )
    p.add_argument("--aug-batches", type=int, default=5, help="timed device-aug batches (0: skip)")
    p.add_argument("--worker-side-aug", action="store_true", help="augment in the workers")
    return p


class _CpuClock:
    """CPU seconds of this process and its children (grain workers), if psutil exists."""

    def __init__(self):
        try:
            import psutil

            self._proc, self._gone = psutil.Process(), psutil.Error
        except ImportError:
            self._proc, self._gone = None, ()

    def __call__(self) -> float | None:
        if self._proc is None:
            return None
        total = 0.0
        for p in [self._proc] + self._proc.children(recursive=True):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except self._gone:  # a worker that just exited
                continue
        return total


def bench_pipeline(
    data_dir: str,
    split: str,
    data_cfg,
    aug_cfg,
    *,
    batch_size: int,
    batches: int,
    warmup: int,
    target_step_rate: float = 0.0,
) -> dict:
    """Times `batches` training batches of the pipeline after `warmup`; returns the JSON record."""
    from lusjax.data import pipeline

    clock = _CpuClock()
    t_start = time.perf_counter()
    it = pipeline.train_iterator(
        data_dir,
        split,
        data_cfg,
        global_batch_size=batch_size,
        seed=0,
        process_index=0,
        process_count=1,
        aug_cfg=aug_cfg,
    )
    try:
        for _ in range(warmup):
            batch = next(it)
        startup_s = time.perf_counter() - t_start
        cpu0, t0 = clock(), time.perf_counter()
        for _ in range(batches):
            batch = next(it)
        dt = time.perf_counter() - t0
        cpu1 = clock()
    finally:
        if hasattr(it, "close"):
            it.close()
    workers = int(data_cfg.workers)
    cores = min(os.cpu_count() or 1, max(1, workers))
    frames = 2 * batch_size * batches
    rec = {
        "bench": "input",
        "image_shape": list(batch["view1"].shape[1:]),
        "view_dtype": str(batch["view1"].dtype),
        "batch_size": batch_size,
        "workers": workers,
        "read_threads": int(data_cfg.read_threads),
        "worker_side_aug": bool(data_cfg.worker_side_aug),
        "batches": batches,
        "startup_s": round(startup_s, 2),
        "batches_per_s": round(batches / dt, 3),
        "frames_per_s": round(frames / dt, 1),
        "frames_per_s_per_core": round(frames / dt / cores, 1),
        "cores": cores,
        "cpu_count": os.cpu_count(),
    }
    if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
        rec["cpu_s"] = round(cpu1 - cpu0, 2)
        rec["frames_per_cpu_s"] = round(frames / (cpu1 - cpu0), 1)
    if target_step_rate > 0:
        rec["target_step_rate"] = target_step_rate
        rec["can_feed"] = rec["batches_per_s"] >= target_step_rate
    return rec


def bench_device_aug(image_shape: Sequence[int], aug_cfg, *, batch_size: int, batches: int) -> dict:
    """Times the jitted augmentation of two views of a uint8 batch on the default device."""
    import jax
    import jax.numpy as jnp

    from lusjax.data import augment

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch_size, *image_shape), dtype=np.uint8))
    ids = jnp.arange(batch_size)

    @jax.jit
    def both_views(key, x1, x2):
        k1, k2 = jax.random.split(key)
        return (
            augment.augment_batch(k1, x1, ids, aug_cfg),
            augment.augment_batch(k2, x2, ids, aug_cfg),
        )

    t = time.perf_counter()
    jax.block_until_ready(both_views(jax.random.key(0), images, images))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(batches):
        out = both_views(jax.random.key(i + 1), images, images)
    jax.block_until_ready(out)
    dt = (time.perf_counter() - t) / batches
    return {
        "bench": "device_aug",
        "image_shape": list(image_shape),
        "out_shape": list(out[0].shape[1:]),
        "batch_size": batch_size,
        "views": 2,
        "compile_s": round(compile_s, 2),
        "aug_ms_per_batch": round(1000 * dt, 2),
        "aug_batches_per_s": round(1 / dt, 2),
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
    }


def _configs(args):
    """(data config, aug config, global batch size): from --config or the defaults."""
    import ml_collections

    from lusjax.data import augment, pipeline

    data_cfg, aug_cfg, batch_size = pipeline.default_config(), augment.default_config(), 256
    if args.config:
        from lusjax import config as config_lib

        overrides, _ = config_lib.split_overrides(args.overrides)
        cfg = config_lib.load(args.config, overrides)
        data_cfg = ml_collections.ConfigDict(cfg.data.to_dict())
        aug_cfg = ml_collections.ConfigDict(cfg.aug.to_dict())
        batch_size = int(cfg.batch_size)
    if args.batch_size is not None:
        batch_size = args.batch_size
    return data_cfg, aug_cfg, batch_size


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lusjax bench input`; prints JSON lines."""
    args, rest = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    args.overrides = rest
    data_cfg, aug_cfg, batch_size = _configs(args)
    data_cfg.worker_side_aug = bool(args.worker_side_aug or data_cfg.worker_side_aug)
    if args.read_threads is not None:
        data_cfg.read_threads = args.read_threads

    from lusjax.app.default_data import ensure_data

    if args.data_dir:
        datasets = [(None, args.data_dir)]
    elif args.config and args.size is None:
        datasets = [(None, ensure_data(data_cfg))]
    else:
        datasets = []
        for size in _ints(args.size or "64"):
            syn = {"n_clips": args.n_clips, "n_frames": args.n_frames, "size": size, "seed": 0}
            t = time.perf_counter()
            path = ensure_data(_Syn(syn))
            print(
                json.dumps(
                    {
                        "bench": "dataset",
                        "size": size,
                        "path": path,
                        "seconds": round(time.perf_counter() - t, 1),
                    }
                ),
                flush=True,
            )
            datasets.append((size, path))

    shapes = []
    for _, path in datasets:
        for workers in _ints(args.workers):
            data_cfg.workers = workers
            rec = bench_pipeline(
                path,
                args.split,
                data_cfg,
                aug_cfg,
                batch_size=batch_size,
                batches=args.batches,
                warmup=args.warmup,
                target_step_rate=args.target_step_rate,
            )
            print(json.dumps(rec), flush=True)
        shapes.append(tuple(rec["image_shape"]))
    if args.aug_batches > 0 and not data_cfg.worker_side_aug:
        for shape in shapes:
            rec = bench_device_aug(shape, aug_cfg, batch_size=batch_size, batches=args.aug_batches)
            print(json.dumps(rec), flush=True)
    return 0


class _Syn:
    """The two fields of config.data that `ensure_data` reads, for a synthetic dataset."""

    def __init__(self, synthetic: dict):
        self.data_dir = ""
        self.synthetic = synthetic


if __name__ == "__main__":
    sys.exit(main())
