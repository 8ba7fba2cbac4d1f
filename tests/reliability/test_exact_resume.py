"""Exact resume: a run killed mid-epoch and resumed equals the uninterrupted run, bit for
bit on CPU.

- `lusjax train` (8 devices) SIGKILLed mid-epoch and restarted, with 0 and with 2 grain
  workers: every step has the same batch (hash of the sample ids and the augmentation
  key, `config.log_batch_hash`), loss and learning rate as an uninterrupted run without
  workers, and the final train state (params, BN statistics, optimizer state with its
  schedule count, method state, rng) and the exported encoder are bitwise equal. The
  killed trainer's grain workers exit, and /dev/shm holds nothing more afterwards.
- BYOL (EMA teacher), MoCo v2 (EMA key encoder + queue) and SwAV (queue): a run resumed
  from its step-2 checkpoint (the workdir as a kill after that commit leaves it: the
  later checkpoint and log lines removed) ends exactly where the uninterrupted run does,
  method state included (in-process, to keep CI short).
- Grain workers are started with spawn, never by forking this process (which runs JAX).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer_runs as tr
from test_train import method_config

from lusjax import checkpoint, train
from lusjax.app.default_data import ensure_data
from lusjax.data import pipeline

TOTAL, EVERY, KILL_AFTER = 8, 4, 5  # 3 steps per epoch: the step-4 checkpoint is mid-epoch


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, no workers."""
    wd = tmp_path_factory.mktemp("resume_ref") / "run"
    over = tr.settings(TOTAL, ckpt_every=EVERY, keep=2)
    tr.run(wd, over, 8, wd.parent / "log.txt")
    return wd, over


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_and_resume_is_exact(reference, tmp_path, workers):
    ref, ref_over = reference
    over = tr.settings(TOTAL, ckpt_every=EVERY, keep=2, workers=workers)
    cfg = tr.config(tmp_path, over)
    per_epoch = pipeline.steps_per_epoch(ensure_data(cfg.data), "train", cfg.data, cfg.batch_size)
    assert EVERY % per_epoch, "the resume point must fall inside an epoch"
    shm_before = tr.shm()
    run, log = tmp_path / "run", tmp_path / "killed.log"

    proc = tr.start(run, over, 8, log)
    reached = tr.wait_until(lambda: tr.committed(run)[0] and tr.last_step(run) >= KILL_AFTER, proc)
    rc = tr.kill(proc)
    assert reached and rc == -9, f"the run ended before it could be killed:\n{tr.tail(log)}"
    assert tr.committed(run)[0][-1] == EVERY and not (run / "encoder.json").exists()
    assert not tr.wait_gone(log), "a process of the killed trainer lives on"

    log2 = tmp_path / "resumed.log"
    tr.run(run, over, 8, log2)
    assert f"resumed from step {EVERY}" in tr.tail(log2)
    tr.assert_same_steps(tr.records(run), tr.records(ref))
    got, got_iter = tr.restore(run, TOTAL, over, 8)
    want, want_iter = tr.restore(ref, TOTAL, ref_over, 8)
    tr.assert_bitwise_equal(got, want, "final state")
    if not workers:  # with workers grain's iterator state has another (per-worker) form
        assert got_iter == want_iter
    tr.assert_bitwise_equal(
        checkpoint.load_encoder(run).variables, checkpoint.load_encoder(ref).variables, "encoder"
    )
    if workers:
        assert not tr.wait_gone(log2)
        deadline = time.time() + 10
        while tr.shm() - shm_before and time.time() < deadline:
            time.sleep(0.2)
        assert not tr.shm() - shm_before, sorted(tr.shm() - shm_before)


# ----------------------------------------------------------------------------
# Method state: EMA teacher, queues.
# ----------------------------------------------------------------------------

METHOD_STATE = {
    "byol": {"target"},
    "mocov2": {"target", "queue", "queue_ptr"},
    "swav": {"queue", "queue_ptr", "queue_count"},
}


def _cut_after(src: Path, dst: Path, step: int) -> None:
    """`src` as a kill right after checkpoint `step` committed would have left it."""
    shutil.copytree(src, dst)
    for d in (dst / "checkpoints").iterdir():
        if d.name.isdigit() and int(d.name) > step:
            shutil.rmtree(d)
    for name in ("encoder", "encoder.json", "carbon.json"):
        p = dst / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    lines = (dst / "metrics.jsonl").read_text().splitlines()
    kept = [x for x in lines if json.loads(x)["step"] <= step]
    (dst / "metrics.jsonl").write_text("".join(x + "\n" for x in kept))


@pytest.mark.parametrize("method", sorted(METHOD_STATE))
def test_resume_restores_the_method_state(tmp_path, method):
    extra = [
        ("total_steps", "4"),
        ("ckpt_every", "2"),
        ("keep_ckpts", "2"),
        ("log_batch_hash", "true"),
        ("carbon.measure", "false"),
    ]
    ref = tmp_path / "ref"
    cfg = method_config(method, ref, *extra)  # tiny dims; MoCo and SwAV queues of 64
    train.train(cfg, progress=False)
    run = tmp_path / "run"
    _cut_after(ref, run, 2)
    with cfg.unlocked():
        cfg.workdir = str(run)
    train.train(cfg, progress=False)

    tr.assert_same_steps(tr.records(run), tr.records(ref))
    got, _ = tr.restore(run, 4, cfg, 8)
    want, _ = tr.restore(ref, 4, cfg, 8)
    tr.assert_bitwise_equal(got, want, f"{method} final state")
    # The compared state did evolve after the resume point: a method state that was not
    # restored (re-initialised, or kept outside the checkpoint) would show.
    state, before = got["method_state"], tr.restore(ref, 2, cfg, 8)[0]["method_state"]
    assert METHOD_STATE[method] <= set(state), sorted(state)
    for key in {"target", "queue"} & set(state):
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(state[key]), jax.tree.leaves(before[key]))
        ), key


# ----------------------------------------------------------------------------
# Grain workers: spawned, not forked from this JAX process.
# ----------------------------------------------------------------------------


def test_grain_workers_are_spawned_not_forked(monkeypatch):
    """This process runs JAX (8 devices): forking it could deadlock a worker. No os.fork
    while the workers start, and their command line is multiprocessing's spawn entry."""
    jax.devices()  # JAX is initialised here
    cfg = tr.tiny_config("/unused").data
    with cfg.unlocked():
        cfg.workers = 2

    def no_fork():
        raise AssertionError("os.fork() called in a process that runs JAX")

    monkeypatch.setattr(os, "fork", no_fork)
    it = pipeline.train_iterator(ensure_data(cfg), "train", cfg, global_batch_size=16, seed=0)
    try:
        batch = next(it)
        assert batch["view1"].shape[0] == 16
        workers = [p for p in tr.children(os.getpid()) if "spawn_main" in tr.cmdline(p)]
        assert len(workers) == 2, [tr.cmdline(p) for p in tr.children(os.getpid())]
        assert all("--multiprocessing-fork" in tr.cmdline(p) for p in workers)
    finally:
        it.close()
