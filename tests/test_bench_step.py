"""`lusjax bench step`: one compile, a record per input, JSON lines and a Markdown table."""

import json
from pathlib import Path

from lusjax import cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--config.data.synthetic.n_clips=12", "--config.data.synthetic.n_frames=8",
        "--config.data.synthetic.size=32", "--config.image_size=32", "--config.aug.size=32",
        "--config.ssl.proj_hidden_dim=32", "--config.ssl.proj_dim=16"]


def test_bench_step_synthetic_and_pipeline(capsys):
    rc = cli.main(["bench", "step", "--config", str(ROOT / "configs/quickstart.py"),
                   "--batch-size", "16", "--input", "synthetic,pipeline", "--workers", "0",
                   "--steps", "2", "--warmup", "1", "--markdown", *TINY])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    recs = [json.loads(x) for x in out if x.startswith("{")]
    assert [r["input"] for r in recs] == ["synthetic", "pipeline (0 workers)"]
    for r in recs:
        assert r["batch_size"] == 16 and r["images_per_s"] > 0 and r["step_ms"] > 0
        assert r["compile_s"] == recs[0]["compile_s"]  # compiled once, reused
    assert any(x.startswith("| method") for x in out)


def test_bench_step_bad_input_is_a_user_error(capsys):
    rc = cli.main(["bench", "step", "--config", str(ROOT / "configs/quickstart.py"),
                   "--batch-size", "16", "--input", "disk", "--steps", "1", *TINY])
    assert rc == 2
    assert "--input must be synthetic or pipeline" in capsys.readouterr().err
