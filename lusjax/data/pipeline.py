"""The grain input pipeline: positive-pair training batches, eval frames, whole clips.

Training (`train_iterator`), per host:

    pairs.pair_batches(clips)         element k = this host's batch k of pair indices
                                      (balanced per clip; this host's slice of
                                      global batch k, global // process_count)
      .map(ReadBatch)                 read + decode its frames in one call -> the
                                      TRAINING BATCH of lusjax.data.format
                                      [+ data.worker_side_aug: augment on the CPU]
      .to_iter_dataset(threads)       data.read_threads threads, data.prefetch batches
      [.mp_prefetch(data.workers)]    worker processes, each building whole batches

Global batch k depends only on (seed, k, global batch size) (see
lusjax.data.pairs): the same seed gives the same batches with any number of
hosts, workers or threads; host i reads the i-th slice of it.

Checkpointing (verified with grain 0.2.18 + orbax-checkpoint 0.12.8, see
tests/test_pipeline.py): the iterator has `get_state()` (a small JSON-able dict)
and `set_state(state)`; a fresh iterator built with the same arguments and given
a saved state yields exactly the batches the old one would have yielded next,
with 0 or N workers. With orbax:

    ocp.args.Composite(state=ocp.args.StandardSave(train_state),
                       data_iter=grain.checkpoint.CheckpointSave(it))
    ... restore with grain.checkpoint.CheckpointRestore(it)  # sets `it` in place

(grain's handler writes `process_<i>-of-<n>.json` per host, so each host
restores its own shard). Saving `it.get_state()` yourself (e.g. in a JSON
beside the checkpoint) is equivalent. Worker processes are spawned (they
re-import the main module: keep an `if __name__ == "__main__":` guard); absl
flags, which grain's workers read, are parsed here if nobody did. Close a
worker iterator with `it.close()` when done.

Evaluation: `frames_iterator` (every frame once, in record order, last partial
batch kept) and `clips` (one dict per clip with all its frames).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from typing import Any

import grain
import ml_collections
import numpy as np

from lusjax.data import pairs
from lusjax.errors import UserError


def default_config() -> ml_collections.ConfigDict:
    """The `data` sub-config.

    data_dir: dataset folder written by `lusjax prep`; "" = the cached synthetic
      dataset described by `synthetic` (see lusjax.app.default_data).
    train_split, val_split: split names ("a+b" or "a,b" joins splits; `lusjax prep --folds k`
      writes fold0..fold{k-1} and no "train", so set them, e.g. "fold0,fold1,fold2").
    clips_file: a JSON list of video ids: training pairs come only from those
      clips of train_split ("" = every clip). `lusjax study` pretrains each
      fold on its training clips this way; pretrain_clips.json lists only them.
    extra_data_dir: "" or a second `lusjax prep` dataset whose clips (every split,
      as unlabelled) join the training split (`open_train_source`).
    synthetic: arguments of data_prep.write.write_synthetic for the default data.
    max_dt: a positive pair is two frames at most max_dt stored frames apart
      (0 = the same frame twice: classic SimCLR).
    max_dt_s: > 0: ... at most max_dt_s seconds apart instead (per clip, at its
      stored frame rate; clips of 30 and 10 fps get different frame windows).
    min_dt: ... and at least min_dt apart (clips need min_dt + 1 frames).
    micle_prob: probability that the partner comes from another clip of the same
      patient (MICLe); ignored for patients with one clip.
    clip_weighting: "uniform" (every clip equally often), "sqrt_length" or
      "length" (= every frame equally often).
    samples_per_clip: samples per clip per epoch; 0 = epoch as long as the
      split's frame count.
    skip_short_clips: drop clips shorter than min_dt + 1 instead of failing.
    shuffle: shuffle the epoch order (a global index shuffle: exact, free).
    workers: grain worker processes (0 = decode in this process).
    read_threads: threads per process building batches.
    prefetch: batches buffered per process.
    worker_side_aug: augment on the CPU workers (pass aug_cfg to
      train_iterator); views then arrive float32 [B, S, S, C] in [0, 1] and
      `augment.augment_batch` passes them through.
    """
    return ml_collections.ConfigDict(
        {
            "data_dir": "",
            "train_split": "train",
            "val_split": "val",
            "clips_file": "",
            "extra_data_dir": "",
            "synthetic": {"n_clips": 24, "n_frames": 16, "size": 64, "seed": 0},
            "max_dt": 4,
            "max_dt_s": 0.0,
            "min_dt": 0,
            "micle_prob": 0.0,
            "clip_weighting": "uniform",
            "samples_per_clip": 0,
            "skip_short_clips": False,
            "shuffle": True,
            "workers": 0,
            "read_threads": 2,
            "prefetch": 2,
            "worker_side_aug": False,
        }
    )


def _open(data_dir_or_source, split: str):
    """A FrameSource for (data_dir, split); an already open source passes through."""
    if hasattr(data_dir_or_source, "clips") and hasattr(data_dir_or_source, "__getitem__"):
        return data_dir_or_source
    from lusjax.data.shards import open_split

    return open_split(os.fspath(data_dir_or_source), split)


def open_train_source(data_dir: str, cfg: ml_collections.ConfigDict):
    """The source training reads: cfg.train_split of `data_dir`, followed by every split of
    cfg.extra_data_dir (its clips unlabelled) when that is set."""
    from lusjax.data.shards import ConcatSource, list_splits, open_split

    source = open_split(data_dir, cfg.train_split)
    extra = cfg.get("extra_data_dir", "")
    if not extra:
        return source
    return ConcatSource(
        [source, open_split(extra, "+".join(list_splits(extra)))], unlabelled=[False, True]
    )


def train_clips(source, cfg: ml_collections.ConfigDict):
    """The clip table training pairs are drawn from: the split's clips, or only those
    listed in `cfg.clips_file` (a JSON list of video ids). Record starts stay those of
    the whole split, so the full source still reads them."""
    clips = source.clips
    path = cfg.get("clips_file", "")
    if not path:
        return clips
    import json
    from pathlib import Path

    try:
        wanted = {str(v) for v in json.loads(Path(path).read_text())}
    except (OSError, ValueError, TypeError) as e:
        raise UserError(
            f"data.clips_file {path}: not a readable JSON list of video ids ({e})"
        ) from None
    missing = sorted(wanted - set(clips.video_id))
    if missing:
        raise UserError(
            f"data.clips_file {path}: {len(missing)} video id(s) not in the "
            f"training split: {', '.join(missing[:10])}"
        )
    keep = np.flatnonzero(np.isin(np.asarray(clips.video_id, str), sorted(wanted)))
    if not len(keep):
        raise UserError(f"data.clips_file {path} lists no clip")
    return clips.select(keep)


def _read(source, indices: list[int]) -> list[dict[str, Any]]:
    getitems = getattr(source, "__getitems__", None)
    return getitems(indices) if getitems is not None else [source[i] for i in indices]


class ReadBatch(grain.transforms.Map):
    """A batch of pair indices -> the training batch: all frames read in one call.

    One `__getitems__` per batch: ArrayRecord's batched read is ~10x cheaper per
    record than one call per pair.
    """

    def __init__(self, source, aug_cfg: ml_collections.ConfigDict | None = None):
        self.source = source
        # A plain dict pickles into spawned workers; rebuilt lazily.
        self.aug = None if aug_cfg is None else aug_cfg.to_dict()
        self._aug_cfg = None

    def __getstate__(self):
        return {"source": self.source, "aug": self.aug, "_aug_cfg": None}

    def map(self, pairs_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        anchor = np.asarray(pairs_batch["anchor"], np.int64)
        partner = np.asarray(pairs_batch["partner"], np.int64)
        wanted, inverse = np.unique(np.concatenate([anchor, partner]), return_inverse=True)
        examples = _read(self.source, wanted.tolist())
        images = np.stack([e["image"] for e in examples])
        b = len(anchor)
        batch = {
            "view1": images[inverse[:b]],
            "view2": images[inverse[b:]],
            "label": np.asarray(pairs_batch["label"], np.int32),
            "index": anchor.astype(np.int32),
        }
        if self.aug is not None:
            batch["view1"], batch["view2"] = self._augment(batch, pairs_batch["seed"])
        return batch

    def _augment(self, batch, seeds):
        """Worker-side augmentation: per-example generators from the pair's seed."""
        from lusjax.data import augment

        if self._aug_cfg is None:
            self._aug_cfg = ml_collections.ConfigDict(self.aug)
        v1, v2 = [], []
        for i, seed in enumerate(np.asarray(seeds)):
            rng = np.random.Generator(np.random.Philox(key=int(seed)))
            v1.append(augment.augment_example_np(batch["view1"][i], rng, self._aug_cfg))
            v2.append(augment.augment_example_np(batch["view2"][i], rng, self._aug_cfg))
        return np.stack(v1), np.stack(v2)


