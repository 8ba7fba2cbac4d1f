"""Random access to the frames of a written dataset split (no TensorFlow).

`open_split(data_dir, "train")` gives a `FrameSource`: a grain
RandomAccessDataSource (`len`, `[i]`) over the split's ArrayRecord shards whose
record `i` is one decoded frame example (see `lusjax.data.format`), plus the
split's `ClipTable` rebuilt from `dataset.json` without decoding any image.
Records run clip by clip, each clip a contiguous block of frames in order, so
`clips.start[c] + k` is frame k of clip c.

Several splits can be read as one: `open_split(d, "fold0+fold1+fold2")` (or
"fold0,fold1,fold2": both separators are accepted everywhere a split is named).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lusjax.data.format import FINDINGS
from lusjax.errors import UserError
from lusjax.layout import DATASET_JSON


class DamagedShardError(UserError, RuntimeError):
    """A record could not be read or decoded: the shard file is damaged. A UserError (one
    line from the CLI, exit 2: rewrite the dataset), and the RuntimeError it was."""


@dataclasses.dataclass
class ClipTable:
    """The clips of one split, in record order."""

    video_id: list[str]
    patient_id: list[str]
    probe: list[str]
    label: np.ndarray  # int32 [n_clips], -1 unlabeled
    start: np.ndarray  # int64 [n_clips], index of the clip's first record
    length: np.ndarray  # int64 [n_clips], frames (records) of the clip
    findings: dict[str, np.ndarray]  # name -> int8 [n_clips]; -1 unknown, 0, 1
    fps: np.ndarray | None = None  # float64 [n_clips], stored frames per second; NaN unknown

    def __len__(self) -> int:
        return len(self.video_id)

    @property
    def n_records(self) -> int:
        return int(self.length.sum())

    def clip_of(self, record: int | np.ndarray) -> int | np.ndarray:
        """Position of the clip that holds record index/indices `record`."""
        return np.searchsorted(self.start, record, side="right") - 1

    @classmethod
    def from_json(cls, clips: Sequence[dict], offset: int = 0) -> ClipTable:
        """Builds the table from dataset.json's clip list of a split."""
        length = np.array([c["n_frames"] for c in clips], np.int64)
        start = offset + np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        return cls(
            video_id=[c["video_id"] for c in clips],
            patient_id=[c["patient_id"] for c in clips],
            probe=[c["probe"] for c in clips],
            label=np.array([c["label"] for c in clips], np.int32),
            start=start,
            length=length,
            findings={
                k: np.array([c["findings"].get(k, -1) for c in clips], np.int8) for k in FINDINGS
            },
            fps=np.array([np.nan if c.get("fps") is None else c["fps"] for c in clips], np.float64),
        )

    def select(self, keep: np.ndarray) -> ClipTable:
        """The clips at positions `keep`, in that order (record starts unchanged)."""
        keep = np.asarray(keep, int)
        return ClipTable(
            video_id=[self.video_id[i] for i in keep],
            patient_id=[self.patient_id[i] for i in keep],
            probe=[self.probe[i] for i in keep],
            label=self.label[keep],
            start=self.start[keep],
            length=self.length[keep],
            findings={k: v[keep] for k, v in self.findings.items()},
            fps=None if self.fps is None else self.fps[keep],
        )

    @classmethod
    def concat(cls, tables: Sequence[ClipTable]) -> ClipTable:
        """Tables of consecutive record ranges, as one (starts stay absolute)."""
        return cls(
            video_id=[v for t in tables for v in t.video_id],
            patient_id=[v for t in tables for v in t.patient_id],
            probe=[v for t in tables for v in t.probe],
            label=np.concatenate([t.label for t in tables]),
            start=np.concatenate([t.start for t in tables]),
            length=np.concatenate([t.length for t in tables]),
            findings={k: np.concatenate([t.findings[k] for t in tables]) for k in FINDINGS},
            fps=np.concatenate(
                [np.full(len(t), np.nan) if t.fps is None else t.fps for t in tables]
            ),
        )


