"""Multi-host liveness: a stuck or killed process ends the whole job, non-zero, within a
bounded time, with an error naming it; a failed async checkpoint save raises; processes
starting together on an empty data cache all get the dataset.

The end-to-end cases run `lusjax train` as 2 processes x 2 CPU devices joined through the
LUSJAX_* variables (as `launch/local.sh --procs 2` does), with the test hook
LUSJAX_TEST_FAULT=PROCESS:STEP:hang|kill (lusjax/watchdog.py) and a short
`config.watchdog_s`. The watchdog's diagnosis itself is unit-tested with an in-memory
key-value store.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from test_multihost import child_env, free_port
from test_train import TINY

from lusjax import watchdog

ROOT = Path(__file__).resolve().parents[2]
WATCHDOG_S = 15  # > 2x the first step's compilation on a loaded 2-core machine
BOUND_S = 120  # both processes must be gone this long after the fault


# ----------------------------------------------------------------------------
# The watchdog's diagnosis (in-process, fake store, no JAX).
# ----------------------------------------------------------------------------


class DictStore:
    """The key-value store of `watchdog.Store`, in memory (what the coordinator holds)."""

    def __init__(self):
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()

    def set(self, key, value):
        with self.lock:
            self.data[key] = value

    def get_dir(self, prefix):
        with self.lock:
            return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    def get(self, key):
        with self.lock:
            return self.data.get(key)


class Exits:
    """Records exit codes instead of exiting."""

    def __init__(self):
        self.codes: list[int] = []
        self.event = threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.event.set()


def dog(store, index, count=2, timeout_s=0.6, **kw):
    exits = Exits()
    d = watchdog.Watchdog(
        timeout_s,
        process_index=index,
        process_count=count,
        store=store,
        interval_s=0.1,
        grace_s=0.2,
        exit_fn=exits,
        out=io.StringIO(),
        **kw,
    )
    return d, exits


def test_watchdog_names_the_process_stuck_in_data():
    store = DictStore()
    (d0, e0), (d1, e1) = dog(store, 0), dog(store, 1)
    for step in (1, 2):
        d0.pet(step, "data"), d1.pet(step, "data")
        d0.pet(step, "step"), d1.pet(step, "step")
    d0.pet(3, "data"), d1.pet(3, "data")
    d0.pet(3, "step")  # process 0 waits in the step's collective; process 1 never gets a batch
    assert e0.event.wait(10) and e1.event.wait(10)
    assert e0.codes == e1.codes == [1]
    for d in (d0, d1):
        assert "no progress for" in d.fired and "at step 3" in d.fired
        assert "process 1 is stuck in 'data'" in d.fired, d.fired
    assert json.loads(store.data[watchdog.HEARTBEATS + "1"])["phase"] == "data"
    assert "gave up" in store.data[watchdog.ABORT]


def test_watchdog_names_a_process_that_stopped_responding():
    store = DictStore()
    now = time.time()
    store.set(
        watchdog.HEARTBEATS + "1",  # process 1's last beat, 60 s ago, then nothing
        json.dumps({"step": 7, "phase": "step", "since": now - 61, "beat": now - 60}),
    )
    d0, e0 = dog(store, 0)
    d0.pet(8, "step")
    assert e0.event.wait(10) and e0.codes == [1]
    assert "process 1 stopped responding: last heartbeat 6" in d0.fired
    assert "at step 7 in 'step' (killed or crashed?)" in d0.fired


def test_watchdog_blames_the_laggard_and_a_process_never_heard_of():
    store = DictStore()
    now = time.time()
    for p, step in ((1, 5), (2, 4)):
        store.set(
            watchdog.HEARTBEATS + str(p),
            json.dumps({"step": step, "phase": "step", "since": now, "beat": now + 30}),
        )
    d0, e0 = dog(store, 0, count=3)
    d0.pet(5, "step")
    assert e0.event.wait(10)
    assert "process(es) 2 are behind, at step 4" in d0.fired
    d3, e3 = dog(DictStore(), 0, count=2)
    d3.pet(1, "save")
    assert e3.event.wait(10) and "process 1 never sent a heartbeat" in d3.fired


def test_watchdog_without_the_coordinator_still_names_itself():
    class Dead(DictStore):
        def get_dir(self, prefix):
            raise ConnectionError("coordinator gone")

    d1, e1 = dog(Dead(), 1)
    d1.pet(3, "data")
    assert e1.event.wait(10)
    assert d1.out.getvalue() == f"lusjax: error: {d1.fired}\n"
    assert "process 1 (this one) is stuck in 'data'" in d1.fired
    assert "process 0, is unreachable" in d1.fired


def test_watchdog_every_process_in_the_step_and_stop():
    store = DictStore()
    (d0, e0), (d1, e1) = dog(store, 0, timeout_s=1.0), dog(store, 1, timeout_s=1.0)
    d0.pet(2, "step"), d1.pet(2, "step")
    assert e0.event.wait(10) and e1.event.wait(10)
    assert "every process is in 'step' at step 2: a collective or a device is stuck" in (
        d0.fired + d1.fired
    )
    d2, e2 = dog(DictStore(), 0, count=1, timeout_s=0.3)
    d2.stop()  # a finished run: never fires
    time.sleep(0.6)
    assert not e2.codes and d2.fired is None


def test_watchdog_is_off_for_one_process_or_zero():
    assert isinstance(watchdog.start(600), watchdog.Off)  # this test process: 1 process
    assert isinstance(watchdog.start(0), watchdog.Off)


def test_jax_heartbeat_timeout_from_the_environment():
    from lusjax import distributed

    env = {"LUSJAX_COORDINATOR": "h:1", "LUSJAX_NUM_PROCESSES": "2", "LUSJAX_PROCESS_ID": "1"}
    assert "heartbeat_timeout_seconds" not in distributed.plan(env).kwargs()  # JAX's default
    hb = {**env, "LUSJAX_HEARTBEAT_TIMEOUT_S": "15"}
    assert distributed.plan(hb).kwargs()["heartbeat_timeout_seconds"] == 15
    auto = {"LUSJAX_DISTRIBUTED": "auto", "LUSJAX_HEARTBEAT_TIMEOUT_S": "30"}
    assert distributed.plan(auto).kwargs() == {"heartbeat_timeout_seconds": 30}


# ----------------------------------------------------------------------------
# End to end: `lusjax train`, 2 processes.
# ----------------------------------------------------------------------------


def train_procs(
    tmp_path, fault: str, *, watchdog_s: int = WATCHDOG_S, steps: int = 8, **env
) -> list[tuple[int, str, float]]:
    """Runs 2 joined `lusjax train` processes; returns (exit code, stderr, seconds) each."""
    over = [f"--config.{k}={v}" for k, v in TINY]
    cmd = [
        sys.executable,
        "-m",
        "lusjax.cli",
        "train",
        "--quiet",
        "--config",
        str(ROOT / "configs/quickstart.py"),
        f"--config.workdir={tmp_path / 'run'}",
        f"--config.total_steps={steps}",
        "--config.ckpt_every=0",
        f"--config.watchdog_s={watchdog_s}",
        *over,
    ]
    port = free_port()
    extra = {
        "LUSJAX_CACHE": str(tmp_path / "cache"),
        "LUSJAX_TEST_FAULT": fault,
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
        **env,
    }
    t0 = time.time()
    procs = [
        subprocess.Popen(
            cmd,
            env=child_env(2, i, port, 2, **extra),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=BOUND_S + 120)
            out.append((p.returncode, err, time.time() - t0))
    finally:
        for p in procs:  # a hung one must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    return out


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("lusjax: error:")]


def test_stuck_data_loader_ends_both_processes_naming_it(tmp_path):
    """Process 1's data loader hangs at step 3: both exit 1 within the bound, each saying
    that process 1 is stuck in 'data'."""
    (rc0, err0, t0), (rc1, err1, t1) = train_procs(tmp_path, "1:3:hang")
    assert (rc0, rc1) == (1, 1), (err0[-2000:], err1[-2000:])
    assert max(t0, t1) < BOUND_S + 60  # start-up and 2 steps, then the watchdog
    for err in (err0, err1):
        (line, *_) = error_lines(err) or [err[-2000:]]
        assert "process 1 is stuck in 'data'" in line and "at step 3" in line, line


@pytest.mark.slow
def test_killed_process_ends_the_other_naming_it(tmp_path):
    """Process 1 is SIGKILLed at step 3: process 0 exits non-zero, naming process 1 (the
    watchdog's line, or JAX's own heartbeat timeout: 'Task 1 heartbeat timeout')."""
    (rc0, err0, t0), (rc1, _, _) = train_procs(tmp_path, "1:3:kill")
    assert rc1 == -9 and rc0 != 0
    assert t0 < BOUND_S + 60
    named = [ln for ln in error_lines(err0) if "process 1 stopped responding" in ln]
    assert named or "Task 1 heartbeat timeout" in err0, err0[-3000:]


@pytest.mark.slow
def test_killed_coordinator_ends_the_other(tmp_path):
    """Process 0 (it hosts JAX's coordinator) is SIGKILLed: process 1 ends at once, JAX
    saying the leader task died."""
    (rc0, _, _), (rc1, err1, t1) = train_procs(tmp_path, "0:3:kill")
    assert rc0 == -9 and rc1 != 0 and t1 < BOUND_S + 60
    assert "leader task" in err1 or "process 0, is unreachable" in err1, err1[-3000:]


@pytest.mark.slow
def test_without_the_watchdog_jax_heartbeats_catch_a_killed_process(tmp_path):
    """watchdog_s=0: a killed process is still caught, by JAX's heartbeat timeout
    (LUSJAX_HEARTBEAT_TIMEOUT_S), which names the task."""
    (rc0, err0, t0), (rc1, _, _) = train_procs(
        tmp_path, "1:3:kill", watchdog_s=0, LUSJAX_HEARTBEAT_TIMEOUT_S="15"
    )
    assert rc1 == -9 and rc0 != 0 and t0 < BOUND_S + 60
    assert "Task 1 heartbeat timeout" in err0, err0[-3000:]


# ----------------------------------------------------------------------------
# A failed async checkpoint save raises: at the next save, or at exit (close).
# ----------------------------------------------------------------------------


@pytest.fixture
def failing_json_save(monkeypatch):
    """The data-iterator item's async write fails (a full disk), after the save started."""
    import asyncio

    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    async def fail(self, x, directory):
        await asyncio.sleep(0.2)
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", fail)


@pytest.mark.parametrize("when", ["next_save", "close"])
def test_failed_async_save_raises(tmp_path, failing_json_save, when):
    import jax.numpy as jnp

    from lusjax import checkpoint

    ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=3, async_save=True)
    state = {"w": jnp.ones(3)}
    assert ckpt.save(1, state, {"pos": 1}, force=True)  # returns while the write runs
    time.sleep(1.0)  # the write has failed by now, in the background
    with pytest.raises(OSError, match="No space left"):
        if when == "next_save":
            ckpt.save(2, state, {"pos": 2}, force=True)
        else:
            ckpt.close()
    assert ckpt.latest_step() is None  # nothing half-written is taken for a checkpoint


