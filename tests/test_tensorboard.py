"""TensorBoard events beside metrics.jsonl: every logged key as a scalar at every logged
step, read back from the event files; a resume keeps each step once; off = no events."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_train import tiny_config

from lusjax import layout, metrics, tb_events, train

pytest.importorskip("tensorboardX")


def _scalars_equal_jsonl(run):
    recs = metrics.read(run)
    scalars = tb_events.read_scalars(run)
    numeric = {
        k
        for r in recs
        for k, v in r.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    assert {"loss", "lr", "images_per_s", "probe_acc", "model_kwh"} <= numeric
    assert numeric <= set(scalars), numeric - set(scalars)
    for key in numeric:
        want = [(r["step"], float(r[key])) for r in recs if isinstance(r.get(key), (int, float))]
        got = scalars[key]
        assert [s for s, _ in got] == [s for s, _ in want], key  # each logged step once
        np.testing.assert_allclose(
            [v for _, v in got], [v for _, v in want], rtol=1e-6, err_msg=key
        )
    return recs, scalars


def test_train_writes_events_and_a_resume_does_not_duplicate_steps(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tiny_config(
        run, ("total_steps", "3"), ("ckpt_every", "2"), ("metrics.tensorboard", "True")
    )
    train.train(cfg, progress=False)
    recs, scalars = _scalars_equal_jsonl(run)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert len(tb_events.event_files(run)) == 1
    images = [
        v.tag for e in tb_events.read_events(run) for v in e.summary.value if v.HasField("image")
    ]
    assert images == ["augmented/view1_view2"]  # the preview, at the first log step

    # Resume from step 2: step 3 is redone, and must not appear twice.
    shutil.rmtree(run / "checkpoints" / "3")
    capsys.readouterr()
    train.train(cfg, progress=False)
    out = capsys.readouterr().out
    assert "resumed from step 2" in out
    assert "TensorBoard events of steps after 2 (redone now)" in out
    recs, scalars = _scalars_equal_jsonl(run)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3]
    assert len(tb_events.event_files(run)) == 2  # one file per run segment
    discarded = list((run / layout.TB_DISCARDED_DIR).iterdir())
    assert len(discarded) == 1 and "tfevents" not in discarded[0].name


def test_tensorboard_off_writes_no_events(tmp_path):
    run = tmp_path / "run"
    train.train(
        tiny_config(run, ("total_steps", "1"), ("metrics.tensorboard", "False")), progress=False
    )
    assert metrics.read(run) and not (run / layout.TB_DIR).exists()


def test_discard_after_trims_events_and_a_torn_tail(tmp_path):
    w = tb_events.Writer(tmp_path)
    for step in range(1, 6):
        w.write_scalars(step, {"loss": 1.0 / step})
    w.close()
    (path,) = tb_events.event_files(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x07\x00\x00")  # a killed writer's last bytes
    assert tb_events.discard_after(tmp_path, 3) == 2
    assert [s for s, _ in tb_events.read_scalars(tmp_path)["loss"]] == [1, 2, 3]
    assert tb_events.discard_after(tmp_path, 3) == 0  # nothing left to trim
    assert json.dumps(tb_events.read_scalars(tmp_path))  # plain numbers


def test_a_failed_event_write_warns_once_and_stops_the_events(tmp_path, capsys, monkeypatch):
    import errno

    w = tb_events.Writer(tmp_path)
    w.write_scalars(1, {"loss": 1.0})
    w.flush()

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(w._w), "flush", full)
    w.write_scalars(2, {"loss": 0.5})
    w.flush()  # fails: one warning, then the writer is off
    w.write_scalars(3, {"loss": 0.25})
    w.flush()
    w.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorBoard events stop here" in err[0]
    assert "No space left on device" in err[0]
    assert tb_events.read_scalars(tmp_path)["loss"][0][0] == 1


def test_tensorboards_own_reader_sees_the_jsonl_values(tmp_path):
    """TensorBoard's event_processing (what `tensorboard --logdir` uses) reads the same
    scalar values as metrics.jsonl, each logged step once."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    run = tmp_path / "run"
    train.train(
        tiny_config(run, ("total_steps", "3"), ("metrics.tensorboard", "True")), progress=False
    )
    acc = event_accumulator.EventAccumulator(
        str(run / layout.TB_DIR), size_guidance={event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    for key in ("loss", "lr", "images_per_s"):
        want = [(r["step"], float(r[key])) for r in metrics.read(run)]
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want], key
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)
