"""The one metrics writer: JSONL in the workdir (process 0 only) + a console line.

Every log step is one JSON object per line in `<workdir>/metrics.jsonl`,
always with `step` and `wall_time` (seconds since the writer started), plus
whatever the caller passes (loss, lr, images_per_s, energy so far...).
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from lusjax import files

METRICS_FILE = "metrics.jsonl"


def _plain(v):
    if isinstance(v, (np.generic,)):
        v = v.item()
    if hasattr(v, "shape") and getattr(v, "shape", None) == ():
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep it readable and parseable
    return v


class MetricsWriter:
    """Appends JSON lines to `<workdir>/metrics.jsonl`; a no-op on processes other than 0."""

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.path = files.path(workdir) / METRICS_FILE
        self.enabled = enabled
        self._t0 = time.time()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: dict, **extra) -> dict:
        """Writes one record and returns it."""
        rec = {"step": int(step), "wall_time": round(time.time() - self._t0, 3)}
        rec.update({k: _plain(v) for k, v in {**metrics, **extra}.items()})
        if self.enabled:
            files.append_text(self.path, json.dumps(rec) + "\n")
        return rec


def read(workdir: str | os.PathLike) -> list[dict]:
    """All records of a run (skips a torn last line from a killed writer)."""
    path = files.path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def console_line(rec: dict, keys=("loss", "lr", "images_per_s", "probe_acc")) -> str:
    """A short human summary of a record."""
    parts = [f"step {rec['step']}"]
    for k in keys:
        if k in rec and isinstance(rec[k], (int, float)):
            parts.append(f"{k} {rec[k]:.4g}")
    return "  ".join(parts)
