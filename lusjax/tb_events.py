"""TensorBoard event files beside metrics.jsonl (which stays the source of truth).

`lusjax.metrics.MetricsWriter` owns a `Writer` (config `metrics.tensorboard`); nothing
else writes events. Layout: `<workdir>/tensorboard/events.out.tfevents.*`, one file per
run segment; `tensorboard --logdir <workdir>/tensorboard` (or a folder of runs) shows
them.

Why tensorboardX and not `clu.metric_writers`: clu 0.0.12 (the latest) imports its
TensorFlow SummaryWriter in the package's `__init__`, so none of its writers, the
torch-backed one included (which needs torch as well), imports without TensorFlow.
tensorboardX writes the same event files with numpy + protobuf (~1 MB, the `tb`
extra). `Writer` has clu's MetricWriter methods (write_scalars, write_images, flush,
close), so a clu writer could stand in for it.

Resume: a run resumed from checkpoint step S redoes the steps after S. Before it writes,
`discard_after(workdir, S)` rewrites the earlier event files without the events of
steps > S (the originals go to `tensorboard.discarded/`), as `metrics.discard_after`
does for metrics.jsonl: every step is on disk once, whichever reader looks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import struct
import sys
import time
from collections.abc import Iterator, Mapping

import numpy as np

from lusjax import files
from lusjax.layout import TB_DIR, TB_DISCARDED_DIR

_PREFIX = "events.out.tfevents."


def available() -> bool:
    """Whether the event writer (tensorboardX) is installed."""
    return importlib.util.find_spec("tensorboardX") is not None


class Writer:
    """Scalars and images of a run into `<workdir>/tensorboard` (a new file per segment).

    A write that fails (full disk, quota) stops the events with one warning line and
    does not stop training: metrics.jsonl is the record, and its own write (or the
    next checkpoint) reports the disk as it always did."""

    def __init__(self, workdir: str | os.PathLike):
        from tensorboardX import SummaryWriter

        self.logdir = files.makedirs(files.path(workdir) / TB_DIR)
        # tensorboardX names files by the second and the host; the nanoseconds make two
        # segments started within one second two files, and keep names in time order.
        # max_queue/flush_secs: `flush` is called at each log step instead.
        self._w = SummaryWriter(
            logdir=str(self.logdir),
            max_queue=1000,
            flush_secs=3600,
            filename_suffix=f".{time.time_ns()}",
        )

    def _do(self, fn) -> None:
        if self._w is None:
            return
        try:
            fn(self._w)
        except OSError as e:
            w, self._w = self._w, None
            print(
                f"lusjax: warning: TensorBoard events stop here: cannot write {self.logdir} "
                f"({e.strerror or e}); metrics.jsonl has every step",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(OSError):
                w.close()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        def write(w):
            for tag, value in scalars.items():
                w.add_scalar(tag, float(value), global_step=int(step))

        self._do(write)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """`images`: tag -> uint8 or [0, 1] float [H, W, C] with C in (1, 3)."""

        def write(w):
            for tag, img in images.items():
                w.add_image(tag, np.asarray(img), global_step=int(step), dataformats="HWC")

        self._do(write)

    def flush(self) -> None:
        """On disk now: a log step's events are there when its metrics.jsonl line is."""
        self._do(lambda w: w.flush())

    def close(self) -> None:
        self._do(lambda w: w.close())
        self._w = None


# ---------------------------------------------------------------------------
# Reading and trimming event files (TFRecord framing; no TensorFlow, no tensorboard).
# ---------------------------------------------------------------------------


def _records(data: bytes) -> Iterator[bytes]:
    """The records of a TFRecord file: u64 length, u32 crc, data, u32 crc. Stops at a torn
    last record (a killed writer)."""
    pos = 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        if pos + 12 + n + 4 > len(data):
            return
        yield data[pos + 12 : pos + 12 + n]
        pos += 12 + n + 4


def event_files(workdir: str | os.PathLike) -> list:
    """The run's event files, oldest first (names start with the creation time)."""
    d = files.path(workdir) / TB_DIR
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.name.startswith(_PREFIX)), key=lambda p: p.name)


def read_events(workdir: str | os.PathLike) -> list:
    """Every event (`tensorboardX.proto.event_pb2.Event`) of the run, files oldest first."""
    from tensorboardX.proto import event_pb2

    return [
        event_pb2.Event.FromString(r)
        for p in event_files(workdir)
        for r in _records(p.read_bytes())
    ]


def read_scalars(workdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] in the order written."""
    out: dict[str, list[tuple[int, float]]] = {}
    for e in read_events(workdir):
        for v in e.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((int(e.step), float(v.simple_value)))
    return out


def discard_after(workdir: str | os.PathLike, step: int) -> int:
    """Rewrites the event files without the events of steps after `step` (moving each
    changed original to tensorboard.discarded/); returns how many events were dropped.
    Call it on process 0 only, before the resumed run's writer opens."""
    from tensorboardX.record_writer import masked_crc32c

    dropped = 0
    for p in event_files(workdir):
        data = p.read_bytes()
        records = list(_records(data))
        keep = [r for r in records if _step(r) <= step]
        if len(keep) == len(records) and len(data) == _size(records):
            continue  # nothing after `step`, no torn tail
        dropped += len(records) - len(keep)
        old = files.path(workdir) / TB_DISCARDED_DIR / p.name.replace(".tfevents.", ".discarded.")
        files.makedirs(old.parent)
        if not old.exists():  # the original aside first: a kill in between loses nothing
            files.write_atomic(old, lambda f, data=data: f.write_bytes(data))
        out = b"".join(_frame(r, masked_crc32c) for r in keep)
        files.write_atomic(p, lambda f, out=out: f.write_bytes(out))
    return dropped


def _step(record: bytes) -> int:
    from tensorboardX.proto import event_pb2

    return int(event_pb2.Event.FromString(record).step)


def _size(records: list[bytes]) -> int:
    return sum(16 + len(r) for r in records)


def _frame(data: bytes, crc) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", crc(header)) + data + struct.pack("<I", crc(data))
