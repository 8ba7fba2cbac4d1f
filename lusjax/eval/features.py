"""The glue between datasets/encoders and the numpy core of the evaluation.

`Frames` holds what every protocol needs as plain arrays: for each frame its
clip (an index into `Clips`), optionally its pixels; for each clip its id,
patient, label and findings. Build one from a dataset on disk (`load`) or
from in-memory arrays (`from_arrays`); `extract` turns its frames into
features with an `Encoder`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lusjax.data.format import FINDINGS
from lusjax.errors import UserError
from lusjax.eval.linear import bucket, pad_rows

LABEL_TASK = "label"
FINDING_CLASSES = ["absent", "present"]


@dataclasses.dataclass
class Clips:
    """Per-clip arrays, one entry per clip."""

    video_id: np.ndarray  # str [C]
    patient_id: np.ndarray  # str [C]; equals video_id when unknown
    label: np.ndarray  # int [C]; -1 unlabeled
    findings: np.ndarray  # int [C, len(FINDINGS)]; -1 unknown, 0, 1
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.video_id)

    def targets(self, task: str) -> tuple[np.ndarray, list[str]]:
        """(per-clip target int [C] with -1 = unknown, class names) of a task:
        "label" (the clip label) or a finding name (binary: absent/present)."""
        if task == LABEL_TASK:
            return self.label, list(self.class_names)
        if task in FINDINGS:
            return self.findings[:, FINDINGS.index(task)], list(FINDING_CLASSES)
        raise UserError(
            f"unknown task {task!r}; choose {LABEL_TASK!r} or one of {', '.join(FINDINGS)}"
        )


@dataclasses.dataclass
class Frames:
    """Frames of a set of clips: `frame_clip` [N] indexes `clips`; `images` uint8 [N,H,W,1]."""

    clips: Clips
    frame_clip: np.ndarray
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame_clip)

    def frame_targets(self, task: str) -> np.ndarray:
        return self.clips.targets(task)[0][self.frame_clip]


def from_arrays(
    video_ids, labels, class_names, *, patient_ids=None, findings=None, images=None
) -> Frames:
    """Frames from per-frame arrays (video id, label, optional patient id, findings [N, F])."""
    video_ids = np.asarray(video_ids).astype(str)
    uniq, first, frame_clip = np.unique(video_ids, return_index=True, return_inverse=True)
    patient = video_ids if patient_ids is None else np.asarray(patient_ids).astype(str)
    fnd = np.full((len(video_ids), len(FINDINGS)), -1) if findings is None else np.asarray(findings)
    clips = Clips(
        uniq,
        patient[first],
        np.asarray(labels)[first].astype(np.int64),
        fnd[first].astype(np.int64),
        list(class_names),
    )
    return Frames(clips, frame_clip.astype(np.int64), images)


def split_names(data_dir: str | Path, splits: str | tuple | list = "") -> list[str]:
    """The requested split names ("a,b", "a+b" or a sequence; empty = every split)."""
    from lusjax.data import shards

    if isinstance(splits, str):
        splits = shards.split_list(splits)
    names = [s.strip() for s in splits if s.strip()]
    return names or shards.list_splits(data_dir)


def load(
    data_dir: str | Path,
    splits: str | tuple | list = "",
    frames_per_clip: int = 0,
    *,
    setting: str = "--config.splits",
) -> Frames:
    """Reads the frames of `splits` (pooled) with their clip metadata.

    `frames_per_clip` > 0 keeps that many evenly spaced frames of each clip
    (all frames of shorter clips); 0 keeps every frame. `setting` names the
    option that chose `splits` in the error for a split that does not exist.
    """
    from lusjax.data import shards

    src = shards.open_split(str(data_dir), "+".join(split_names(data_dir, splits)), setting=setting)
    table = src.clips
    keep = [_spaced(int(n), frames_per_clip) for n in table.length]
    records = np.concatenate([int(s) + k for s, k in zip(table.start, keep)])
    images = []
    for i in range(0, len(records), 1024):
        images += [ex["image"] for ex in src.__getitems__(records[i : i + 1024].tolist())]
    clips = Clips(
        np.array(table.video_id, str),
        np.array(table.patient_id, str),
        np.asarray(table.label, np.int64),
        np.stack([np.asarray(table.findings[f], np.int64) for f in FINDINGS], 1),
        list(src.class_names),
    )
    frame_clip = np.repeat(np.arange(len(keep)), [len(k) for k in keep])
    return Frames(clips, frame_clip, np.stack(images))


def _spaced(length: int, count: int) -> np.ndarray:
    if count <= 0 or count >= length:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, count).round().astype(int))


def concat(a: Frames, b: Frames) -> Frames:
    """The frames of `a` then those of `b` (clips of `b` appended after those of `a`)."""
    if list(a.clips.class_names) != list(b.clips.class_names):
        raise UserError(
            f"class names differ between splits: {a.clips.class_names} vs {b.clips.class_names}"
        )
    cat = np.concatenate
    clips = Clips(
        cat([a.clips.video_id, b.clips.video_id]),
        cat([a.clips.patient_id, b.clips.patient_id]),
        cat([a.clips.label, b.clips.label]),
        cat([a.clips.findings, b.clips.findings]),
        list(a.clips.class_names),
    )
    images = None if a.images is None or b.images is None else cat([a.images, b.images])
    return Frames(clips, cat([a.frame_clip, b.frame_clip + len(a.clips)]), images)


def select(frames: Frames, keep: np.ndarray) -> Frames:
    """The frames of the clips `keep` (bool [C] or clip indices), clips renumbered."""
    keep = np.asarray(keep)
    keep = np.flatnonzero(keep) if keep.dtype == bool else np.sort(keep)
    c = frames.clips
    clips = Clips(
        c.video_id[keep], c.patient_id[keep], c.label[keep], c.findings[keep], list(c.class_names)
    )
    new_index = np.full(len(c), -1)
    new_index[keep] = np.arange(len(keep))
    rows = np.flatnonzero(new_index[frames.frame_clip] >= 0)
    images = None if frames.images is None else frames.images[rows]
    return Frames(clips, new_index[frames.frame_clip[rows]], images)


def drop_classes(frames: Frames, names: list[str]) -> tuple[Frames, dict[str, int]]:
    """Removes the clips whose label is one of `names` and those classes from the label
    list (labels renumbered). Returns (frames, {name: clips removed}) for the names
    that are classes of the dataset."""
    c = frames.clips
    gone = [i for i, n in enumerate(c.class_names) if n in names]
    if not gone:
        return frames, {}
    removed = {c.class_names[i]: int((c.label == i).sum()) for i in gone}
    out = select(frames, ~np.isin(c.label, gone))
    kept = [i for i in range(len(c.class_names)) if i not in gone]
    remap = np.full(len(c.class_names) + 1, -1)  # index -1 (unlabeled) stays -1
    remap[kept] = np.arange(len(kept))
    out.clips.label = remap[out.clips.label]
    out.clips.class_names = [c.class_names[i] for i in kept]
    return out, removed


def extract(
    encoder,
    frames: Frames | np.ndarray,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "features",
) -> np.ndarray:
    """float32 [N, D] eval-mode features of the frames' images with `encoder`."""
    images = frames.images if isinstance(frames, Frames) else frames
    if images is None:
        raise ValueError("these frames carry no images")
    chunks = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=desc, unit="batch", leave=False)
    out = []
    for i in chunks:
        chunk = images[i : i + batch_size]
        rows = bucket(len(chunk), batch_size)  # few compiled shapes whatever the count
        out.append(encoder.features(pad_rows(chunk, rows), batch_size=rows)[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, encoder.num_features), np.float32)


def clip_embeddings(features: np.ndarray, frame_clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean feature of each clip [C', D], clip indices [C']) over the clips present."""
    clips, inverse = np.unique(frame_clip, return_inverse=True)
    sums = np.zeros((len(clips), features.shape[1]))
    np.add.at(sums, inverse, features)
    return sums / np.bincount(inverse)[:, None], clips
