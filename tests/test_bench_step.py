"""`lusjax bench step`: one compile, a record per input, JSON lines and a Markdown table."""

import json
from pathlib import Path

from lusjax import cli

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--config.data.synthetic.n_clips=12",
    "--config.data.synthetic.n_frames=8",
    "--config.data.synthetic.size=32",
    "--config.image_size=32",
    "--config.aug.size=32",
    "--config.ssl.proj_hidden_dim=32",
    "--config.ssl.proj_dim=16",
]


def test_bench_step_synthetic_and_pipeline(capsys):
    rc = cli.main(
        [
            "bench",
            "step",
            "--config",
            str(ROOT / "configs/quickstart.py"),
            "--batch-size",
            "16",
            "--input",
            "synthetic,pipeline",
            "--workers",
            "0",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--markdown",
            *TINY,
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    recs = [json.loads(x) for x in out if x.startswith("{")]
    assert [r["input"] for r in recs] == ["synthetic", "pipeline (0 workers)"]
    for r in recs:
        assert r["batch_size"] == 16 and r["images_per_s"] > 0 and r["step_ms"] > 0
        assert r["compile_s"] == recs[0]["compile_s"]  # compiled once, reused
    assert any(x.startswith("| method") for x in out)


def test_bench_step_flops_are_for_the_whole_step(capsys):
    """The lowered shard_map body is per device: step_tflops counts all devices, so it
    doubles with the global batch whatever the device count."""
    rc = cli.main(
        [
            "bench",
            "step",
            "--config",
            str(ROOT / "configs/quickstart.py"),
            "--batch-size",
            "16,32",
            "--steps",
            "1",
            "--warmup",
            "1",
            *TINY,
        ]
    )
    assert rc == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    small, big = (r["step_tflops"] for r in recs)
    assert 1.9 < big / small < 2.1


def test_bench_step_with_worker_side_aug_times_the_step_without_augmentation(capsys):
    """Views arrive augmented (float32, as the workers deliver them): the step skips the
    on-device augmentation, and the pipeline input runs the same compiled step."""
    args = [
        "bench",
        "step",
        "--config",
        str(ROOT / "configs/quickstart.py"),
        "--batch-size",
        "16",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--config.aug.size=24",
        *TINY,
    ]
    assert cli.main(args) == 0
    on_device = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x[:1] == "{"]
    assert (
        cli.main(
            [
                *args,
                "--input",
                "synthetic,pipeline",
                "--workers",
                "0",
                "--config.data.worker_side_aug=True",
            ]
        )
        == 0
    )
    host = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x[:1] == "{"]
    assert on_device[0]["device_aug"] and not any(r["device_aug"] for r in host)
    assert [r["input"] for r in host] == ["synthetic", "pipeline (0 workers)"]
    assert host[0]["compile_s"] == host[1]["compile_s"]  # float32 views both times


def test_bench_step_bad_input_is_a_user_error(capsys):
    rc = cli.main(
        [
            "bench",
            "step",
            "--config",
            str(ROOT / "configs/quickstart.py"),
            "--batch-size",
            "16",
            "--input",
            "disk",
            "--steps",
            "1",
            *TINY,
        ]
    )
    assert rc == 2
    assert "--input must be synthetic or pipeline" in capsys.readouterr().err


def test_flops_fall_back_to_the_cpu_analysis_of_the_same_hlo():
    """GPU plugins raise in Lowered.cost_analysis: the CPU backend's analysis of the
    same HLO gives the same count as the lowered analysis does on CPU."""
    import jax
    import jax.numpy as jnp

    from lusjax.app import bench_step

    lowered = jax.jit(lambda x: jnp.tanh(x @ x)).lower(jnp.ones((64, 64)))
    direct = bench_step._flops(lowered)
    assert direct >= 2 * 64**3

    class NoAnalysis:  # what a PJRT C API plugin looks like from here
        def cost_analysis(self):
            raise NotImplementedError

        def compiler_ir(self, dialect):
            return lowered.compiler_ir(dialect)

    assert bench_step._flops(NoAnalysis()) == direct


def test_peer_table_puts_both_lusjax_steps_beside_the_peer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("table", ROOT / "benchmarks/table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    key = {"model": "resnet18", "image_size": 224, "batch_size": 256}
    lines = table.rows(
        [
            {**key, "images_per_s": 1200.0, "mfu": 0.2, "peak_mem_gib": 9.0},
            {**key, "images_per_s": 1500.0, "device_aug": False},
            {**key, "images_per_s": 1000.0, "framework": "torch", "peak_mem_gib": 8.0},
        ]
    )
    assert lines[2] == (
        "| resnet18 224 b256 | 1,000 img/s | 1,200 img/s | 1.20x | 1,500 img/s "
        "| 1.50x | 0.2 | 9.0 / 8.0 |"
    )


def test_peer_table_of_a_missing_file_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/table.py"), str(tmp_path / "no.jsonl")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("table.py: cannot read")