class FrameSource:
    """A split's frames as a grain RandomAccessDataSource: `len(src)`, `src[i]`.

    `src[i]` is the decoded frame example `i` as numpy: "image" uint8 [H, W, 1],
    str fields as `str`, numbers as numpy scalars. Picklable: the shard reader
    and the feature decoder are (re)made lazily, so grain worker processes
    open their own.
    """

    def __init__(
        self,
        *,
        name: str,
        tfds_dir: str,
        files: list[str],
        shard_lengths: list[int],
        clips: ClipTable,
        class_names: list[str],
        image_shape: tuple[int, int, int],
    ):
        self.name = name
        self.tfds_dir = tfds_dir
        self.files = files
        self.shard_lengths = shard_lengths
        self.clips = clips
        self.class_names = class_names
        self.image_shape = image_shape
        self._source = None
        self._features = None

    def __len__(self) -> int:
        return self.clips.n_records

    def __repr__(self) -> str:
        return (
            f"FrameSource({self.name!r}, {len(self.clips)} clips, {len(self)} frames, "
            f"{len(self.files)} shard(s), image {self.image_shape})"
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_source"] = state["_features"] = None
        return state

    def __getitem__(self, record_key: int) -> dict[str, Any]:
        i = int(record_key)
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range for {self!r}")
        reader = self._reader()  # a shard that cannot be opened names itself
        try:
            return self._decode(reader[i])
        except Exception as e:  # name the shard: a corrupt file is the likely cause
            raise DamagedShardError(
                f"Could not read record {i} of split {self.name!r} from shard "
                f"{self.shard_of(i)}: {e}; rewrite the dataset."
            ) from e

    def __getitems__(self, record_keys: Sequence[int]) -> list[dict[str, Any]]:
        """Batched read (grain uses it when present): one call into ArrayRecord."""
        keys = [int(k) for k in record_keys]
        reader = self._reader()
        try:
            raws = reader.__getitems__(keys)
        except Exception:
            return [self[k] for k in keys]
        return [self._decode(raw) for raw in raws]

    def shard_of(self, record: int) -> str:
        """The shard file that holds record index `record`."""
        ends = np.cumsum(self.shard_lengths)
        return self.files[
            min(int(np.searchsorted(ends, record, side="right")), len(self.files) - 1)
        ]

    def _reader(self):
        if self._source is None:
            import grain

            try:
                self._source = grain.sources.ArrayRecordDataSource(self.files)
            except Exception:  # find which shard it was, then re-raise
                for path in self.files:
                    try:
                        grain.sources.ArrayRecordDataSource([path])
                    except Exception as e_one:
                        size = os.path.getsize(path) if os.path.exists(path) else 0
                        raise UserError(
                            f"Shard {path} ({size} bytes) is damaged "
                            f"({str(e_one) or type(e_one).__name__}); rewrite the dataset."
                        ) from e_one
                raise
        return self._source

    def _decode(self, raw: bytes) -> dict[str, Any]:
        if self._features is None:
            self._features = _FastDecoder(self.tfds_dir)
        return self._features(raw)

    def decode_reference(self, raw: bytes) -> dict[str, Any]:
        """TFDS's own decoding of a raw record (slow; what `_FastDecoder` must equal)."""
        if self._features is None:
            self._features = _FastDecoder(self.tfds_dir)
        return _str_fields(self._features.features.deserialize_example_np(raw))


class ConcatSource:
    """Several open sources read as one: the records of the first, then of the second...

    Its clip table is theirs, concatenated, with record starts shifted to match;
    `unlabelled` marks sources whose clips get label -1 (their class list may differ).
    Picklable like its parts (grain workers)."""

    def __init__(self, sources: Sequence[FrameSource], unlabelled: Sequence[bool] = ()):
        shapes = {tuple(s.image_shape) for s in sources}
        if len(shapes) > 1:
            raise UserError(
                "datasets read together must have one frame size, got "
                + " and ".join(f"{s.name} {tuple(s.image_shape)}" for s in sources)
            )
        self.sources = list(sources)
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in sources])]).astype(int)
        tables = []
        for i, (src, off) in enumerate(zip(self.sources, self.offsets)):
            label = (
                np.full(len(src.clips), -1, np.int32)
                if (i < len(unlabelled) and unlabelled[i])
                else src.clips.label
            )
            tables.append(dataclasses.replace(src.clips, start=src.clips.start + off, label=label))
        self.clips = ClipTable.concat(tables)
        self.class_names = list(self.sources[0].class_names)
        self.image_shape = self.sources[0].image_shape
        self.name = " + ".join(s.name for s in self.sources)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"ConcatSource({', '.join(map(repr, self.sources))})"

    def _locate(self, keys) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys, np.int64)
        part = np.searchsorted(self.offsets, keys, side="right") - 1
        if len(keys) and (keys.min() < 0 or keys.max() >= len(self)):
            raise IndexError(f"record out of range for {self!r}")
        return part, keys - self.offsets[part]

    def __getitem__(self, record_key: int) -> dict[str, Any]:
        part, local = self._locate([int(record_key)])
        return self.sources[int(part[0])][int(local[0])]

    def __getitems__(self, record_keys: Sequence[int]) -> list[dict[str, Any]]:
        part, local = self._locate(record_keys)
        out: list = [None] * len(part)
        for p in np.unique(part):
            rows = np.flatnonzero(part == p)
            for r, ex in zip(rows, self.sources[int(p)].__getitems__(local[rows].tolist())):
                out[r] = ex
        return out


