"""SIGTERM / SIGINT during training: remember the signal, let the loop stop at a step.

The handler only records the first signal's name; it never raises. So a signal
that arrives inside orbax, inside compilation or while a checkpoint is being
written interrupts nothing, and a second signal changes nothing. The loop reads
`StopSignals.signal` once per step, after the step, and decides from that one
reading whether this step is the last (saved synchronously, then `Preempted`).

Test hook: `LUSJAX_TEST_SIGNAL_AT=SIG@point:step` (e.g. `TERM@log:6`, `INT@compile:1`)
makes the trainer send SIG to itself when it reaches `point` at `step` (the
`stop.point(...)` calls in train.py name the points). It hits a moment such as
"during a log step" or "while an async save is in flight" exactly, which a timer
from outside cannot (tests/reliability/test_preemption.py).
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
TEST_ENV = "LUSJAX_TEST_SIGNAL_AT"


class StopSignals:
    """Context manager: while inside, SIGTERM and SIGINT set `signal` (e.g. "SIGTERM")
    instead of ending the process; the previous handlers come back on exit.

    Handlers can only be installed in the main thread; elsewhere (train() called from a
    worker thread) signals keep their previous meaning and `signal` stays None."""

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict[int, object] = {}
        spec = os.environ.get(TEST_ENV, "")
        self._test_at = None
        if spec:
            sig, _, where = spec.partition("@")
            point, _, step = where.partition(":")
            self._test_at = (getattr(signal, f"SIG{sig}"), point, int(step or 0))

    def _handle(self, signum, frame) -> None:
        if self.signal is None:  # the first one names the stop; later ones change nothing
            self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def point(self, name: str, step: int = 0) -> None:
        """The test hook (module docstring): signals this process at `name`:`step`."""
        if self._test_at and self._test_at[1:] == (name, step):
            os.kill(os.getpid(), self._test_at[0])