def _process(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
        return shard.shard_index, shard.shard_count
    return int(process_index), int(process_count)


def train_dataset(
    data_dir,
    split: str,
    cfg: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    aug_cfg: ml_collections.ConfigDict | None = None,
) -> grain.MapDataset:
    """The per-host MapDataset of training batches (before threads/processes)."""
    index, count = _process(process_index, process_count)
    if global_batch_size <= 0 or global_batch_size % count:
        raise UserError(
            f"batch size {global_batch_size} must be a positive multiple of the {count} host(s)"
        )
    batch_size = global_batch_size // count
    source = _open(data_dir, split)
    what = f"split {split!r}" + (
        f" of {data_dir}" if isinstance(data_dir, (str, os.PathLike)) else ""
    )
    ds = pairs.pair_batches(
        train_clips(source, cfg),
        seed=seed,
        batch_size=batch_size,
        max_dt=cfg.max_dt,
        max_dt_s=float(cfg.get("max_dt_s", 0.0)),
        min_dt=cfg.min_dt,
        micle_prob=cfg.micle_prob,
        weighting=cfg.clip_weighting,
        samples_per_clip=cfg.samples_per_clip,
        skip_short=cfg.skip_short_clips,
        shuffle=cfg.shuffle,
        process_index=index,
        process_count=count,
        what=what,
    )
    if cfg.worker_side_aug and aug_cfg is None:
        raise UserError("data.worker_side_aug needs the aug config (train_iterator(aug_cfg=...))")
    return ds.map(ReadBatch(source, aug_cfg if cfg.worker_side_aug else None))


def train_iterator(
    data_dir,
    split: str,
    cfg: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    aug_cfg: ml_collections.ConfigDict | None = None,
) -> grain.DatasetIterator:
    """Infinite iterator of this host's training batches (numpy), resumable.

    Args:
      data_dir: dataset folder (or an open FrameSource-like object with .clips).
      split: split name, e.g. cfg.train_split.
      cfg: the `data` config (`default_config()`).
      global_batch_size: batch over all hosts; each host yields global / process_count.
      seed: the run's seed.
      process_index, process_count: default jax.process_index()/process_count()
        (grain's ShardByJaxProcess).
      aug_cfg: the `aug` config, needed only with cfg.worker_side_aug.

    Yields:
      {"view1", "view2": uint8 [B, H, W, 1] (float32 [B, S, S, 1] in [0, 1] with
       worker_side_aug), "label": int32 [B], "index": int32 [B]}.
      The iterator has get_state() / set_state() (see the module docstring).
    """
    ds = train_dataset(
        data_dir,
        split,
        cfg,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        aug_cfg=aug_cfg,
    )
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(
            num_threads=max(0, int(cfg.read_threads)),
            prefetch_buffer_size=max(1, int(cfg.prefetch)),
        )
    )
    if cfg.workers > 0:
        _parse_absl_flags()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=int(cfg.workers), per_worker_buffer_size=max(1, int(cfg.prefetch))
            ),
            # This process's pid, fixed now: a worker that starts after the trainer
            # died must see it (its own getppid() would already be another process).
            worker_init_fn=functools.partial(exit_with_parent, parent=os.getpid()),
        )
    return iter(it_ds)


