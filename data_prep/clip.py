"""`Clip`: one preprocessed ultrasound clip, the unit passed from ingest to the writer.

Both the real-video ingest (`data_prep.ingest`) and the synthetic generator
(`data_prep.synthetic`) yield `Clip`s; the dataset writer turns each frame of a
clip into one example (see `lusjax.data.format`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lusjax.data.format import FINDINGS


@dataclasses.dataclass
class Clip:
    """A cropped, grayscale, resized clip and its metadata.

    Attributes:
      video_id: unique, stable id of the clip (e.g. the file's relative path).
      frames: uint8 [T, H, W] grayscale frames, already fan-cropped and resized.
      frame_idx: int [T], index of each kept frame in the original video.
      timestamp: float [T], seconds from the start of the original video.
      patient_id: patient id; equals `video_id` when unknown.
      probe: "convex", "linear" or "unknown".
      label_name: clip label name ("" when unlabeled).
      findings: finding name -> -1 (unknown), 0 or 1; keys from `FINDINGS`.
      source: where it came from (path or "synthetic"), for the summary.
    """

    video_id: str
    frames: np.ndarray
    frame_idx: np.ndarray
    timestamp: np.ndarray
    patient_id: str = ""
    probe: str = "unknown"
    label_name: str = ""
    findings: dict[str, int] = dataclasses.field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        if not self.patient_id:
            self.patient_id = self.video_id
        self.findings = {k: int(self.findings.get(k, -1)) for k in FINDINGS}
        if self.frames.ndim != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"{self.video_id}: frames must be uint8 [T, H, W], got "
                f"{self.frames.dtype} {self.frames.shape}"
            )
        if not (len(self.frames) == len(self.frame_idx) == len(self.timestamp)):
            raise ValueError(f"{self.video_id}: frames, frame_idx, timestamp differ in length")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])
