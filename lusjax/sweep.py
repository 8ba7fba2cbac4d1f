"""`lusjax sweep`: a sweep file expanded into runs, run here one after another or
handed to a launcher (SLURM array, TPU VM pod, local shell).

    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/quick_sweep.py \
        --root runs/quick_sweep --run --config.total_steps=50
    lusjax sweep ... --emit slurm        # writes ROOT/runs.txt, prints the launch command
    lusjax sweep-report runs/quick_sweep # table + plot of every run

A sweep file is Python next to the configs: `get_sweep()` (or `get_sweep(arg)`
with `file.py:arg`) returns a list of override dicts whose keys are dotted
config keys and whose values are typed (`{"model.name": "resnet50",
"optim.lr": 0.3}`); `product()` builds the cross product of a few axes (the
sweep files, names and status: `lusjax.sweep_plan`). The key
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
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lusjax import config as config_lib
from lusjax.errors import UserError
from lusjax.layout import (
    RUN_LOG,
    RUN_RC,
    RUNS_TXT,
)
from lusjax.sweep_plan import Run, expand, run_status, runs_txt, write_plan
from lusjax.sweep_plan import product as product  # sweep files that import it from here

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"


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


if __name__ == "__main__":  # python -m lusjax.sweep ... (same as `lusjax sweep ...`)
    try:
        sys.exit(main())
    except UserError as e:
        print(f"lusjax: error: {e}", file=sys.stderr)
        sys.exit(2)
