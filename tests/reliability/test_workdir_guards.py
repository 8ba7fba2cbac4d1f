"""What guards a workdir: one trainer at a time, a resume with the config it was trained
with, no run file from a run that failed before training, and one error line for a
workdir that cannot be written. In-process (`cli.main`) on the tiny config, except the
read-only workdir, which needs a user that permissions apply to."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from test_train import TINY

from lusjax import cli, layout, preemption, workdir_lock

ROOT = Path(__file__).resolve().parents[2]


def _train(wd, *extra: str) -> list[str]:
    return [
        "train",
        "--quiet",
        "--config",
        str(ROOT / "configs/quickstart.py"),
        f"--config.workdir={wd}",
        *[f"--config.{k}={v}" for k, v in TINY],
        "--config.carbon.measure=false",
        "--config.ckpt_every=2",
        *extra,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lusjax: error: "), err
    return err


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_second_trainer_is_refused_naming_the_holder(tmp_path, capsys):
    wd = tmp_path / "run"
    with workdir_lock.hold(wd):
        assert cli.main(_train(wd, "--config.total_steps=2")) == 2
        err = _one_error_line(capsys)
        assert (
            f"{wd} is in use by pid {os.getpid()} on host {socket.gethostname()} since" in err
            and "wait for it or stop it" in err
        ), err
        assert not (wd / "config.json").exists()
    assert not (wd / layout.TRAINER_LOCK).exists()  # released


def test_stale_lock_is_taken_over_and_resume_checks_the_config(tmp_path, capsys):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / layout.TRAINER_LOCK).write_text(
        json.dumps(
            {"host": socket.gethostname(), "pid": _dead_pid(), "since": "earlier", "command": "x"}
        )
    )
    handlers = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    assert cli.main(_train(wd, "--config.total_steps=2")) == 0
    assert "lusjax: taking over" in capsys.readouterr().err
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == handlers  # given back
    assert not (wd / layout.TRAINER_LOCK).exists()
    saved = (wd / "config.json").read_text()

    # Settings that change the training: refused, each listed, nothing written.
    assert (
        cli.main(
            _train(
                wd, "--config.total_steps=3", "--config.optim.lr=0.5", "--config.aug.flip_prob=0.0"
            )
        )
        == 2
    )
    err = _one_error_line(capsys)
    assert "optim.lr: 1.0 -> 0.5" in err and "aug.flip_prob: 0.5 -> 0.0" in err, err
    assert "total_steps" not in err and "allow_config_change=True" in err
    assert (wd / "config.json").read_text() == saved

    # Settings that may change: resumed, and recorded.
    assert (
        cli.main(
            _train(wd, "--config.total_steps=3", "--config.data.prefetch=1", "--config.log_every=2")
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "config changed since the last run segment: total_steps: 2 -> 3" in out, out
    # allow_config_change=True resumes with the changes (and records them).
    assert (
        cli.main(
            _train(
                wd,
                "--config.total_steps=4",
                "--config.optim.lr=0.5",
                "--config.allow_config_change=True",
            )
        )
        == 0
    )
    segments = json.loads((wd / "carbon.json").read_text())["segments"]
    assert segments[1]["config_changes"] == [
        "data.prefetch: 2 -> 1",
        "log_every: 1 -> 2",
        "total_steps: 2 -> 3",
    ]
    assert "optim.lr: 1.0 -> 0.5" in segments[2]["config_changes"]
    assert json.loads((wd / "config.json").read_text())["optim"]["lr"] == 0.5


def test_a_run_that_fails_before_training_leaves_no_run_file(tmp_path, capsys):
    wd = tmp_path / "run"
    assert cli.main(_train(wd, "--config.data.data_dir=/nonexistent")) == 2
    assert "not a lusjax dataset" in _one_error_line(capsys)
    assert list(wd.iterdir()) == []


def test_unwritable_paths_are_one_error_line(tmp_path, capsys):
    # A file where the workdir should be, or a folder in place of config.json.
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(_train(blocker / "run")) == 2
    assert f"cannot write {blocker / 'run'}: Not a directory" in _one_error_line(capsys)
    wd = tmp_path / "run"
    (wd / "config.json").mkdir(parents=True)
    assert cli.main(_train(wd, "--config.total_steps=1")) == 2
    assert f"cannot write {wd / 'config.json'}: Is a directory" in _one_error_line(capsys)


@contextlib.contextmanager
def _read_only(folder: Path):
    """`folder` made unwritable: mode 555, or for root (whom modes do not stop) the
    immutable attribute; skips the test where neither is possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if (
        shutil.which("chattr") is None
        or subprocess.run(
            ["chattr", "+i", str(folder)], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("cannot make a folder read-only for root here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_workdir_is_one_error_line(tmp_path, capsys):
    wd = tmp_path / "ro"
    wd.mkdir()
    with _read_only(wd):
        assert cli.main(_train(wd)) == 2
        assert _one_error_line(capsys).startswith(
            f"lusjax: error: cannot write {wd / layout.TRAINER_LOCK}: "
        )
        assert cli.main(_train(wd / "run")) == 2
        assert _one_error_line(capsys).startswith(f"lusjax: error: cannot write {wd / 'run'}: ")


def test_stop_signals_restores_handlers_and_never_raises():
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with preemption.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
        assert stop.signal == "SIGINT"
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
    # Outside the main thread no handler can be installed: signals keep their meaning.
    seen = []
    t = threading.Thread(target=lambda: seen.append(preemption.StopSignals().__enter__()))
    t.start()
    t.join()
    assert seen[0].signal is None and {s: signal.getsignal(s) for s in preemption.SIGNALS} == before


def test_sweep_counts_exit_3_as_resumable_not_failed(tmp_path):
    from lusjax import sweep_plan

    (tmp_path / layout.RUN_RC).write_text("3\n")
    assert sweep_plan.run_status(str(tmp_path))[0] == "partial"
