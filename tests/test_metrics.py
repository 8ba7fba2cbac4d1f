"""The JSONL metrics writer."""

import json

import numpy as np

from lusjax import layout, metrics


def test_writer_appends_json_lines_with_step_and_wall_time(tmp_path):
    w = metrics.MetricsWriter(tmp_path)
    w.write(1, {"loss": np.float32(2.5)})
    w.write(2, {"loss": float("nan")}, lr=0.1)
    lines = (tmp_path / layout.METRICS_FILE).read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == 2.5 and "wall_time" in recs[0]
    assert recs[1]["loss"] == "nan" and recs[1]["lr"] == 0.1


def test_disabled_writer_writes_nothing(tmp_path):
    metrics.MetricsWriter(tmp_path, enabled=False).write(1, {"loss": 1.0})
    assert not (tmp_path / layout.METRICS_FILE).exists()


def test_read_skips_a_torn_last_line(tmp_path):
    (tmp_path / layout.METRICS_FILE).write_text('{"step": 1}\n{"step": 2, "lo')
    assert metrics.read(tmp_path) == [{"step": 1}]


def test_discard_after_moves_redone_steps_aside(tmp_path):
    """A run resumed from step 2 redoes 3 and 4: their lines (and a torn one) move to
    metrics.jsonl.discarded, appended, so each step appears once."""
    path = tmp_path / layout.METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4}\n{"step": 5, "lo')
    assert metrics.discard_after(tmp_path, 2) == 3
    assert metrics.read(tmp_path) == [{"step": 1}, {"step": 2}]
    metrics.MetricsWriter(tmp_path).write(3, {"loss": 1.0})
    assert [r["step"] for r in metrics.read(tmp_path)] == [1, 2, 3]
    assert metrics.discard_after(tmp_path, 0) == 3
    moved = (tmp_path / layout.METRICS_DISCARDED).read_text().splitlines()
    assert [line[:11] for line in moved] == [
        '{"step": 3}',
        '{"step": 4}',
        '{"step": 5,',
        '{"step": 1}',
        '{"step": 2}',
        '{"step": 3,',
    ]
    assert metrics.discard_after(tmp_path / "none", 0) == 0  # no metrics yet