# ----------------------------------------------------------------------------
# Processes starting together on an empty synthetic-data cache.
# ----------------------------------------------------------------------------

RACER = """
import sys, time
from pathlib import Path
import ml_collections
from data_prep import write  # noqa: F401  (the heavy imports, before the start line)
from lusjax.app.default_data import ensure_data
from lusjax.data.shards import open_split

barrier, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(barrier / me).touch()
while len(list(barrier.iterdir())) < n:  # all start writing at the same moment
    time.sleep(0.01)
cfg = ml_collections.ConfigDict({"data_dir": "", "synthetic": dict(
    n_clips=12, n_frames=4, size=16, seed=0)})
path = ensure_data(cfg)
print(path, len(open_split(path, "train")), flush=True)
"""


def test_processes_racing_on_an_empty_cache_all_get_one_dataset(tmp_path):
    """The known bug: two processes generating the default data into one folder (one
    failed 'Failed to finalize writing of split train', the other hung)."""
    n = 3
    (tmp_path / "barrier").mkdir()
    env = {
        **os.environ,
        "LUSJAX_CACHE": str(tmp_path / "cache"),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "barrier"), str(i), str(n)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    lines = {out.strip() for out, _ in results}
    assert len(lines) == 1, lines  # the same folder, the same frames
    path = Path(lines.pop().split()[0])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no leftovers


