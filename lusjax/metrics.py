"""The one metrics writer: JSONL in the workdir (process 0 only) + a console line.

Every log step is one JSON object per line in `<workdir>/metrics.jsonl`,
always with `step` and `wall_time` (seconds since the writer started), plus
whatever the caller passes (loss, lr, images_per_s, energy so far...).
A resumed run first moves the lines of the steps it will redo to
`metrics.jsonl.discarded` (`discard_after`), so each step appears once.
With `tensorboard=True` every numeric value of a record also goes to TensorBoard
event files (`lusjax.tb_events`, in `<workdir>/tensorboard`), trimmed the same way.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from lusjax import files, tb_events
from lusjax.layout import METRICS_DISCARDED, METRICS_FILE


def _plain(v):
    if isinstance(v, (np.generic,)):
        v = v.item()
    if hasattr(v, "shape") and getattr(v, "shape", None) == ():
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep it readable and parseable
    return v


def _number(v) -> float | None:
    """`v` as a float if it is a number (numpy scalars included, not bools), else None."""
    if isinstance(v, (bool, np.bool_)) or v is None:
        return None
    if isinstance(v, (int, float, np.number)) or getattr(v, "shape", None) == ():
        return float(v)
    return None


class MetricsWriter:
    """Appends JSON lines to `<workdir>/metrics.jsonl`; a no-op on processes other than 0.

    `tensorboard`: also every numeric value as a TensorBoard scalar of the same name
    (needs tensorboardX, the `tb` extra)."""

    def __init__(
        self, workdir: str | os.PathLike, *, enabled: bool = True, tensorboard: bool = False
    ):
        self.path = files.path(workdir) / METRICS_FILE
        self.enabled = enabled
        self._t0 = time.time()
        self._tb = None
        if enabled:
            files.makedirs(self.path.parent)
            if tensorboard:
                self._tb = tb_events.Writer(workdir)

    @property
    def tensorboard(self) -> bool:
        """Whether this writer writes TensorBoard events (process 0 with it on)."""
        return self._tb is not None

    def write(self, step: int, metrics: dict, **extra) -> dict:
        """Writes one record and returns it."""
        rec = {"step": int(step), "wall_time": round(time.time() - self._t0, 3)}
        merged = {**metrics, **extra}
        rec.update({k: _plain(v) for k, v in merged.items()})
        if self.enabled:
            files.append_text(self.path, json.dumps(rec) + "\n")
            if self._tb is not None:
                scalars = {
                    k: _number(v) for k, v in {"wall_time": rec["wall_time"], **merged}.items()
                }
                self._tb.write_scalars(step, {k: v for k, v in scalars.items() if v is not None})
                self._tb.flush()
        return rec

    def write_images(self, step: int, images: dict) -> None:
        """Images (tag -> [H, W, C]) to TensorBoard, if it is on; JSONL has no images."""
        if self._tb is not None:
            self._tb.write_images(step, images)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


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


def _step_of(line: str) -> int | None:
    try:
        rec = json.loads(line)
        return int(rec["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # a torn line (killed writer): not a record


def discard_after(workdir: str | os.PathLike, step: int) -> int:
    """Moves the records of steps after `step` (and torn lines) to `metrics.jsonl.discarded`
    (appended): a run resumed from checkpoint `step` redoes them. Returns how many lines
    moved. Call it on process 0 only; the rewrite is atomic. (The run's TensorBoard events
    of those steps: `tb_events.discard_after`.)"""
    path = files.path(workdir) / METRICS_FILE
    if not path.exists():
        return 0
    keep, drop = [], []
    for line in filter(str.strip, path.read_text().splitlines()):
        s = _step_of(line)
        (keep if s is not None and s <= step else drop).append(line + "\n")
    if drop:
        # Discarded first: a kill in between leaves those lines twice, never lost.
        files.append_text(path.with_name(METRICS_DISCARDED), "".join(drop))
        files.write_text_atomic(path, "".join(keep))
    return len(drop)


def console_line(rec: dict, keys=("loss", "lr", "images_per_s", "probe_acc")) -> str:
    """A short human summary of a record."""
    parts = [f"step {rec['step']}"]
    for k in keys:
        if k in rec and isinstance(rec[k], (int, float)):
            parts.append(f"{k} {rec[k]:.4g}")
    return "  ".join(parts)