class _FastDecoder:
    """Decodes a frame record ~5x faster than `deserialize_example_np`.

    TFDS's numpy path walks generic nested specs in Python per field (~1 ms per
    64x64 frame on one core); this reads the same tf.Example proto (upb) and the
    zlib image directly, using the dataset's own feature spec for names, dtypes
    and shapes. `open_split` checks it against TFDS's decoding on open.
    """

    def __init__(self, tfds_dir: str):
        import tensorflow_datasets as tfds
        from tensorflow_datasets.proto import tf_example_pb2

        self.features = tfds.features.FeatureConnector.from_config(tfds_dir)
        self._parse = tf_example_pb2.Example.FromString
        self._fields = []  # (name, kind, np dtype, shape)
        for name, feature in self.features.items():
            if isinstance(feature, tfds.features.Text):
                kind = "text"
            elif isinstance(feature, tfds.features.Tensor) and feature.shape:
                kind = "zlib" if feature._encoding.value == "zlib" else "raw"
            elif np.issubdtype(feature.np_dtype, np.floating):
                kind = "float"
            else:
                kind = "int"
            self._fields.append((name, kind, feature.np_dtype, tuple(feature.shape)))

    def __call__(self, raw: bytes) -> dict[str, Any]:
        fmap = self._parse(raw).features.feature
        out = {}
        for name, kind, dtype, shape in self._fields:
            f = fmap[name]
            if kind == "int":
                out[name] = int(f.int64_list.value[0])
            elif kind == "float":
                out[name] = float(np.float32(f.float_list.value[0]))
            elif kind == "text":
                out[name] = f.bytes_list.value[0].decode()
            elif kind == "zlib":
                out[name] = np.frombuffer(zlib.decompress(f.bytes_list.value[0]), dtype).reshape(
                    shape
                )
            else:
                out[name] = np.frombuffer(f.bytes_list.value[0], dtype).reshape(shape)
        return out


def _str_fields(example: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in example.items()}


def read_dataset_json(data_dir: str | os.PathLike) -> dict:
    """dataset.json of `data_dir`, or a UserError saying what is missing."""
    path = Path(data_dir)
    if not path.is_dir():
        raise UserError(f"Dataset folder {path} does not exist (write one with `lusjax prep`).")
    index = path / DATASET_JSON
    if not index.is_file():
        raise UserError(f"{path} has no {DATASET_JSON}: not a dataset written by `lusjax prep`.")
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{index} is not valid JSON ({e}); rewrite the dataset.") from e


def list_splits(data_dir: str | os.PathLike) -> list[str]:
    """Names of the non-empty splits of the dataset in `data_dir`, in written order."""
    return list(read_dataset_json(data_dir)["splits"])


def split_list(split: str) -> list[str]:
    """Split names of "a+b" or "a,b" (both join splits; spaces are ignored)."""
    return [s.strip() for s in split.replace(",", "+").split("+") if s.strip()]