def test_lost_race_discards_its_copy_and_junk_is_replaced(tmp_path):
    from lusjax.app import default_data
    from lusjax.layout import DATASET_JSON

    target = tmp_path / "synthetic-x"

    def write(tag, winner=None):
        def fn(tmp):
            (tmp / "shard").write_text(tag)
            (tmp / DATASET_JSON).write_text(json.dumps({"summary": f"written to {tmp}"}))
            if winner:  # another process finishes first, while this one writes
                winner.mkdir()
                (winner / DATASET_JSON).write_text("{}")
                (winner / "shard").write_text("winner")

        return fn

    assert not default_data.write_atomically(target, write("mine", winner=target))
    assert (target / "shard").read_text() == "winner"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-x"]  # mine is gone

    other = tmp_path / "synthetic-y"
    other.mkdir()
    (other / "partial").write_text("an interrupted writer of an older version")
    stale = (
        tmp_path
        / f".synthetic-y{default_data._TMP_TAG}{default_data.socket.gethostname()}-999999999-ab"
    )
    stale.mkdir()  # a temporary folder of a dead process of this host
    assert default_data.write_atomically(other, write("mine"))
    assert (other / "shard").read_text() == "mine" and not (other / "partial").exists()
    assert json.loads((other / DATASET_JSON).read_text())["summary"] == f"written to {other}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-x", "synthetic-y"]
