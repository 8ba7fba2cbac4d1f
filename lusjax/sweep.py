"""`lusjax sweep`: a sweep file expanded into runs, run here one after another or
handed to a launcher (SLURM array, TPU VM pod, local shell).

    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/quick_sweep.py \
        --root runs/quick_sweep --run --config.total_steps=50
    lusjax sweep ... --emit slurm        # writes ROOT/runs.txt, prints the launch command
    lusjax sweep-report runs/quick_sweep # table + plot of every run

A sweep file is Python next to the configs: `get_sweep()` (or `get_sweep(arg)`
with `file.py:arg`) returns a list of override dicts whose keys are dotted
config keys and whose values are typed (`{"model.name": "resnet50",
"optim.lr": 0.3}`); `product()` builds the cross product of a few axes. The key
"config" gives a run its own config file (`{"config": "configs/x.py:byol"}`),
e.g. to sweep methods, whose `ssl` sections differ. `--config.KEY=VALUE`
arguments apply to every run. Each run gets its own workdir, ROOT/<name>, the
name built from its overrides (`model.name=resnet50,optim.lr=0.3`), so
re-running the same sweep finds the same directories: finished runs (an
`encoder.json`) are skipped and partial ones resume from their latest
checkpoint.

Files the sweep writes (all runners follow the same convention):
    ROOT/sweep.json        the config, common overrides and every run's overrides
    ROOT/runs.txt          one line per run: NAME <tab> WORKDIR <tab> train args
                           (shell-quoted), read by the launch/*.sh scripts
    WORKDIR/run.log        stdout + stderr of every attempt, appended
    WORKDIR/run.rc         exit status of the last finished attempt
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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
LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"


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


# ----------------------------------------------------------------------------
# Local runner: one run after another, each in its own subprocess.
# ----------------------------------------------------------------------------


def default_train_cmd() -> list[str]:
    return [sys.executable, "-m", "lusjax.cli", "train", "--quiet"]


def _summary(workdir: str) -> str:
    from lusjax import metrics as metrics_lib

    recs = metrics_lib.read(workdir)
    if not recs:
        return ""
    last = recs[-1]
    return "  ".join(
        f"{k} {last[k]:.4g}"
        for k in ("loss", "probe_acc", "probe_val_acc")
        if isinstance(last.get(k), (int, float))
    )


def run_local(
    runs: Sequence[Run],
    *,
    train_cmd: Sequence[str] | None = None,
    timeout_s: float | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Runs each unfinished run as a subprocess; a failing run does not stop the
    others. Returns 0 when every run is done, else 1."""
    train_cmd = list(train_cmd or default_train_cmd())
    failed, todo = [], []
    for r in runs:
        status, _ = run_status(r.workdir)
        if status == "done":
            echo(f"# [{r.index + 1}/{len(runs)}] {r.name}: done, skipped")
        else:
            todo.append((r, status))
    for r, status in todo:
        cmd = r.command(train_cmd)
        if dry_run:
            echo(shlex.join(cmd))
            continue
        if "://" in r.workdir:
            raise UserError(
                "the local runner writes logs into the workdir: use a local --root "
                "(gs:// roots are for --emit tpu|slurm)"
            )
        wd = Path(r.workdir)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / RUN_RC).unlink(missing_ok=True)
        verb = "resuming" if status in ("partial", "running", "failed") else "starting"
        echo(f"[{r.index + 1}/{len(runs)}] {r.name}: {verb} (log: {wd / RUN_LOG})")
        t0 = time.time()
        with open(wd / RUN_LOG, "a") as log:
            log.write(
                f"\n### lusjax sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n"
            )
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()  # SIGTERM: train saves a checkpoint and exits
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.write(f"lusjax sweep: timed out after {timeout_s:g} s\n")
                rc = 124
            except KeyboardInterrupt:
                proc.wait()
                (wd / RUN_RC).write_text("130\n")
                raise
        (wd / RUN_RC).write_text(f"{rc}\n")
        took = time.time() - t0
        status, detail = run_status(r.workdir)
        if rc == 0 and status == "done":
            echo(f"    done in {took:.0f} s  {_summary(r.workdir)}")
        else:
            failed.append(r)
            echo(f"    {status.upper()} after {took:.0f} s: {detail}")
    if dry_run:
        return 0
    n_done = sum(run_status(r.workdir)[0] == "done" for r in runs)
    echo(
        f"sweep: {n_done}/{len(runs)} runs done"
        + (f", {len(failed)} failed: " + ", ".join(r.name for r in failed) if failed else "")
    )
    return 0 if n_done == len(runs) else 1


# ----------------------------------------------------------------------------
# Launch commands for the scripts in launch/.
# ----------------------------------------------------------------------------


def _script(name: str) -> str:
    path = LAUNCH_DIR / name
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


