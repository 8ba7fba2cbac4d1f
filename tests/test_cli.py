"""The `lusjax` command: help for every subcommand, one-line errors on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from lusjax import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    "quickstart",
    "prep",
    "train",
    "probe",
    "eval",
    "predict",
    "report",
    "sweep",
    "sweep-report",
]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for c in COMMANDS + ["bench"]:
        assert c in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--config", "configs/nope.py"], "config file not found"),
        (
            ["train", "--config", "configs/quickstart.py", "--config.batch_sise=4"],
            "unknown config key 'batch_sise'",
        ),
        (
            [
                "train",
                "--config",
                "configs/quickstart.py",
                "--config.method=dino",
                "--config.workdir=/tmp/lusjax-test-unused",
            ],
            "unknown SSL method 'dino'",
        ),
        (
            [
                "train",
                "--config",
                "configs/quickstart.py",
                "--config.model.name=vit",
                "--config.workdir=/tmp/lusjax-test-unused",
            ],
            "unknown backbone 'vit'",
        ),
        (
            [
                "train",
                "--config",
                "configs/quickstart.py",
                "--config.data.data_dir=/nonexistent",
                "--config.workdir=/tmp/lusjax-test-unused",
            ],
            "not a lusjax dataset",
        ),
        (["report", "/nonexistent/run"], "no metrics"),
        (["probe", "/nonexistent/run"], "/nonexistent/run does not exist"),
        (["eval", "--config.encoder=/nonexistent/run"], "/nonexistent/run does not exist"),
        (
            ["config", "show", "configs/quickstart.py", "--config.learning_rate=1"],
            "did you mean optim.lr",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lusjax: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_runs_as_a_process():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lusjax.cli",
            "train",
            "--config",
            "configs/quickstart.py",
            "--config.batch_size=x",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == ("lusjax: error: --config.batch_size expects an integer, got 'x'")


def test_version(capsys):
    from lusjax import __version__

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"lusjax {__version__}"


def test_config_show_prints_the_resolved_config(capsys, monkeypatch):
    import json

    monkeypatch.chdir(ROOT)
    assert (
        cli.main(["config", "show", "configs/simclr_resnet.py:r50", "--config.batch_size=512"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("# configs/simclr_resnet.py:r50 with 1 override(s), resolved (YAML")
    assert "\nbatch_size: 512\n" in out and '  name: "resnet50"' in out
    assert cli.main(["config", "show", "configs/eval.py:quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "linear,knn"


def test_an_exported_encoder_is_missing_from_an_existing_workdir(tmp_path):
    from lusjax import checkpoint
    from lusjax.errors import UserError

    with pytest.raises(UserError, match="exists but has no exported encoder"):
        checkpoint.load_encoder(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load_encoder(tmp_path / "nope")


def test_probe_prints_a_rounded_table_naming_its_splits():
    from lusjax.app.probe import probe_table

    row = {
        "frame_accuracy": 0.8000000000000002,
        "clip_accuracy": 0.7,
        "n_train_clips": 67,
        "n_train_frames": 1072,
        "n_test_clips": 15,
        "n_test_frames": 240,
        "clip_balanced_accuracy": 2 / 3,
    }
    text = probe_table(
        {
            "ssl": row,
            "random_init": dict(row, frame_accuracy=0.4),
            "data_dir": "/d",
            "train_split": "train",
            "test_split": "test",
            "method": "simclr",
        }
    )
    assert "trained on 'train' (67 clips, 1072 frames), tested on 'test' (15 clips" in text
    assert "| simclr pretrained | 0.800 | 0.700 | 0.667 | 67 | 15 |" in text
    assert "0.8000000000000002" not in text and "val+test" in text
