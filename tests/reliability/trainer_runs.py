"""Helpers of the kill-safety and exact-resume tests: `lusjax train` as a subprocess on
the tiny config of tests/test_train.py, its metrics, checkpoints and child processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from test_train import TINY, tiny_config

from lusjax import checkpoint, metrics, sharding, train
from lusjax.app.default_data import ensure_data
from lusjax.data.shards import open_split

ROOT = Path(__file__).resolve().parents[2]
TMP_MARK = checkpoint.TMP_MARK


def settings(total: int, *, ckpt_every: int, keep: int, workers: int = 0) -> list[tuple]:
    """The tiny config's overrides plus what these tests vary; every step logged with the
    hash of its batch (sample ids + augmentation key)."""
    return [
        *TINY,
        ("total_steps", str(total)),
        ("ckpt_every", str(ckpt_every)),
        ("keep_ckpts", str(keep)),
        ("data.workers", str(workers)),
        ("log_batch_hash", "true"),
        ("carbon.measure", "false"),
    ]


def config(workdir, overrides):
    """The resolved config of a run (what the subprocess trains)."""
    extra = [kv for kv in overrides if kv not in TINY]
    return tiny_config(workdir, *extra)


def command(workdir, overrides) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lusjax.cli",
        "train",
        "--quiet",
        "--config",
        str(ROOT / "configs/quickstart.py"),
        f"--config.workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in overrides],
    ]


def env(devices: int) -> dict:
    """The test environment (persistent compilation cache, CPU) with `devices` devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    flags = " ".join(
        f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")
    )
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {flags}",
    }


MARK = "LUSJAX_TEST_RUN"  # in the environment of a trainer and of every process it starts


def start(workdir, overrides, devices: int, log: Path) -> subprocess.Popen:
    """Starts the trainer; its stdout+stderr go to `log` (appended: one file per run).

    Its processes, and their children, carry MARK=<log path> in their environment
    (`processes_of(log)` finds them after the trainer is gone)."""
    ensure_data(config(workdir, overrides).data)  # generated here once, never killed
    with open(log, "ab") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command(workdir, overrides),
            env={**env(devices), MARK: str(log)},
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def processes_of(log: Path) -> list[int]:
    """Live processes started for the run logging to `log` (the trainer, grain workers,
    multiprocessing's resource tracker), found by their environment."""
    needle = f"{MARK}={log}".encode() + b"\0"
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes() and alive(int(entry.name)):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def wait_gone(log: Path, timeout: float = 20) -> list[str]:
    """Waits until no process of the run is left; returns the command lines of those
    still alive then, and kills them (a failing test leaves no orphans behind)."""
    deadline = time.time() + timeout
    while (left := processes_of(log)) and time.time() < deadline:
        time.sleep(0.1)
    lines = [cmdline(p) for p in left]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return lines


def removed_by(log: Path, names) -> set[str]:
    """Which of the temporary folders `names` the run logging to `log` removed at start."""
    text = tail(log, 1_000_000)
    return {n for n in names if f"/{n} (the run stopped" in text}


def run(workdir, overrides, devices: int, log: Path, timeout: float = 600) -> None:
    """Trains to the end, uninterrupted; raises with the log's tail if it fails."""
    proc = start(workdir, overrides, devices, log)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        raise AssertionError(f"trainer exited {rc}:\n{tail(log)}")


def tail(log: Path, n: int = 3000) -> str:
    return Path(log).read_text(errors="replace")[-n:] if Path(log).exists() else ""


def records(workdir) -> dict[int, dict]:
    """The last metrics record of each step (a resumed run logs some steps again)."""
    return {r["step"]: r for r in metrics.read(workdir)}


def last_step(workdir) -> int:
    return max(records(workdir), default=0)


def committed(workdir) -> tuple[list[int], list[str]]:
    """(committed steps, temporary directories) of a run's checkpoints folder."""
    d = Path(workdir) / "checkpoints"
    names = os.listdir(d) if d.is_dir() else []
    return (sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if TMP_MARK in n))


def wait_until(cond, proc: subprocess.Popen, timeout: float = 300, poll: float = 0.005) -> bool:
    """Polls `cond()` until true (True) or the process ends first (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return bool(cond())
        time.sleep(poll)
    raise TimeoutError("the trainer made no progress")


def kill(proc: subprocess.Popen) -> int:
    """SIGKILLs the trainer alone (as the OOM killer would), not its children."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def shm() -> set[str]:
    """Named shared memory and semaphores (what grain's workers create)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


# ----------------------------------------------------------------------------
# Restoring and comparing train states.
# ----------------------------------------------------------------------------


_LIKE: dict[str, object] = {}


def _like(cfg, devices: int):
    """A freshly initialised train state of `cfg` on `devices` devices (restore target)."""
    key = json.dumps({**cfg.to_dict(), "workdir": ""}, sort_keys=True, default=str)
    if (key, devices) not in _LIKE:
        n_classes = max(1, len(open_split(ensure_data(cfg.data), cfg.data.train_split).class_names))
        mesh = sharding.make_mesh(jax.devices()[:devices])
        _LIKE[key, devices] = train.build(cfg, n_classes, mesh).init_state(
            jax.random.PRNGKey(cfg.seed)
        )
    return _LIKE[key, devices]


def latest_step(workdir) -> int | None:
    """The step a restarted trainer would resume from (read-only)."""
    ck = checkpoint.Checkpointer(workdir, every=1, keep=1, read_only=True)
    try:
        return ck.latest_step()
    finally:
        ck.close()


def restore(workdir, step: int, cfg, devices: int) -> tuple[dict, dict]:
    """(train state as numpy, iterator state) of checkpoint `step`, through the trainer's
    own `Checkpointer.restore`, read-only (a reader never cleans a live run's folder).

    `cfg`: the run's config, or its list of overrides of the tiny config."""
    if isinstance(cfg, list):
        cfg = config(workdir, cfg)
    ck = checkpoint.Checkpointer(workdir, every=1, keep=1, read_only=True)
    try:
        state, data_state = ck.restore(step, _like(cfg, devices))
    finally:
        ck.close()
    return jax.device_get(state), data_state


def assert_bitwise_equal(a, b, what: str) -> None:
    la, ta = jax.tree.flatten_with_path(a)
    lb, tb = jax.tree.flatten_with_path(b)
    assert ta == tb, f"{what}: different tree structures"
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        name = jax.tree_util.keystr(path)
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}{name}: {x.dtype}{x.shape}"
        assert x.tobytes() == y.tobytes(), f"{what}{name} differs"


def assert_same_steps(
    run: dict[int, dict], ref: dict[int, dict], keys=("batch_hash", "loss", "lr")
) -> None:
    """Per step: the same batch (ids + augmentation key), the same loss and LR, exactly."""
    assert sorted(run) == sorted(ref), (sorted(run), sorted(ref))
    for step in sorted(ref):
        for k in keys:
            assert run[step][k] == ref[step][k], (step, k, run[step][k], ref[step][k])


def json_files_parse(workdir) -> None:
    """Every JSON file the trainer wrote is whole (written atomically)."""
    for name in ("config.json", "pretrain_clips.json", "encoder.json", "carbon.json"):
        path = Path(workdir) / name
        if path.exists():
            json.loads(path.read_text())