def launch_command(kind: str, runs_file: str | os.PathLike) -> list[str]:
    """The command that launches every run of `runs_file` with launch/<kind>.sh."""
    if kind == "slurm":
        return ["bash", _script("slurm.sh"), str(runs_file)]
    if kind == "tpu":
        return [
            "bash",
            _script("tpu_vm.sh"),
            "--name",
            "$TPU_NAME",
            "--zone",
            "$ZONE",
            str(runs_file),
        ]
    if kind == "local":
        return ["bash", _script("local.sh"), str(runs_file)]
    raise UserError(f"unknown launcher {kind!r}: slurm, tpu or local")


EMIT_HINTS = {
    "slurm": "sbatch options go before the runs file, e.g. --nodes=2 --gpus-per-node=8 "
    "--partition=gpu --time=12:00:00; add --dry-run to see the sbatch command",
    "tpu": "set TPU_NAME and ZONE (and --project P); the root should be gs://...; "
    "add --dry-run to see the gcloud commands",
    "local": "--procs N runs each as N local JAX processes; add --dry-run to see the commands",
}


# ----------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lusjax sweep",
        description="Expand a sweep file into runs (one workdir each); list them, run them "
        "here one after another (--run), or write launch commands (--emit).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/quick_sweep.py "
        "--run --config.total_steps=20\n"
        "  lusjax sweep --config configs/simclr_resnet.py --sweep configs/sweeps/pod_sweep.py "
        "--root /shared/runs/pod --emit slurm\n"
        "Any --config.KEY=VALUE applies to every run. Re-running skips finished\n"
        "runs and resumes partial ones. `lusjax sweep-report ROOT` summarises.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="base config file: configs/x.py[:arg] (runs may name their own with a 'config' key)",
    )
    p.add_argument(
        "--sweep",
        required=True,
        help="sweep file with get_sweep() -> list of override dicts: file.py[:arg]",
    )
    p.add_argument(
        "--root",
        default=None,
        help="directory of the runs (local or gs://; default runs/<sweep name>)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--run",
        action="store_true",
        help="run the unfinished runs here, one after another (subprocesses)",
    )
    mode.add_argument(
        "--emit",
        choices=("slurm", "tpu", "local"),
        help="write ROOT/runs.txt and print the launch/*.sh command",
    )
    p.add_argument(
        "--runs-file",
        default=None,
        help="where --emit writes the runs file (default ROOT/runs.txt)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="--run: seconds per run before it is stopped (default: none)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the commands (and the runs file) without running or writing",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`lusjax sweep ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    common, rest = config_lib.split_overrides(argv)
    args = _parser().parse_args(rest)
    root = args.root or str(Path("runs") / Path(args.sweep.split(":")[0]).stem)
    runs = expand(args.config, args.sweep, root, common)
    root = str(Path(root).absolute()) if "://" not in root else root

    if args.run:
        if not args.dry_run:
            write_plan(root, runs, args.config, args.sweep, common)
        print(f"sweep: {len(runs)} runs in {root}")
        return run_local(runs, timeout_s=args.timeout, dry_run=args.dry_run)

    if args.emit:
        if args.emit == "tpu" and "://" not in root:
            print(
                "# warning: the hosts of a TPU pod need a shared root: use --root gs://...",
                file=sys.stderr,
            )
        if args.dry_run:
            runs_file = args.runs_file or (
                str(Path(root) / RUNS_TXT)
                if "://" not in root
                else f"{Path(args.sweep.split(':')[0]).stem}-{RUNS_TXT}"
            )
            sys.stdout.write(runs_txt(runs))
        else:
            runs_file = str(write_plan(root, runs, args.config, args.sweep, common, args.runs_file))
        print(f"# {EMIT_HINTS[args.emit]}")
        print(
            " ".join(
                a if a.startswith("$") else shlex.quote(a)
                for a in launch_command(args.emit, runs_file)
            )
        )
        return 0

    # Neither: list the runs with their status and command.
    print(
        f"sweep: {len(runs)} runs in {root}  (--run to run them here, --emit "
        "slurm|tpu|local for a launcher)"
    )
    for r in runs:
        status, detail = run_status(r.workdir)
        print(f"{r.index + 1:3d}  {status:<11s}  {r.name}" + (f"  ({detail})" if detail else ""))
        if args.dry_run:
            print(f"     {shlex.join(r.command())}")
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """`lusjax sweep-report ROOT` (see lusjax.sweep_report)."""
    from lusjax import sweep_report

    return sweep_report.main(argv)


if __name__ == "__main__":  # python -m lusjax.sweep ... (same as `lusjax sweep ...`)
    try:
        sys.exit(main())
    except UserError as e:
        print(f"lusjax: error: {e}", file=sys.stderr)
        sys.exit(2)
