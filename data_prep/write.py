"""Write a frame dataset: clips in a `ClipStore` -> split -> TFDS shards + dataset.json.

`write_dataset` is the one place that decides what goes where: it checks the
clips, splits them by video (`data_prep.splits`), builds the `LusFrames` TFDS
dataset under `out_dir` and writes `out_dir/dataset.json` (`DATASET_JSON`), the
index that readers (`lusjax.data.shards`) rebuild the clip table from.
`write_synthetic` does the same for freshly generated synthetic clips.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tqdm

from data_prep import splits as splits_lib
from data_prep.metadata import split_rows_without_file
from data_prep.store import ClipStore
from lusjax.data.format import FINDINGS
from lusjax.errors import UserError
from lusjax.files import write_text_atomic
from lusjax.layout import DATASET_JSON

FILE_FORMATS = ("array_record", "tfrecord")
DEFAULT_SHARD_MB = 128
_CHUNK = 8  # synthetic clips per worker task
SplitSpec = Mapping[str, float] | int | str | None


@dataclasses.dataclass
class Skipped:
    """A clip left out of the dataset and why."""

    source: str
    reason: str


def write_dataset(
    store: ClipStore,
    out_dir: str | os.PathLike,
    *,
    splits: SplitSpec = splits_lib.DEFAULT_FRACTIONS,
    image_size: int | tuple[int, int] | None = None,
    file_format: str = "array_record",
    seed: int = 0,
    skipped: Iterable[Any] = (),
    class_names: Sequence[str] | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    keys: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    verbose: bool = True,
    progress: bool = False,
) -> dict:
    """Splits the clips of `store` by video and writes them as a TFDS dataset.

    Args:
      store: the processed clips.
      out_dir: dataset folder; its `lus_frames/` and `dataset.json` are replaced.
      splits: fractions {"train": 0.7, ...} (or that as "train=0.7,..."), an int
        k for k folds ("fold0".."fold{k-1}"), or None for raw-frames mode
        (everything in "train").
      image_size: expected frame size (int for square, or (H, W)); None takes
        the most common size in the store. Clips of another size are skipped.
      file_format: "array_record" (default, what `lusjax.data.shards` reads) or
        "tfrecord" (needs TensorFlow).
      seed: seed of the split assignment.
      skipped: clips dropped earlier (objects with .source/.reason, or dicts),
        carried into the summary.
      class_names: label index -> name; default: sorted label names in the store.
      shard_mb: target shard size in MiB: a split gets ceil(its bytes / this) shards.
      keys: store keys to use (default: every clip in the store).
      extra: more fields for dataset.json (e.g. ingest options).
      verbose: print the human summary.
      progress: show a progress bar per split (over clips).

    Returns:
      The content of dataset.json (a dict; "summary" holds the human text).
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    skipped_list = [_as_skipped(s) for s in skipped]
    records = store.records() if keys is None else [store.meta(k) for k in keys]
    if not records:
        reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped_list[:5])
        raise UserError(
            f"No usable clips to write{' (skipped: ' + reasons + ')' if reasons else ''}."
        )
    if file_format not in FILE_FORMATS:
        raise UserError(f"Unknown file format {file_format!r}; choose one of {FILE_FORMATS}.")
    if file_format == "tfrecord" and not _has_tensorflow():
        raise UserError(
            "--format tfrecord needs TensorFlow (pip install 'lusjax[tf]'); use array_record."
        )

    records, size_skips = _check_sizes(records, image_size)
    skipped_list += size_skips
    height, width = records[0]["height"], records[0]["width"]
    if class_names is None:
        class_names = sorted({r["label_name"] for r in records if r["label_name"]})
    class_names = list(class_names)

    fractions, folds = _split_spec(splits)
    assignment = splits_lib.assign_splits(records, fractions=fractions, folds=folds, seed=seed)
    plan = {name: [records[i]["key"] for i in idx] for name, idx in assignment.items() if idx}
    empty = [name for name, idx in assignment.items() if not idx]

    builder = _build(
        store, out_dir, plan, (height, width, 1), class_names, file_format, shard_mb, progress
    )
    tfds_dir = Path(builder.data_dir)

    info = {
        "format_version": 1,
        "tfds_dir": os.path.relpath(tfds_dir, out_dir),
        "file_format": file_format,
        "image_shape": [height, width, 1],
        "class_names": class_names,
        "findings": list(FINDINGS),
        "split_spec": {"fractions": fractions, "folds": folds, "seed": seed},
        "splits": {},
        "empty_splits": empty,
        "skipped": [dataclasses.asdict(s) for s in skipped_list],
        # Clips without a clip label: `lusjax prep` warns, `lusjax eval` refuses the
        # label task when none has one.
        "labels": {
            "labelled_clips": sum(1 for r in records if r["label_name"]),
            "unlabeled_clips": sum(1 for r in records if not r["label_name"]),
        },
    }
    for name, keys_in_split in plan.items():
        info["splits"][name] = _split_entry(
            store, keys_in_split, class_names, builder.info.splits[name], out_dir
        )
    info["total"] = {
        "clips": sum(s["n_clips"] for s in info["splits"].values()),
        "frames": sum(s["n_frames"] for s in info["splits"].values()),
        "bytes": sum(s["bytes"] for s in info["splits"].values()),
        "seconds": round(time.time() - t0, 2),
    }
    if extra:
        info.update(extra)
    info["summary"] = summary_text(info, out_dir)
    write_text_atomic(out_dir / DATASET_JSON, json.dumps(info, indent=1))
    if verbose:
        print(info["summary"])
    return info


