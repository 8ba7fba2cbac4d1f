"""Kill-safety: SIGKILL `lusjax train` at random moments, many times, and check the
checkpoints each time.

Every trial starts the trainer on the same workdir (it resumes) and SIGKILLs it at a
moment drawn from a seeded RNG, in one of these modes:

  save     just after a `<step>.orbax-checkpoint-tmp` folder appears: inside an async
           save, its background write or its finalize (rename, old-step deletion);
  loop     anywhere in the training loop (with ckpt_every=1 mostly inside a save too);
  startup  before the loop: imports, restore, compilation;
  end      after the last step: the final save, close, encoder export.

After each kill, read-only (as a second process would see it):
  - the newest committed step restores, through the trainer's own `Checkpointer`, to
    exactly (bitwise) the state and iterator state an uninterrupted run saved at that
    step; temporary folders are never taken for a step;
  - it is never older than the newest committed step seen before (keep_ckpts=1: the one
    good checkpoint is deleted only after the next one has committed);
  - every JSON file in the workdir parses;
  - no process of the killed trainer lives on (its grain workers exit by themselves).
The next trainer start removes the temporary folders the kill left (it says so on
stderr). When a trial's trainer finishes on its own, the episode's whole metrics log
(per-step batch hash, loss, LR) and its final state must equal the uninterrupted run's;
a new episode starts in a fresh workdir.

Fast mode (CI): 3 trials. Long mode: `pytest -m slow tests/reliability/test_kill_safety.py`
(50 trials without workers, 10 with 2 grain workers, which must also leave no worker
process and nothing in /dev/shm behind).
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer_runs as tr

TOTAL = 12  # steps of an episode
DEVICES = 1  # checkpoint semantics do not depend on it; one device starts faster
MODES = ("save", "loop", "startup", "end")


def settings(workers: int, keep: int = 1):
    return tr.settings(TOTAL, ckpt_every=1, keep=keep, workers=workers)


class Reference:
    """An uninterrupted run keeping every checkpoint (what each step saved), its states
    restored lazily by step. With workers: the iterator state has grain's multi-worker
    form, so the reference has as many workers."""

    def __init__(self, root: Path, workers: int):
        self.workdir = root / f"reference{workers}"
        self.overrides = settings(workers, keep=TOTAL)
        tr.run(self.workdir, self.overrides, DEVICES, root / f"reference{workers}.log")
        self.records = tr.records(self.workdir)
        self._states = {}

    def __getitem__(self, step: int):
        if step not in self._states:
            self._states[step] = tr.restore(self.workdir, step, self.overrides, DEVICES)
        return self._states[step]


def _kill_at_random(proc, wd, mode: str, rng, startup_s: float) -> None:
    """SIGKILLs `proc` at a random moment of the phase `mode`."""
    if mode == "startup":
        time.sleep(rng.uniform(0, startup_s))
    elif mode == "save":
        before = set(tr.committed(wd)[1])
        tr.wait_until(lambda: set(tr.committed(wd)[1]) - before, proc)
        time.sleep(rng.uniform(0, 0.08))
    elif mode == "loop":
        n = len(tr.metrics.read(wd))
        tr.wait_until(lambda: len(tr.metrics.read(wd)) > n, proc)
        time.sleep(rng.uniform(0, 0.6))
    else:  # end
        tr.wait_until(lambda: tr.last_step(wd) >= TOTAL, proc)
        time.sleep(rng.uniform(0, 0.6))
    tr.kill(proc)


def run_trials(
    root: Path, ref: Reference, *, modes, workers: int, seed: int, finish: bool
) -> collections.Counter:
    """Kill trials in episodes (see the module docstring); returns counts of outcomes."""
    rng = np.random.default_rng(seed)
    over = settings(workers)
    stats = collections.Counter()
    episode, wd, newest, left, started = 0, None, None, set(), False
    shm_before = tr.shm()

    def new_episode():
        nonlocal episode, wd, newest, left, started
        episode += 1
        wd = root / f"episode{episode}"
        newest, left, started = None, set(), False

    def check_done(log):
        """A finished episode: exactly the uninterrupted run, no temporary folder left.
        (An older step may remain: a kill during its deletion, after the newest step
        committed, leaves part of it, and a finished run saves nothing that would delete
        it again.)"""
        steps, tmp = tr.committed(wd)
        assert not tmp and steps[-1] == TOTAL, (steps, tmp, tr.tail(log))
        tr.assert_same_steps(tr.records(wd), ref.records)
        state, data_state = tr.restore(wd, TOTAL, over, DEVICES)
        tr.assert_bitwise_equal(state, ref[TOTAL][0], f"episode {episode} final state")
        assert data_state == ref[TOTAL][1]
        assert (wd / "encoder.json").exists()

    new_episode()
    for trial, mode in enumerate(modes):
        log = root / f"trial{trial}.log"
        before, logged = tr.committed(wd)[0], len(tr.metrics.read(wd))
        proc = tr.start(wd, over, DEVICES, log)
        started = True
        _kill_at_random(proc, wd, mode, rng, startup_s=2.5)
        rc = proc.returncode
        steps, tmp = tr.committed(wd)
        # The start removed what the previous kill left (when it got that far).
        left = (left - tr.removed_by(log, left)) | set(tmp)
        trained = len(tr.metrics.read(wd)) > logged  # this trainer reached the loop
        if rc == 0:
            outcome = "finished"
        elif trained and tmp:  # (the start removes older ones before the loop)
            outcome = "killed mid-save"
        elif trained and len(steps) > 1 and steps != before:  # keep_ckpts=1
            outcome = "killed deleting the previous step"
        elif tr.last_step(wd) >= TOTAL:
            outcome = "killed after the last step"
        elif not trained:
            outcome = "killed before the loop"
        else:
            outcome = "killed between saves"
        stats[outcome] += 1
        stats[f"mode {mode}"] += 1

        # What a restart would find: the newest committed step, exactly as saved.
        tr.json_files_parse(wd)
        latest = steps[-1] if steps else None
        if newest is not None:
            assert latest is not None and latest >= newest, (
                f"trial {trial}: committed step {newest} was lost ({steps}, {tmp})\n" + tr.tail(log)
            )
        assert tr.latest_step(wd) == latest, (steps, tmp)  # what a restart restores
        if latest is not None:
            state, data_state = tr.restore(wd, latest, over, DEVICES)
            tr.assert_bitwise_equal(state, ref[latest][0], f"trial {trial} step {latest}")
            assert data_state == ref[latest][1], (trial, latest)
            assert int(state["step"]) == latest
        newest = latest

        # Nothing of a killed trainer lives on (grain workers exit with their parent).
        assert not (left_over := tr.wait_gone(log)), left_over

        if rc == 0:
            assert not left, left
            check_done(log)
            stats["episodes finished"] += 1
            new_episode()

    # The last episode, resumed to its end; also when its kills all came before the
    # first checkpoint committed (a loaded machine), so the run starts over.
    if finish and started:
        log = root / "finish.log"
        tr.run(wd, over, DEVICES, log)
        assert not left - tr.removed_by(log, left), left
        check_done(log)
        stats["episodes finished"] += 1
    if workers:
        deadline = time.time() + 20
        while tr.shm() - shm_before and time.time() < deadline:
            time.sleep(0.2)
        assert not tr.shm() - shm_before, sorted(tr.shm() - shm_before)
    return stats


def _report(stats, title):
    print(f"\n{title}: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))


def test_sigkill_at_random_moments_keeps_the_newest_committed_checkpoint(tmp_path):
    """CI: three kills (inside a save, in the loop, at startup), then the run is finished."""
    ref = Reference(tmp_path, workers=0)
    stats = run_trials(
        tmp_path, ref, modes=["save", "loop", "startup"], workers=0, seed=0, finish=True
    )
    _report(stats, "kill-safety (fast)")
    assert stats["episodes finished"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("workers, trials", [(0, 50), (2, 10)])
def test_sigkill_many_times(tmp_path, workers, trials):
    """Long mode: kills at random moments in every phase, episode after episode."""
    ref = Reference(tmp_path, workers)
    rng = np.random.default_rng(1000 + workers)
    modes = list(rng.choice(MODES, size=trials, p=[0.4, 0.3, 0.15, 0.15]))
    stats = run_trials(tmp_path, ref, modes=modes, workers=workers, seed=workers, finish=True)
    _report(stats, f"kill-safety ({trials} trials, {workers} workers)")
    killed = sum(v for k, v in stats.items() if k.startswith("killed"))
    assert killed + stats["finished"] == trials
    assert stats["killed mid-save"] >= trials // 5, stats  # the kills do land in saves
