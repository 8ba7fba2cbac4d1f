"""Helpers for tests that check documented `lusjax ...` command lines (README, --help).

`parse_check(argv)` parses a command exactly as `lusjax.cli.main` would and
resolves the config it names (with its `--config.KEY=VALUE` overrides, and a
sweep's run configs), without running anything: argparse is stopped right
after the subcommand's parser has parsed. It returns an error string, or None.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from unittest import mock

from lusjax import cli
from lusjax import config as config_lib
from lusjax.errors import UserError

# Subcommand parsers that take unknown arguments on purpose (they are config overrides).
_KNOWN_ARGS_ONLY = ("lusjax bench input",)


class _Parsed(Exception):
    def __init__(self, prog: str, namespace: argparse.Namespace, extra: list[str]):
        super().__init__(prog)
        self.prog, self.namespace, self.extra = prog, namespace, extra


@contextlib.contextmanager
def _stop_after_parsing():
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = original(self, args, namespace)
        # The top-level parser, and cli's stand-ins for commands that parse their own
        # arguments (prep, predict, sweep, ...: `passthrough`; bench: `lusjax bench`), hand
        # on to the parser that matters; stop after that one.
        if self.prog not in ("lusjax", "lusjax bench") and not getattr(ns, "passthrough", 0):
            raise _Parsed(self.prog, ns, list(extra))
        return ns, extra

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", parse_known_args):
        yield


def parse_check(argv: list[str]) -> str | None:
    """None if `lusjax ARGV` parses and its config (if any) resolves; else what is wrong."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            _stop_after_parsing(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            rc = cli.main(argv)
    except _Parsed as p:
        parsed = p
    except SystemExit as e:  # argparse: --help / --version exit 0, errors exit 2
        last = (err.getvalue().strip().splitlines() or [""])[-1]
        return None if e.code == 0 else f"argparse exit {e.code}: {last}"
    else:
        return f"not parsed by a subcommand parser (exit {rc}): {err.getvalue().strip()}"
    if parsed.extra and parsed.prog not in _KNOWN_ARGS_ONLY:
        return f"unrecognized arguments: {' '.join(parsed.extra)}"
    try:
        _resolve_config(parsed, argv)
    except (UserError, SystemExit, FileNotFoundError, ValueError) as e:
        return f"config does not resolve: {e}"
    return None


def _resolve_config(parsed: _Parsed, argv: list[str]) -> None:
    """Loads the config the command would load (not the data, not the model)."""
    ns = parsed.namespace
    overrides, _ = config_lib.split_overrides(argv)
    if parsed.prog == "lusjax bench input":
        overrides, _ = config_lib.split_overrides(parsed.extra)
    if parsed.prog == "lusjax quickstart":
        config_lib.load("configs/quickstart.py", [("workdir", ns.workdir), *overrides])
    elif parsed.prog == "lusjax config":
        config_lib.load(ns.config_file, overrides)
    elif parsed.prog == "lusjax sweep":
        from lusjax import sweep_plan

        sweep_plan.expand(ns.config, ns.sweep, ns.root or "runs/sweep", overrides)
    elif getattr(ns, "config", None):
        config_lib.load(ns.config, overrides)


def split_commands(line: str) -> list[list[str]]:
    """The `lusjax ...` commands of one shell line (continuations already joined):
    comments dropped, split at && || ; |, only segments that start with `lusjax`."""
    tokens = shlex.split(line, comments=True)
    commands, current = [], []
    for t in tokens + ["&&"]:
        if t in ("&&", "||", ";", "|"):
            if current and current[0] == "lusjax":
                commands.append(current[1:])
            current = []
        else:
            current.append(t)
    return commands