def write_synthetic(
    out_dir: str | os.PathLike,
    n_clips: int = 24,
    n_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    *,
    splits: SplitSpec = splits_lib.DEFAULT_FRACTIONS,
    clips_per_patient: int = 1,
    file_format: str = "array_record",
    shard_mb: float = DEFAULT_SHARD_MB,
    workers: int = 1,
    verbose: bool = False,
    progress: bool = False,
    **generator_kwargs,
) -> dict:
    """Generates `n_clips` synthetic LUS clips and writes them as a dataset in `out_dir`.

    The clips go through a temporary `ClipStore`, exactly like real ones; class
    names are `data_prep.synthetic.CLASS_NAMES`. `clips_per_patient=1` (the
    default) keeps tiny datasets' splits class-balanced (a patient has one
    class and never straddles splits); use 3 for more realistic grouping.
    `generator_kwargs` go to `synthetic.generate_clips` (e.g. nuisance).
    Returns dataset.json's content.
    """
    from data_prep import synthetic

    gen_kwargs = dict(
        n_frames=n_frames,
        size=size,
        seed=seed,
        clips_per_patient=clips_per_patient,
        **generator_kwargs,
    )
    # The store sits inside out_dir, on the disk the user chose for the dataset
    # (a big corpus may not fit in /tmp), and goes away afterwards.
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".synthetic-clips-", dir=out_dir) as tmp:
        store = ClipStore(tmp)
        with tqdm.tqdm(
            total=n_clips, desc="synthetic clips", unit="clip", disable=not progress
        ) as bar:
            for clip in _generate(n_clips, workers, gen_kwargs):
                store.put(clip.video_id, clip)
                bar.update()
        return write_dataset(
            store,
            out_dir,
            splits=splits,
            image_size=size,
            file_format=file_format,
            seed=seed,
            class_names=synthetic.CLASS_NAMES,
            shard_mb=shard_mb,
            verbose=verbose,
            progress=progress,
            extra={
                "synthetic": {
                    "version": synthetic.VERSION,
                    "n_clips": n_clips,
                    "n_frames": n_frames,
                    "size": size,
                    "seed": seed,
                    "clips_per_patient": clips_per_patient,
                    **generator_kwargs,
                }
            },
        )


