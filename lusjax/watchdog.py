"""Multi-host liveness: turn a hung job into a prompt error that names the stuck process.

A multi-process run stalls silently when one process stops (a hung data
loader, a dead disk, a killed host): the others wait forever inside a
collective. Each process runs a `Watchdog`, a daemon thread that the loop
"pets" with its step and phase:

    dog = watchdog.start(cfg.watchdog_s)   # a no-op unless multi-process and > 0
    dog.pet(step, "data"); batch = next(it)
    dog.pet(step, "step"); state, m = step_fn(state, batch)
    dog.stop()                             # at the end of a successful run

Every `interval` seconds the thread publishes this process's heartbeat
(step, phase, when the phase began, when the beat was sent) to the JAX
distributed key-value store. When the process has made no progress for
`timeout_s` it reads every process's heartbeat, prints which one is stuck
and where, e.g.

    lusjax: error: no progress for 60 s at step 12 (this is process 0, in 'step');
    process 1 is stuck in 'data' for 58 s (alive: heartbeat 1 s ago)

and ends the process with `os._exit(1)`: a collective in flight cannot be
interrupted any other way. It also posts that line under an abort key, so the
other processes stop within one interval instead of each waiting out its own
timeout. A process whose heartbeats stopped is reported as not responding
(killed or crashed). Ages of other processes' beats use the wall clocks of
both hosts (fine with NTP; skew shows up as age).

Test hook: `LUSJAX_TEST_FAULT=PROCESS:STEP:ACTION` makes process PROCESS,
entering the "data" phase of step STEP, hang forever (`hang`) or SIGKILL
itself (`kill`).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

PREFIX = "lusjax/watchdog/"
HEARTBEATS = PREFIX + "heartbeat/"
ABORT = PREFIX + "abort"
COLLECTIVE_PHASES = ("step",)  # waiting here is usually waiting for another process
FAULT_ENV = "LUSJAX_TEST_FAULT"


class Store(Protocol):
    """The part of a key-value store the watchdog uses (JAX's distributed client)."""

    def set(self, key: str, value: str) -> None: ...
    def get_dir(self, prefix: str) -> dict[str, str]: ...
    def get(self, key: str) -> str | None: ...


class JaxStore:
    """The JAX distributed runtime's key-value store (on the coordinator)."""

    def __init__(self, client):
        self.client = client

    def set(self, key: str, value: str) -> None:
        self.client.key_value_set(key, value, allow_overwrite=True)

    def get_dir(self, prefix: str) -> dict[str, str]:
        return dict(self.client.key_value_dir_get(prefix))

    def get(self, key: str) -> str | None:
        try:
            return self.client.key_value_try_get(key)
        except Exception:
            return None


class Off:
    """The watchdog when disabled: `pet` only records the step (and runs the test hook)."""

    def __init__(self, process_index: int = 0):
        self.process_index, self.step = process_index, 0
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, ""))

    def pet(self, step: int, phase: str) -> None:
        self.step = int(step)
        _maybe_inject(self._fault, self.process_index, self.step, phase)

    def stop(self) -> None:
        pass


