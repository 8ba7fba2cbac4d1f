"""The `lusjax` command: help for every subcommand, one-line errors on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from lusjax import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["quickstart", "prep", "train", "probe", "eval", "predict", "report", "sweep",
            "sweep-report"]


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


@pytest.mark.parametrize("argv,message", [
    (["train", "--config", "configs/nope.py"], "config file not found"),
    (["train", "--config", "configs/quickstart.py", "--config.batch_sise=4"],
     "unknown config key 'batch_sise'"),
    (["train", "--config", "configs/quickstart.py", "--config.method=dino",
      "--config.workdir=/tmp/lusjax-test-unused"], "unknown SSL method 'dino'"),
    (["train", "--config", "configs/quickstart.py", "--config.model.name=vit",
      "--config.workdir=/tmp/lusjax-test-unused"], "unknown backbone 'vit'"),
    (["train", "--config", "configs/quickstart.py", "--config.data.data_dir=/nonexistent",
      "--config.workdir=/tmp/lusjax-test-unused"], "not a lusjax dataset"),
    (["report", "/nonexistent/run"], "no metrics"),
    (["probe", "/nonexistent/run"], "/nonexistent/run does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lusjax: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_runs_as_a_process():
    out = subprocess.run([sys.executable, "-m", "lusjax.cli", "train", "--config",
                          "configs/quickstart.py", "--config.batch_size=x"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == ("lusjax: error: --config.batch_size expects an integer, "
                                  "got 'x'")
