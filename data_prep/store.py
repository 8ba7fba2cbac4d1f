"""`ClipStore`: processed clips on disk, the hand-off between ingest and sharding.

Ingest (real or synthetic) puts each processed `Clip` here once, as one `.npz`
plus a line of metadata; the dataset writer reads them back split by split.
A re-run finds clips already stored under the same key (source content hash +
ingest options) and skips their decoding: that is what makes `prep` resumable.
Writes are atomic (temp file + rename), so a killed run never leaves half a clip.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from data_prep.clip import Clip
from lusjax.layout import STORE_INDEX


def _safe_name(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", video_id)[:120]


class ClipStore:
    """A folder of processed clips: `<root>/<name>.npz` + `<root>/clips.jsonl`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._meta: dict[str, dict] = {}
        meta_path = self.root / STORE_INDEX
        if meta_path.exists():
            for line in meta_path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if (self.root / rec["file"]).exists():
                        self._meta[rec["key"]] = rec

    def has(self, key: str) -> bool:
        """Whether a clip was stored under `key` (e.g. content hash + options)."""
        return key in self._meta

    def put(self, key: str, clip: Clip) -> dict:
        """Stores `clip` under `key`; returns its metadata record."""
        # The key may hold any characters (e.g. "/"); only a safe prefix goes in the name.
        name = f"{_safe_name(clip.video_id)}-{_safe_name(key)[:12]}.npz"
        tmp = self.root / (name + ".tmp.npz")
        np.savez(tmp, frames=clip.frames, frame_idx=clip.frame_idx, timestamp=clip.timestamp)
        os.replace(tmp, self.root / name)
        rec = {
            "key": key,
            "file": name,
            "video_id": clip.video_id,
            "patient_id": clip.patient_id,
            "probe": clip.probe,
            "label_name": clip.label_name,
            "findings": clip.findings,
            "source": clip.source,
            "n_frames": clip.n_frames,
            "height": int(clip.frames.shape[1]),
            "width": int(clip.frames.shape[2]),
            "fps": stored_fps(clip.timestamp),
        }
        with open(self.root / STORE_INDEX, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self._meta[key] = rec
        return rec

    def meta(self, key: str) -> dict:
        return self._meta[key]

    def fps(self, key: str) -> float | None:
        """Stored frames per second of a clip (from its timestamps when the record of an
        older store lacks it; only that array is read)."""
        rec = self._meta[key]
        if "fps" in rec:
            return rec["fps"]
        with np.load(self.root / rec["file"]) as z:
            return stored_fps(z["timestamp"])

    def records(self) -> list[dict]:
        """Metadata of every stored clip, in insertion order (last write per key wins)."""
        return list(self._meta.values())

    def load(self, key: str) -> Clip:
        """Reads the clip stored under `key` back."""
        rec = self._meta[key]
        with np.load(self.root / rec["file"]) as z:
            return Clip(
                video_id=rec["video_id"],
                frames=z["frames"],
                frame_idx=z["frame_idx"],
                timestamp=z["timestamp"],
                patient_id=rec["patient_id"],
                probe=rec["probe"],
                label_name=rec["label_name"],
                findings=rec["findings"],
                source=rec["source"],
            )


def stored_fps(timestamp: np.ndarray) -> float | None:
    """Frames per second of a clip as stored (after any frame subsampling), from its
    timestamps; None when it cannot be told (one frame, or no time passes)."""
    t = np.asarray(timestamp, np.float64)
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    return round((len(t) - 1) / span, 4) if span > 0 and np.isfinite(span) else None
