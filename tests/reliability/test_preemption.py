"""Preemption: SIGTERM and SIGINT at exact moments of `lusjax train`, then resume.

One workdir, one run after another, each stopped by a signal that the trainer sends
itself at a chosen point (`LUSJAX_TEST_SIGNAL_AT`, lusjax/preemption.py): during
compilation, during a step, during a log step (the moment whose signal used to be
obeyed without saving), while an async save is in flight, and right after the last
step; plus one SIGKILL between checkpoints, after which the redone steps' metrics
lines must go. Every time:
  - the exit status is 3 (0 after the last step: the run is finished) and the
    message names the step that is committed on disk (no "done:");
  - that step restores bitwise to what an uninterrupted run saved at that step,
    iterator state included;
and at the end every step appears once in metrics.jsonl, with the same batch hash,
loss and LR as the uninterrupted run, the final state is bitwise equal, and
carbon.json holds one segment per run with totals equal to their sums.
A signal before any step of a fresh run exits 3 saying nothing was saved, and
writes no run file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer_runs as tr

from lusjax import carbon, layout, metrics, preemption
from lusjax.errors import PREEMPTED_EXIT

TOTAL, EVERY, DEVICES = 12, 4, 1
# (signal@point:step, the step it must save; None: the run finishes, exit 0)
TRIALS = [
    ("TERM@compile:1", 1),  # no step done yet when it comes: the first one is saved
    ("TERM@step:3", 3),  # during step 3
    ("INT@log:5", 6),  # during the log of step 5, after the step's flag reading
    ("TERM@save:8", 9),  # while step 8's async save is in flight
    ("KILL@log:11", None),  # SIGKILL: step 10 is logged, never saved
    ("INT@end:12", None),
]  # after the last step: finished


def _settings():
    return tr.settings(TOTAL, ckpt_every=EVERY, keep=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, every step's checkpoint kept."""
    wd = tmp_path_factory.mktemp("preempt_ref") / "run"
    over = tr.settings(TOTAL, ckpt_every=1, keep=TOTAL)
    tr.run(wd, over, DEVICES, wd.parent / "log.txt")
    return wd, over


def _run(wd: Path, signal_at: str, log: Path) -> int:
    os.environ[preemption.TEST_ENV] = signal_at  # the trainer inherits it
    try:
        proc = tr.start(wd, _settings(), DEVICES, log)
    finally:
        del os.environ[preemption.TEST_ENV]
    return proc.wait(300)


def test_signals_at_exact_moments_save_the_step_they_name(reference, tmp_path):
    ref, ref_over = reference
    ref_records = tr.records(ref)
    wd = tmp_path / "run"
    for i, (signal_at, want) in enumerate(TRIALS):
        log = tmp_path / f"trial{i}.log"
        rc = _run(wd, signal_at, log)
        out = tr.tail(log, 100_000)
        assert "done:" not in out or want is None, out
        if signal_at.startswith("KILL"):
            assert rc == -9, out
            continue
        if want is None:
            assert rc == 0 and "done: step 12" in out, out
            continue
        sig = f"SIG{signal_at.split('@')[0]}"
        line = (
            f"lusjax: preempted ({sig}): saved step {want} in {wd / 'checkpoints'}; "
            "rerun the same command to resume"
        )
        assert rc == PREEMPTED_EXIT and line in out.splitlines(), (rc, out)
        steps, tmp = tr.committed(wd)
        assert steps[-1] == want and not tmp, (steps, tmp)
        assert tr.latest_step(wd) == want
        state, data_state = tr.restore(wd, want, _settings(), DEVICES)
        want_state, want_data = tr.restore(ref, want, ref_over, DEVICES)
        tr.assert_bitwise_equal(state, want_state, f"{signal_at}: step {want}")
        assert data_state == want_data
        assert not (wd / "encoder.json").exists()
        assert not tr.wait_gone(log)

    # Every step once, as in the uninterrupted run; step 10's line (killed) moved aside.
    steps = [r["step"] for r in metrics.read(wd)]
    assert steps == list(range(1, TOTAL + 1)), steps
    tr.assert_same_steps(tr.records(wd), ref_records)
    discarded = [
        json.loads(x)["step"] for x in (wd / layout.METRICS_DISCARDED).read_text().splitlines()
    ]
    assert discarded == [10], discarded
    state, _ = tr.restore(wd, TOTAL, _settings(), DEVICES)
    tr.assert_bitwise_equal(state, tr.restore(ref, TOTAL, ref_over, DEVICES)[0], "final")
    assert json.loads((wd / "encoder.json").read_text())["step"] == TOTAL

    # carbon.json: a segment per run that trained (the SIGKILLed one recorded nothing).
    ledger = json.loads((wd / "carbon.json").read_text())
    exits = [s["exit"] for s in ledger["segments"]]
    assert exits == [
        "preempted (SIGTERM)",
        "preempted (SIGTERM)",
        "preempted (SIGINT)",
        "preempted (SIGTERM)",
        "finished",
    ], exits
    assert [s["steps"] for s in ledger["segments"]] == [[0, 1], [1, 3], [3, 6], [6, 9], [9, 12]]
    for k in ("time_s", "model_kwh", "model_kg_co2e"):
        parts = [s["total"][k] for s in ledger["segments"]]
        assert ledger["totals"]["total"][k] == pytest.approx(sum(parts), rel=1e-12)
    assert ledger == carbon.read_ledger(wd)


def test_a_signal_before_any_step_saves_nothing_and_says_so(tmp_path):
    wd = tmp_path / "run"
    log = tmp_path / "log"
    rc = _run(wd, "TERM@setup:0", log)
    out = tr.tail(log)
    assert rc == PREEMPTED_EXIT, out
    assert (
        "lusjax: preempted (SIGTERM): no step done; nothing saved; rerun the same command to start"
    ) in out.splitlines(), out
    assert tr.committed(wd) == ([], [])
    left = sorted(p.name for p in wd.iterdir())
    assert left == ["checkpoints"], left  # no config.json, metrics or lock file


def test_slurm_requeues_a_task_that_exits_3(tmp_path):
    """launch/slurm.sh inside a job: exit 3 -> `scontrol requeue $SLURM_JOB_ID`, status kept;
    other statuses are not requeued. srun and scontrol are stand-ins."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text('#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n')
    (bin_ / "scontrol").write_text('#!/bin/bash\necho "$@" >> "$SCONTROL_LOG"\n')
    (bin_ / "trainer").write_text('#!/bin/bash\nexit "$FAKE_RC"\n')
    for p in bin_.iterdir():
        p.chmod(0o755)
    log = tmp_path / "scontrol.log"
    for rc, requeued in ((3, "requeue 77\n"), (0, ""), (2, "")):
        env = {
            **os.environ,
            "PATH": f"{bin_}:{os.environ['PATH']}",
            "SLURM_JOB_ID": "77",
            "LUSJAX_BIN": "trainer",
            "SCONTROL_LOG": str(log),
            "FAKE_RC": str(rc),
        }
        r = subprocess.run(
            ["bash", str(tr.ROOT / "launch/slurm.sh"), "--", "--config", "c.py"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == rc, r.stderr
        assert (log.read_text() if log.exists() else "") == requeued
        log.unlink(missing_ok=True)
