"""A sweep file expanded into runs: names, workdirs, `lusjax train` arguments, the
plan files, and the status of a run's workdir. Shared by `lusjax sweep` (which
runs or launches them, `lusjax.sweep`) and `lusjax sweep-report` (which reads
what they left); it runs nothing.

A sweep file is Python next to the configs: `get_sweep()` (or `get_sweep(arg)`
with `file.py:arg`) returns a list of override dicts whose keys are dotted
config keys and whose values are typed (`{"model.name": "resnet50",
"optim.lr": 0.3}`); `product()` builds the cross product of a few axes:

    from lusjax.sweep_plan import product

    def get_sweep(arg=None):
        return product({"data.max_dt": [0, 4], "optim.lr": [0.5, 1.0]})

The key "config" gives a run its own config file (`{"config": "configs/x.py:byol"}`).
Each run's workdir is ROOT/<name>, the name built from its overrides
(`model.name=resnet50,optim.lr=0.3`), so re-running the same sweep finds the
same directories.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lusjax import config as config_lib
from lusjax import files
from lusjax.errors import PREEMPTED_EXIT, UserError
from lusjax.layout import (
    CHECKPOINTS_DIR,
    ENCODER_JSON,
    METRICS_FILE,
    RUN_LOG,
    RUN_RC,
    RUNS_TXT,
    SWEEP_JSON,
)

MAX_NAME = 100
CONFIG_KEY = "config"  # a run's own config file[:arg] instead of --config


# ----------------------------------------------------------------------------
# Sweep files and run names.
# ----------------------------------------------------------------------------


def product(axes: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """The cross product of `{key: values}`: product({"a": [1, 2], "b": [3]}) ->
    [{"a": 1, "b": 3}, {"a": 2, "b": 3}] (the last key varies fastest)."""
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(axes[k]) for k in keys))]


def load_sweep(spec: str) -> list[dict[str, Any]]:
    """Imports `path[:arg]` and returns its `get_sweep()` list, checked."""
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.exists():
        raise UserError(f"sweep file not found: {path_str}")
    module = config_lib._import_file(path)
    if not hasattr(module, "get_sweep"):
        raise UserError(f"{path} has no get_sweep()")
    runs = module.get_sweep(arg) if arg else module.get_sweep()
    if not isinstance(runs, (list, tuple)) or not runs:
        raise UserError(f"{path}: get_sweep() must return a non-empty list of override dicts")
    for i, r in enumerate(runs):
        if not isinstance(r, Mapping) or not all(isinstance(k, str) for k in r):
            raise UserError(f"{path}: run {i} is not a dict of dotted config keys: {r!r}")
        if "workdir" in r:
            raise UserError(f"{path}: run {i} sets workdir; the sweep names workdirs itself")
        if CONFIG_KEY in r and not isinstance(r[CONFIG_KEY], str):
            raise UserError(f"{path}: run {i}: '{CONFIG_KEY}' must be a config file[:arg] string")
    return [dict(r) for r in runs]


def override_text(value: Any) -> str:
    """A typed value as `--config.k=TEXT` text that `config.apply_override` reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    if isinstance(value, (tuple, list)):
        return repr(tuple(value) if isinstance(value, tuple) else list(value))
    return str(value)


def _name_value(key: str, value: Any) -> str:
    if key == CONFIG_KEY:  # 'configs/pretrain.py:byol' -> 'pretrain-byol'
        path, _, arg = str(value).partition(":")
        return Path(path).stem + (f"-{arg}" if arg else "")
    return override_text(value)


def _clean(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._+=-]", "-", text)).strip("-.") or "x"


def run_name(overrides: Mapping[str, Any]) -> str:
    """A stable, filesystem-safe directory name: 'model.name=resnet50,optim.lr=0.3'.

    Keys are sorted, so the name does not depend on how the dict was built. Long
    names are cut and end in a hash of the full overrides.
    """
    if not overrides:
        return "base"
    name = ",".join(
        f"{_clean(k)}={_clean(_name_value(k, overrides[k]))}" for k in sorted(overrides)
    )
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9].rstrip(",.-") + "-" + _digest(overrides)
    return name


def _digest(overrides: Mapping[str, Any]) -> str:
    text = json.dumps({k: override_text(v) for k, v in sorted(overrides.items())})
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else str(Path(root) / name)


# ----------------------------------------------------------------------------
# Expansion.
# ----------------------------------------------------------------------------


@dataclass
class Run:
    """One run of a sweep: its overrides, workdir and `lusjax train` arguments."""

    index: int
    name: str
    overrides: dict[str, Any]
    workdir: str
    args: list[str] = field(default_factory=list)  # after `lusjax train`

    def command(self, train_cmd: Sequence[str] = ("lusjax", "train")) -> list[str]:
        return [*train_cmd, *self.args]


