"""Every example in every `--help` parses, and its config resolves (nothing is run).

An example is a line of a help text that starts with `lusjax ` (the usage line
does not), with `\\` continuations joined; a description after two or more
spaces, or a `# comment`, is dropped. Each is checked by
`cli_commands.parse_check`: parsed by the subcommand's own parser, and its
`--config` file loaded with the example's `--config.KEY=VALUE` overrides
(a sweep's runs expanded), so an example naming a missing config or a key that
does not exist fails here.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import cli_commands
import pytest

from lusjax import cli

ROOT = Path(__file__).resolve().parent.parent
# Every command and its help (passthrough ones included): `lusjax X --help`.
HELPS = [
    [],
    ["quickstart"],
    ["prep"],
    ["train"],
    ["config"],
    ["probe"],
    ["eval"],
    ["predict"],
    ["bench", "input"],
    ["bench", "step"],
    ["sweep"],
    ["sweep-report"],
    ["report"],
    ["export"],
]


def help_text(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli.main([*args, "--help"])
    assert e.value.code == 0, args
    return out.getvalue()


def examples(text: str) -> list[str]:
    """The `lusjax ...` example lines of a help text (see the module docstring)."""
    lines, out, current = text.splitlines(), [], None
    for line in lines:
        stripped = line.strip()
        if current is not None:
            current += " " + stripped
        elif stripped.startswith("lusjax "):
            current = stripped
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        out.append(re.split(r" {2,}", current)[0])
        current = None
    return out


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name configs/... relative to the repository


@pytest.mark.parametrize("args", HELPS, ids=lambda a: " ".join(a) or "lusjax")
def test_every_help_example_parses_and_its_config_resolves(args):
    text = help_text(args)
    found = examples(text)
    bad = []
    for example in found:
        for argv in cli_commands.split_commands(example):
            problem = cli_commands.parse_check(argv)
            if problem:
                bad.append(f"{example}\n    -> {problem}")
    assert not bad, "broken --help examples:\n" + "\n".join(bad)


def test_the_main_helps_have_examples():
    for args in ([], ["train"], ["eval"], ["config"], ["probe"], ["prep"], ["predict"]):
        assert examples(help_text(args)), f"`lusjax {' '.join(args)} --help` has no example"


def test_no_help_cites_a_config_that_does_not_exist():
    for args in HELPS:
        for path in re.findall(r"configs/[\w/]+\.py", help_text(args)):
            if len(Path(path).stem) == 1:  # a placeholder: configs/x.py, configs/sweeps/y.py
                continue
            assert (ROOT / path).is_file(), f"`lusjax {' '.join(args)} --help` cites {path}"


def test_eval_help_lists_protocols_and_keys_from_configs_eval():
    from lusjax import eval_help
    from lusjax.eval.results import PROTOCOLS

    text = help_text(["eval"])
    assert eval_help.protocols() == [*PROTOCOLS, "all"]  # the config's comment is current
    assert "protocols (--config.protocol" in text and all(p in text for p in PROTOCOLS)
    cfg = cli_commands.config_lib.load(str(ROOT / "configs/eval.py"))
    for key in cfg:  # every top-level key of configs/eval.py, and nothing it lacks
        assert re.search(rf"^  {key}(\.\*)? = ", text, re.MULTILINE), key
    listed = re.findall(r"^  (\w+)(?:\.\*)? = ", text, re.MULTILINE)
    assert set(listed) == set(cfg.keys())
    assert "optim.lr" not in text  # a key eval does not have (it used to be suggested)


def test_eval_rejects_a_training_key_with_eval_suggestions(capsys):
    assert cli.main(["eval", "--config.optim.lr=0.3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lr'; did you mean linear.lr" in err
