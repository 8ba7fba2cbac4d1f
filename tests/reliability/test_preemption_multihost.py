"""Preemption of a multi-host run: a signal that reaches one process stops them all at the
same step. `lusjax train` as 2 joined processes x 2 CPU devices (as in test_liveness.py);
only process 1 gets SIGTERM (the LUSJAX_TEST_SIGNAL_AT hook, in its environment alone),
during step 3: both agree on it, save step 3 together and exit 3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer_runs as tr
from test_multihost import child_env, free_port
from test_train import TINY

from lusjax import preemption
from lusjax.errors import PREEMPTED_EXIT


def test_a_signal_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    wd = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "lusjax.cli",
        "train",
        "--quiet",
        "--config",
        str(tr.ROOT / "configs/quickstart.py"),
        f"--config.workdir={wd}",
        "--config.total_steps=8",
        "--config.ckpt_every=0",
        "--config.watchdog_s=120",
        "--config.carbon.measure=false",
        *[f"--config.{k}={v}" for k, v in TINY],
    ]
    port = free_port()
    extra = {
        "LUSJAX_CACHE": str(tmp_path / "cache"),
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        hook = {preemption.TEST_ENV: "TERM@step:3"} if i == 1 else {}
        with open(log, "w") as f:  # files, not pipes: a full pipe could stall a collective
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=child_env(2, i, port, 2, **extra, **hook),
                    cwd=tr.ROOT,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        results = [(p.wait(timeout=300), tr.tail(log, 100_000)) for p, log in zip(procs, logs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    line = (
        f"lusjax: preempted (SIGTERM): saved step 3 in {wd / 'checkpoints'}; rerun the "
        "same command to resume"
    )
    for rc, err in results:
        assert rc == PREEMPTED_EXIT and line in err.splitlines(), (rc, err[-3000:])
    assert tr.committed(wd) == ([3], [])
    assert [r["step"] for r in tr.metrics.read(wd)] == [1, 2, 3]  # written by process 0