def exit_with_parent(
    worker_index: int = 0, worker_count: int = 1, *, parent: int, poll_s: float = 0.5
) -> None:
    """In a grain worker process: exit as soon as the trainer `parent` that spawned it is
    gone (also when it died while this worker was starting).

    grain's workers stop when the iterator is closed, but a trainer killed with
    SIGKILL (OOM killer, a scheduler) closes nothing: its workers would block on a
    full queue forever, holding their shared-memory batches in /dev/shm. Exiting
    lets multiprocessing's resource tracker unlink those (tests/reliability/
    test_kill_safety.py). A polled parent pid, not PR_SET_PDEATHSIG: that signal
    fires when the *thread* that started the worker ends, which may be a pool thread.
    Also ignores SIGINT and SIGTERM: Ctrl-C reaches the whole process group, and SLURM
    signals every process of a job step, but stopping is the trainer's decision (it saves
    its step, then closes the iterator, which ends the workers).
    """
    import signal
    import threading
    import time

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)  # no cleanup to run: the parent is gone

    threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def _parse_absl_flags() -> None:
    """grain's workers read absl flags: parse them (program name only) if nobody did."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(sys.argv[:1], known_only=True)


def steps_per_epoch(
    data_dir, split: str, cfg: ml_collections.ConfigDict, global_batch_size: int
) -> int:
    """Training batches in one epoch of pairs (at least 1)."""
    source = _open(data_dir, split)
    n = len(
        pairs.epoch_slots(
            train_clips(source, cfg),
            weighting=cfg.clip_weighting,
            samples_per_clip=cfg.samples_per_clip,
            min_dt=cfg.min_dt,
            skip_short=cfg.skip_short_clips,
        )
    )
    return max(1, n // global_batch_size)


# ----------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------

_FRAME_KEYS = ("image", "label", "video_id", "patient_id", "frame_idx")


def _frame_fields(index: int, example: dict[str, Any]) -> dict[str, Any]:
    out = {k: example[k] for k in _FRAME_KEYS}
    out["label"] = np.int32(out["label"])
    out["frame_idx"] = np.int32(out["frame_idx"])
    out["index"] = np.int32(index)
    return out


def frames_iterator(
    data_dir,
    split: str,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Every frame of a split once, in record order, in batches (the last one partial).

    Yields {"image": uint8 [b, H, W, 1], "label": int32 [b], "video_id": str [b],
    "patient_id": str [b], "frame_idx": int32 [b], "index": int32 [b] (record index)}.
    With process_count > 1, host i reads the i-th contiguous block of records.
    """
    if batch_size <= 0:
        raise UserError(f"batch size must be positive (got {batch_size})")
    source = _open(data_dir, split)
    n = len(source)
    if n == 0:
        raise UserError(f"split {split!r} has no frames")
    start = n * process_index // process_count
    stop = n * (process_index + 1) // process_count
    # map_with_index before the slice: the index is the record's index in the split.
    ds = grain.MapDataset.source(source).map_with_index(_frame_fields)[start:stop]
    ds = ds.batch(batch_size, drop_remainder=False)
    opts = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2)
    return iter(ds.to_iter_dataset(opts))


def clips(data_dir, split: str) -> Iterator[dict[str, Any]]:
    """Whole clips in split order, for video-level evaluation.

    Yields {"video_id", "patient_id", "probe": str, "label": int,
    "findings": {name: int}, "frames": uint8 [T, H, W, 1], "frame_idx": int32 [T],
    "start": first record index}.
    """
    source = _open(data_dir, split)
    table = source.clips
    for c in range(len(table.video_id)):
        start, length = int(table.start[c]), int(table.length[c])
        examples = _read(source, list(range(start, start + length)))
        yield {
            "video_id": table.video_id[c],
            "patient_id": table.patient_id[c],
            "probe": table.probe[c] if hasattr(table, "probe") else "unknown",
            "label": int(table.label[c]),
            "findings": (
                {k: int(v[c]) for k, v in table.findings.items()}
                if hasattr(table, "findings")
                else {}
            ),
            "frames": np.stack([e["image"] for e in examples])
            if examples
            else np.zeros((0, *source.image_shape), np.uint8),
            "frame_idx": np.asarray([e["frame_idx"] for e in examples], np.int32),
            "start": start,
        }
