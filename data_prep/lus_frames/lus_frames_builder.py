"""`LusFrames`: a TFDS GeneratorBasedBuilder writing one example per frame.

The features are the frame-example contract of `lusjax.data.format`. Records of
a split come out in (clip, frame) order: `disable_shuffling=True` makes the
TFDS writer sort examples by their integer key instead of a hash of it
(tfds 4.9.10 `core/shuffle.py`: `Shuffler.add` keeps the raw key, then sorts in
memory, or, past 1 GB, routes each key to one of 1000 buckets by
`key * 1000 / 2**128` and sorts every bucket). So keys must be ints that rise
with (clip, frame); spreading them over [0, 2**128) keeps that order *and*
spreads big splits over the buckets instead of piling them into bucket 0
(which would be read back into memory whole).

Readers never import this module: they open the written folder with
`tfds.builder_from_directory` or read the shards directly (`lusjax.data.shards`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data_prep.store import ClipStore
from lusjax.data.format import FINDINGS

NAME = "lus_frames"
VERSION = "1.0.0"
_KEY_SPACE = 1 << 128  # TFDS's hashed-key range; see the module docstring


def features_dict(image_shape: tuple[int, int, int]) -> tfds.features.FeaturesDict:
    """The frame-example features of `lusjax.data.format` for frames of `image_shape`."""
    features = {
        "image": tfds.features.Tensor(shape=tuple(image_shape), dtype=np.uint8, encoding="zlib"),
        "video_id": tfds.features.Text(),
        "patient_id": tfds.features.Text(),
        "frame_idx": tfds.features.Scalar(dtype=np.int32),
        "n_frames": tfds.features.Scalar(dtype=np.int32),
        "timestamp": tfds.features.Scalar(dtype=np.float32),
        "probe": tfds.features.Text(),
        "label": tfds.features.Scalar(dtype=np.int32),
        "label_name": tfds.features.Text(),
    }
    features.update({name: tfds.features.Scalar(dtype=np.int8) for name in FINDINGS})
    return tfds.features.FeaturesDict(features)


def record_keys(n_records: int) -> list[int]:
    """Integer TFDS keys for records 0..n-1: strictly rising, spread over 128 bits."""
    step = _KEY_SPACE // max(n_records, 1)
    return [i * step for i in range(n_records)]


class LusFrames(tfds.core.GeneratorBasedBuilder):
    """Frames of preprocessed lung-ultrasound clips, in (clip, frame) order per split."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        str(VERSION): "One example per frame; records ordered by (clip, frame).",
    }

    def __init__(
        self,
        *,
        store: ClipStore,
        plan: Mapping[str, Sequence[str]],
        image_shape: tuple[int, int, int],
        class_names: Sequence[str],
        progress: bool = False,
        **kwargs,
    ):
        """
        Args:
          store: where the clips are.
          plan: split name -> store keys of its clips, in record order.
          image_shape: (H, W, 1) of every frame.
          class_names: label index -> name; clips with another name are unlabeled.
          progress: show a tqdm bar over the clips of each split.
          **kwargs: for `GeneratorBasedBuilder` (data_dir, file_format).
        """
        # Set before super().__init__, which already calls _info().
        self._store = store
        self._plan = {name: list(keys) for name, keys in plan.items()}
        self._image_shape = tuple(image_shape)
        self._class_index = {name: i for i, name in enumerate(class_names)}
        self._progress = progress
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Grayscale lung-ultrasound frames; one example per frame.",
            features=features_dict(self._image_shape),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: clips come from the ClipStore.
        return {name: self._generate_examples(name) for name in self._plan}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        keys = self._plan[split]
        n_records = sum(self._store.meta(k)["n_frames"] for k in keys)
        ordered_keys = iter(record_keys(n_records))
        for key in tqdm.tqdm(
            keys, desc=f"writing {split}", unit="clip", disable=not self._progress
        ):
            clip = self._store.load(key)
            label = self._class_index.get(clip.label_name, -1)
            for t in range(clip.n_frames):
                example = {
                    "image": clip.frames[t][..., None],
                    "video_id": clip.video_id,
                    "patient_id": clip.patient_id,
                    "frame_idx": int(clip.frame_idx[t]),
                    "n_frames": clip.n_frames,
                    "timestamp": float(clip.timestamp[t]),
                    "probe": clip.probe,
                    "label": label,
                    "label_name": clip.label_name if label >= 0 else "",
                }
                example.update(clip.findings)
                yield next(ordered_keys), example