def expand(
    config_spec: str | None, sweep_spec: str, root: str, common: Sequence[tuple[str, str]] = ()
) -> list[Run]:
    """The sweep's runs, each checked by loading its config (so a bad key or a
    mistyped value fails here, not in the 37th job)."""
    if "\t" in root or "\n" in root:
        raise UserError("the sweep root may not contain tabs or newlines")
    if "://" not in root:
        root = str(Path(root).expanduser().absolute())
    if any(k == "workdir" for k, _ in common):
        raise UserError("--config.workdir does not apply to a sweep: use --root")
    runs, seen = [], {}
    for i, overrides in enumerate(load_sweep(sweep_spec)):
        spec = overrides.get(CONFIG_KEY, config_spec)
        if not spec:
            raise UserError(
                f"run {i} of the sweep has no config: give --config or a '{CONFIG_KEY}' key"
            )
        texts = [(k, override_text(v)) for k, v in overrides.items() if k != CONFIG_KEY]
        key = json.dumps([spec, sorted(texts)])
        if key in seen:
            raise UserError(f"runs {seen[key]} and {i} of the sweep have the same overrides")
        seen[key] = i
        name = run_name(overrides)
        workdir = _join(root, name)
        all_overrides = [*common, *texts, ("workdir", workdir)]
        try:
            config_lib.load(spec, all_overrides)
        except UserError as e:
            raise UserError(f"run {i} of the sweep ({name}): {e}") from None
        args = ["--config", spec] + [f"{config_lib.PREFIX}{k}={v}" for k, v in all_overrides]
        runs.append(Run(i, name, dict(overrides), workdir, args))
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(r.name, []).append(r)
    for group in by_name.values():  # different values that clean to the same name
        if len(group) > 1:
            for r in group:
                r.name = f"{r.name[: MAX_NAME - 9]}-{_digest(r.overrides)}"
                r.workdir = _join(root, r.name)
                r.args[-1] = f"{config_lib.PREFIX}workdir={r.workdir}"
    return runs


def runs_txt(runs: Sequence[Run], header: str = "") -> str:
    """The launch scripts' input: NAME <tab> WORKDIR <tab> shell-quoted train args."""
    lines = [f"# {ln}" for ln in header.splitlines()]
    lines += [f"{r.name}\t{r.workdir}\t{shlex.join(r.args)}" for r in runs]
    return "\n".join(lines) + "\n"


def write_plan(
    root: str,
    runs: Sequence[Run],
    config_spec: str,
    sweep_spec: str,
    common: Sequence[tuple[str, str]],
    runs_file: str | None = None,
) -> Path:
    """Writes ROOT/sweep.json and the runs file; returns the runs file's path."""
    plan = {
        "config": config_spec,
        "sweep": sweep_spec,
        "common": [f"{config_lib.PREFIX}{k}={v}" for k, v in common],
        "runs": [
            {"name": r.name, "workdir": r.workdir, "overrides": r.overrides, "args": r.args}
            for r in runs
        ],
    }
    header = (
        f"lusjax sweep: {len(runs)} runs of {config_spec} x {sweep_spec}\n"
        "NAME<tab>WORKDIR<tab>lusjax train ARGS; one array task / one run per line"
    )
    if "://" in root:
        files.path(root).mkdir(parents=True, exist_ok=True)
        (files.path(root) / SWEEP_JSON).write_text(json.dumps(plan, indent=2) + "\n")
        path = Path(runs_file or f"{Path(sweep_spec.split(':')[0]).stem}-{RUNS_TXT}")
    else:
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / SWEEP_JSON).write_text(json.dumps(plan, indent=2) + "\n")
        path = Path(runs_file) if runs_file else Path(root) / RUNS_TXT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(runs_txt(runs, header))
    return path


# ----------------------------------------------------------------------------
# Status of a run's workdir (shared with sweep-report).
# ----------------------------------------------------------------------------


def last_error_line(text: str) -> str:
    """The line of a log that best says why a run failed (the exception, if any)."""
    lines = [ln.split("\r")[-1].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    pattern = re.compile(r"(error|exception|traceback|killed|timed out)", re.IGNORECASE)
    for ln in reversed(lines[-200:]):
        if pattern.search(ln) and not ln.startswith("Traceback"):
            return ln
    return lines[-1] if lines else ""


def run_status(workdir: str, *, active_s: float = 600.0) -> tuple[str, str]:
    """(status, detail) of a run directory.

    done: `encoder.json` exists. failed: the last attempt exited non-zero, other
    than 3 (detail: its error line). running: no exit status yet and the log or the
    metrics changed in the last `active_s` seconds. partial: checkpoints or
    metrics but unfinished and idle (stopped, preempted or killed, or exit 3:
    preempted with its step saved; re-running resumes it). not started: nothing there.
    """
    wd = files.path(workdir)
    try:
        if (wd / ENCODER_JSON).exists():
            return "done", ""
        if not wd.exists():
            return "not started", ""
        rc_path, log = wd / RUN_RC, wd / RUN_LOG
        if rc_path.exists():
            rc = rc_path.read_text().strip()
            if rc == str(PREEMPTED_EXIT):
                return "partial", f"preempted (exit {rc}): its checkpoint resumes"
            if rc not in ("", "0"):
                line = last_error_line(log.read_text(errors="replace")) if log.exists() else ""
                return "failed", f"exit {rc}: {line}" if line else f"exit {rc}"
            return "partial", "exited 0 before the last step (preempted?)"
        newest = 0.0
        for p in (log, wd / METRICS_FILE, wd / CHECKPOINTS_DIR):
            if p.exists():
                try:
                    newest = max(newest, p.stat().st_mtime)
                except (AttributeError, OSError, NotImplementedError):
                    newest = time.time()  # cannot tell: call it running
        if newest and time.time() - newest < active_s:
            return "running", ""
        if (wd / CHECKPOINTS_DIR).exists() or (wd / METRICS_FILE).exists():
            return "partial", ""
        return "not started", ""
    except OSError as e:
        return "unknown", str(e)