def _generate(n_clips: int, workers: int, gen_kwargs: dict) -> Iterator:
    """Synthetic clips 0..n-1 in order, from `workers` processes when > 1."""
    from data_prep import synthetic

    if workers <= 1 or n_clips < 2 * _CHUNK:
        yield from synthetic.generate_clips(n_clips, **gen_kwargs)
        return
    # spawn, not fork: the caller may have initialised JAX, which must not fork.
    ctx = multiprocessing.get_context("spawn")
    starts = range(0, n_clips, _CHUNK)
    jobs = [(start, min(_CHUNK, n_clips - start), gen_kwargs) for start in starts]
    with ctx.Pool(workers) as pool:
        for chunk in pool.imap(_generate_chunk, jobs):
            yield from chunk


def _generate_chunk(job: tuple[int, int, dict]) -> list:
    from data_prep import synthetic

    start, count, gen_kwargs = job
    return list(synthetic.generate_clips(count, start=start, **gen_kwargs))


def summary_text(info: Mapping[str, Any], out_dir: str | os.PathLike) -> str:
    """A few human lines: totals, per split, skipped clips with their reasons."""
    total = info["total"]
    h, w, _ = info["image_shape"]
    lines = [
        (
            f"Wrote {total['clips']} clips, {total['frames']} frames of {h}x{w}, "
            f"{total['bytes'] / 1e6:.1f} MB ({info['file_format']}) to {out_dir}"
        )
    ]
    for name, s in info["splits"].items():
        by_label = collections.Counter(c["label_name"] or "unlabeled" for c in s["clips"])
        labels = ", ".join(f"{k} {v}" for k, v in sorted(by_label.items()))
        lines.append(
            f"  {name:<8} {s['n_clips']:>6} clips {s['n_frames']:>9} frames "
            f"{len(s['files'])} shard(s)  [{labels}]"
        )
    for name in info.get("empty_splits", []):
        lines.append(f"  {name:<8} empty (too few clips or patients); not written")
    clips, rows = split_rows_without_file(info["skipped"], reason=lambda s: s["reason"])
    if clips:
        lines.append(f"  skipped {len(clips)} clip(s):")
        lines += [f"    {s['source']}: {s['reason']}" for s in clips]
    else:
        lines.append("  skipped 0 clips")
    if rows:
        names = ", ".join(s["source"] for s in rows[:3])
        lines.append(f"  {len(rows)} metadata rows without a file ({names}, ...; see dataset.json)")
    return "\n".join(lines)


def _as_skipped(item: Any) -> Skipped:
    if isinstance(item, Mapping):
        return Skipped(str(item["source"]), str(item["reason"]))
    if isinstance(item, tuple):
        return Skipped(str(item[0]), str(item[1]))
    return Skipped(str(item.source), str(item.reason))


def _split_spec(splits: SplitSpec) -> tuple[dict[str, float] | None, int | None]:
    if splits is None:
        return None, None
    if isinstance(splits, bool):
        raise UserError(f"Bad split spec {splits!r}.")
    if isinstance(splits, int):
        return None, splits
    if isinstance(splits, str):
        return splits_lib.parse_fractions(splits), None
    return splits_lib.check_fractions(splits), None


def _check_sizes(records: list[dict], image_size) -> tuple[list[dict], list[Skipped]]:
    """Keeps clips of the dataset's frame size; the others become skips."""
    if image_size is None:
        sizes = [(r["height"], r["width"]) for r in records]
        want = max(set(sizes), key=lambda s: (sizes.count(s), s))
    elif isinstance(image_size, int):
        want = (image_size, image_size)
    else:
        want = tuple(image_size)
    keep, skips = [], []
    for r in records:
        if (r["height"], r["width"]) == want:
            keep.append(r)
        else:
            skips.append(
                Skipped(
                    r.get("source") or r["video_id"],
                    f"frames are {r['height']}x{r['width']}, dataset is {want[0]}x{want[1]}",
                )
            )
    if not keep:
        raise UserError(f"No clip has frames of size {want[0]}x{want[1]}.")
    return keep, skips