def open_split(
    data_dir: str | os.PathLike,
    split: str,
    *,
    check: bool = True,
    setting: str = "--config.data.train_split",
) -> FrameSource:
    """Opens split `split` ("train", or several joined by "+" or ",") of the dataset in
    `data_dir`.

    With `check`, decodes the first and last frame of a few clips and compares
    them with dataset.json, so shards and index that do not belong together
    fail here rather than silently mislabel frames. `setting` is the option that
    chose `split`, named by the error for a split the dataset does not have.
    """
    import tensorflow_datasets as tfds

    info = read_dataset_json(data_dir)
    root = Path(data_dir).absolute()  # workers may run elsewhere; keep paths absolute
    names = split_list(split)
    available = ", ".join(info["splits"]) or "none"
    hint = (
        f"set {setting}={'+'.join(list(info['splits'])[:2]) or 'NAME'} (join several with + or ,)"
    )
    if not names:
        raise UserError(f"No split named; {hint}. Available in {root}: {available}.")
    for name in names:
        if name in info.get("empty_splits", []):
            raise UserError(
                f"Split {name!r} of {root} is empty (too few clips or patients for "
                f"it); available: {available}; {hint}."
            )
        if name not in info["splits"]:
            raise UserError(f"No split {name!r} in {root}; available: {available}; {hint}.")
    if info.get("file_format", "array_record") != "array_record":
        raise UserError(
            f"{root} was written as {info['file_format']}; this reader needs "
            "array_record (rewrite with --format array_record)."
        )

    tfds_dir = root / info["tfds_dir"]
    try:
        builder = tfds.builder_from_directory(os.fspath(tfds_dir))
    except Exception as e:
        raise UserError(
            f"Cannot open the TFDS folder {tfds_dir} named by {DATASET_JSON}: {e}"
        ) from e

    files, shard_lengths, tables, offset = [], [], [], 0
    for name in names:
        entry = info["splits"][name]
        split_info = builder.info.splits[name]
        if split_info.num_examples != entry["n_frames"]:
            raise UserError(
                f"{DATASET_JSON} says split {name!r} has {entry['n_frames']} frames "
                f"but its shards hold {split_info.num_examples}; rewrite the dataset."
            )
        for path in split_info.filepaths:
            if not Path(os.fspath(path)).is_file():
                raise UserError(f"Shard {path} of split {name!r} is missing.")
            files.append(os.fspath(path))
        shard_lengths += list(split_info.shard_lengths)
        tables.append(ClipTable.from_json(entry["clips"], offset))
        offset += entry["n_frames"]
    clips = ClipTable.concat(tables)
    if not len(clips):
        raise UserError(f"Split {split!r} of {root} has no clips.")

    source = FrameSource(
        name=split,
        tfds_dir=os.fspath(tfds_dir),
        files=files,
        shard_lengths=shard_lengths,
        clips=clips,
        class_names=list(info["class_names"]),
        image_shape=tuple(info["image_shape"]),
    )
    if check:
        _check_order(source)
    return source


def _check_order(source: FrameSource, n_clips: int = 3) -> None:
    """First/last frames of a few clips must match the clip table (cheap: 2 reads each).

    The first record is also decoded by TFDS itself, to keep the fast decoder honest.
    """
    clips = source.clips
    fast = source[0]
    reference = source.decode_reference(source._reader()[0])
    if reference.keys() != fast.keys() or any(
        not np.array_equal(reference[k], fast[k]) for k in reference
    ):
        raise RuntimeError(f"Fast frame decoding differs from TFDS's for {source.tfds_dir}.")
    for c in sorted({0, len(clips) // 2, len(clips) - 1})[:n_clips]:
        first = source[int(clips.start[c])]
        last = source[int(clips.start[c] + clips.length[c] - 1)]
        ok = (
            first["video_id"] == last["video_id"] == clips.video_id[c]
            and int(first["n_frames"]) == int(clips.length[c])
            and int(first["frame_idx"]) <= int(last["frame_idx"])
            and tuple(first["image"].shape) == tuple(source.image_shape)
        )
        if not ok:
            raise UserError(
                f"Shards of split {source.name!r} do not match {DATASET_JSON} at clip {c} "
                f"({clips.video_id[c]!r}, records {clips.start[c]}..): got "
                f"{first['video_id']!r}/{last['video_id']!r}; rewrite the dataset."
            )