class Watchdog:
    """A daemon thread that exits the process when `pet` is not called for `timeout_s`.

    `store` None: no heartbeats are shared (the message names this process only).
    `interval_s`: heartbeat period (default timeout/10, within 0.5..10 s). `exit_fn`,
    `clock` and `out` (default stderr) are for tests.
    """

    def __init__(
        self,
        timeout_s: float,
        *,
        process_index: int = 0,
        process_count: int = 1,
        store: Store | None = None,
        interval_s: float | None = None,
        grace_s: float | None = None,
        exit_fn: Callable[[int], Any] = os._exit,
        clock: Callable[[], float] = time.time,
        out=None,
    ):
        self.timeout_s = float(timeout_s)
        self.interval_s = interval_s or min(10.0, max(0.5, self.timeout_s / 10))
        # How long process 0 stays up after giving up, for the others to read its abort key.
        self.grace_s = 2 * self.interval_s + 1 if grace_s is None else grace_s
        self.process_index, self.process_count = process_index, process_count
        self.store, self.exit_fn, self.clock = store, exit_fn, clock
        self.out = out
        self.step, self.phase, self.since = 0, "start", clock()
        self.fired: str | None = None
        self.errors: list[str] = []  # failed store calls (kept for tests and debugging)
        self._stop = threading.Event()
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, ""))
        self._thread = threading.Thread(target=self._run, name="lusjax-watchdog", daemon=True)
        self._thread.start()
        # Still running at interpreter exit (the loop raised): JAX's shutdown barrier,
        # which runs after this, waits for every process; name that phase.
        atexit.register(self._at_exit)

    # --- Called by the loop -------------------------------------------------------

    def pet(self, step: int, phase: str) -> None:
        """Records progress: this process is now in `phase` of step `step`."""
        self.step, self.phase, self.since = int(step), phase, self.clock()
        _maybe_inject(self._fault, self.process_index, self.step, phase)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        if not self._stop.is_set():
            self.pet(self.step, "exit")

    # --- The thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._publish()
            aborted = self._try(lambda: self.store.get(ABORT)) if self.store else None
            if aborted:
                self._say(f"stopping: {aborted}")
                self.exit_fn(1)
                return
            stalled = self.clock() - self.since
            if stalled > self.timeout_s:
                self._fire(self.diagnose(stalled))
                return

    def _fire(self, line: str) -> None:
        """Says it, tells the other processes (abort key), exits."""
        self._say(line)
        if self.store is not None:
            self._try(
                lambda: self.store.set(ABORT, f"process {self.process_index} gave up: {line}"),
                wait_s=5,
            )
            if self.process_index == 0:
                # Process 0 hosts the key-value store: give the others time to read the
                # abort key before it goes away with this process.
                time.sleep(self.grace_s)
        self.exit_fn(1)

    def _publish(self) -> None:
        if self.store is None:
            return
        beat = json.dumps(
            {"step": self.step, "phase": self.phase, "since": self.since, "beat": self.clock()}
        )
        self._try(lambda: self.store.set(f"{HEARTBEATS}{self.process_index}", beat))

    def _try(self, fn, wait_s: float | None = None):
        """fn() in a helper thread, given up after `wait_s` (an RPC to a dead coordinator
        may block); None on error or time-out."""
        box: list = []

        def call():
            try:
                box.append(fn())
            except Exception as e:
                box.append(None)
                self.errors[:] = [*self.errors[-9:], repr(e)]

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(self.interval_s if wait_s is None else wait_s)
        return box[0] if box else None

    def _say(self, line: str) -> None:
        self.fired = line
        print(f"lusjax: error: {line}", file=self.out or sys.stderr, flush=True)

    # --- The diagnosis ------------------------------------------------------------

    def heartbeats(self) -> dict[int, dict] | None:
        """Every process's last heartbeat ({process: record}), None if unreadable."""
        if self.store is None:
            return None
        raw = self._try(lambda: self.store.get_dir(HEARTBEATS), wait_s=10)
        if raw is None:
            return None
        beats = {}
        for key, value in raw.items():
            try:
                beats[int(key.rsplit("/", 1)[1])] = json.loads(value)
            except (ValueError, IndexError):
                continue
        return beats

    def diagnose(self, stalled: float) -> str:
        """The one line saying how long nothing moved and which process is stuck where."""
        now = self.clock()
        me = self.process_index
        head = (
            f"no progress for {stalled:.0f} s at step {self.step} (this is process {me} "
            f"of {self.process_count}, in {self.phase!r})"
        )
        beats = self.heartbeats() if self.process_count > 1 else {}
        if beats is None:
            where = (
                "cannot read the other processes' heartbeats (the coordinator, "
                "process 0, is unreachable: dead or killed?)"
            )
            if self.phase not in COLLECTIVE_PHASES:
                where = f"process {me} (this one) is stuck in {self.phase!r}; {where}"
            return f"{head}; {where}"
        beats[me] = {"step": self.step, "phase": self.phase, "since": self.since, "beat": now}
        stale_s = max(3 * self.interval_s, 5.0)
        missing = [p for p in range(self.process_count) if p not in beats]
        dead = [p for p, b in sorted(beats.items()) if now - b["beat"] > stale_s]
        if missing or dead:
            parts = [f"process {p} never sent a heartbeat" for p in missing]
            parts += [
                f"process {p} stopped responding: last heartbeat {now - beats[p]['beat']:.0f}"
                f" s ago, at step {beats[p]['step']} in {beats[p]['phase']!r} "
                "(killed or crashed?)"
                for p in dead
            ]
            return f"{head}; " + "; ".join(parts)
        low = min(b["step"] for b in beats.values())
        behind = {p: b for p, b in beats.items() if b["step"] == low}
        busy = {p: b for p, b in behind.items() if b["phase"] not in COLLECTIVE_PHASES}
        if busy:
            parts = [
                f"process {p} is stuck in {b['phase']!r} for {now - b['since']:.0f} s "
                f"(alive: heartbeat {now - b['beat']:.0f} s ago)"
                for p, b in sorted(busy.items())
            ]
            return f"{head}; " + "; ".join(parts)
        if len(behind) < len(beats):
            names = ", ".join(str(p) for p in sorted(behind))
            return (
                f"{head}; process(es) {names} are behind, at step {low} in "
                f"{behind[min(behind)]['phase']!r}"
            )
        return (
            f"{head}; every process is in {self.phase!r} at step {low}: a collective "
            "or a device is stuck"
        )


def _maybe_inject(fault, process_index: int, step: int, phase: str) -> None:
    """The LUSJAX_TEST_FAULT hook (see the module docstring)."""
    if not fault or phase != "data" or fault[:2] != (process_index, step):
        return
    if fault[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # "hang": a data loader that never returns
        time.sleep(3600)


def _parse_fault(text: str) -> tuple[int, int, str] | None:
    if not text:
        return None
    proc, step, action = text.split(":")
    if action not in ("hang", "kill"):
        raise ValueError(f"{FAULT_ENV}: action must be hang or kill, got {action!r}")
    return int(proc), int(step), action


def start(timeout_s: float) -> Watchdog | Off:
    """The watchdog of this process: running when `timeout_s` > 0 and the job has
    several processes (a single process can be interrupted by hand), else `Off`."""
    import jax

    if timeout_s <= 0 or jax.process_count() == 1:
        return Off(jax.process_index())
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    store = JaxStore(client) if client is not None else None
    return Watchdog(
        timeout_s, process_index=jax.process_index(), process_count=jax.process_count(), store=store
    )