def _build(store, out_dir: Path, plan, image_shape, class_names, file_format, shard_mb, progress):
    import tensorflow_datasets as tfds

    from data_prep.lus_frames import lus_frames_builder

    out_dir.mkdir(parents=True, exist_ok=True)
    # A rebuild replaces the previous dataset (TFDS would otherwise keep it).
    # Remove the index first so a half-finished rebuild never looks complete.
    (out_dir / DATASET_JSON).unlink(missing_ok=True)
    shutil.rmtree(out_dir / lus_frames_builder.NAME, ignore_errors=True)
    builder = lus_frames_builder.LusFrames(
        store=store,
        plan=plan,
        image_shape=image_shape,
        class_names=class_names,
        data_dir=os.fspath(out_dir),
        file_format=file_format,
        progress=progress,
    )
    config = _shard_size_config_cls()(shard_bytes=max(int(shard_mb * 2**20), 1))
    # TFDS's own bars and "Downloading..." lines would mislead here: we show a
    # bar per split over clips (in the builder) instead.
    from tensorflow_datasets.core.utils import tqdm_utils

    bars_were_on = tqdm_utils._active
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(
                download_dir=os.fspath(out_dir / lus_frames_builder.NAME / "downloads"),
                download_config=config,
            )
    finally:
        tfds.display_progress_bar(bars_were_on)
    shutil.rmtree(out_dir / lus_frames_builder.NAME / "downloads", ignore_errors=True)
    return builder


def _shard_size_config_cls():
    """DownloadConfig whose shard count is ceil(split bytes / target).

    tfds 4.9.10's `ShardConfig.calculate_number_shards` is a classmethod that
    reads the *class* defaults (64 MiB min / 1 GiB max), so `min_shard_size` /
    `max_shard_size` given to DownloadConfig are ignored, and a fixed
    `num_shards` would apply to every split alike. A ShardConfig that does the
    arithmetic itself, per split, fixes both.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import shard_utils

    class PerSplitShards(shard_utils.ShardConfig):  # a frozen dataclass; same fields
        def get_number_shards(self, total_size, num_examples, uses_precise_sharding=True):
            total = total_size + num_examples * self.overhead
            return int(max(1, min(num_examples, -(-total // self.max_shard_size))))

    @dataclasses.dataclass
    class ShardSizeConfig(tfds.download.DownloadConfig):
        shard_bytes: int = DEFAULT_SHARD_MB * 2**20

        def get_shard_config(self):
            return PerSplitShards(max_shard_size=self.shard_bytes)

    return ShardSizeConfig


def _split_entry(store, keys, class_names, split_info, out_dir: Path) -> dict:
    """dataset.json's entry for one split: its shards and clips in record order."""
    clips, start = [], 0
    for key in keys:
        r = store.meta(key)
        label = class_names.index(r["label_name"]) if r["label_name"] in class_names else -1
        clips.append(
            {
                "video_id": r["video_id"],
                "patient_id": r["patient_id"],
                "label": label,
                "label_name": r["label_name"] if label >= 0 else "",
                "probe": r["probe"],
                "findings": {k: int(r["findings"].get(k, -1)) for k in FINDINGS},
                "n_frames": r["n_frames"],
                "start": start,
                "source": r.get("source", ""),
                "fps": store.fps(key),  # stored frames per second (data.max_dt_s); None unknown
            }
        )
        start += r["n_frames"]
    if split_info.num_examples != start:  # would mean the builder and the store disagree
        raise RuntimeError(
            f"split {split_info.name}: wrote {split_info.num_examples} records, expected {start}"
        )
    files = [Path(os.fspath(p)) for p in split_info.filepaths]
    return {
        "n_clips": len(clips),
        "n_frames": start,
        "bytes": sum(p.stat().st_size for p in files),
        "files": [os.path.relpath(p, out_dir) for p in files],
        "clips": clips,
    }


def _has_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None
