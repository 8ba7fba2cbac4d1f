"""`lusjax`: the one command-line entry point. It parses and dispatches, nothing more.

    lusjax quickstart                     synthetic data -> SimCLR -> linear probe table
    lusjax prep --synthetic 64 --out DIR  build a dataset (or --input FOLDER|CSV for real clips)
    lusjax train --config configs/simclr_resnet.py:r18 --config.batch_size=512 --config.workdir=DIR
    lusjax config show configs/quickstart.py --config.total_steps=100   the resolved config
    lusjax probe WORKDIR                  quick linear probe of a run's encoder
    lusjax eval --config configs/eval.py --config.encoder=WORKDIR --config.data_dir=DATA
    lusjax study --config configs/study.py --config.data_dir=DATA   SSL vs baselines, per fold
    lusjax predict --encoder WORKDIR --heads EVAL_OUT --input FOLDER
    lusjax bench step --config configs/quickstart.py   throughput benchmarks (JSON lines)
    lusjax report WORKDIR                 plots of a run's metrics (PNG)
    lusjax export WORKDIR --format torch  the encoder as a torchvision state_dict + model card
    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/quick_sweep.py --dry-run
    lusjax sweep-report ROOT              a sweep's runs in one table and plot
    lusjax --version

Bad input is reported as one line `lusjax: error: ...` with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence

from lusjax import eval_help
from lusjax.errors import PREEMPTED_EXIT, Preempted, UserError

CONFIG_HELP = (
    "config file, optionally with an argument: configs/simclr_resnet.py[:r18|r50]; "
    "override any key with --config.KEY=VALUE (e.g. --config.batch_size=512, "
    "--config.optim.lr=0.3)"
)
EVAL_CONFIG_HELP = (
    "config file (default configs/eval.py; configs/eval.py:quick for a smoke "
    "test); override any key with --config.KEY=VALUE (e.g. "
    "--config.protocol=linear,knn, --config.linear.lr=0.05)"
)


def _load_config(args, overrides):
    from lusjax import config as config_lib

    return config_lib.load(args.config, overrides)


def cmd_train(args, overrides) -> int:
    from lusjax import train

    cfg = _load_config(args, overrides)
    summary = train.train(cfg, progress=not args.quiet)
    loss = summary.get("final", {}).get("loss")  # none when a finished run was resumed
    print(
        f"done: step {summary['step']}  "
        + (f"loss {loss:.4f}  " if loss is not None else "")
        + f"workdir {cfg.workdir}"
    )
    return 0


def cmd_prep(args, rest) -> int:
    from data_prep import cli as prep_cli

    return prep_cli.main(rest)


def cmd_probe(args, overrides) -> int:
    import json

    from lusjax.app.probe import probe_table, probe_workdir

    result = probe_workdir(
        args.workdir,
        data_dir=args.data_dir,
        train_split=args.train_split,
        test_split=args.test_split,
    )
    print(json.dumps(result, indent=2) if args.json else probe_table(result))
    return 0


def cmd_config(args, overrides) -> int:
    from lusjax import config as config_lib

    cfg = config_lib.load(args.config_file, overrides)
    fmt = "json" if args.json else "yaml"
    if not args.json:  # JSON stays machine-readable: no comment line
        print(
            f"# {args.config_file} with {len(overrides)} override(s), resolved "
            "(YAML; values in JSON notation)"
        )
    sys.stdout.write(config_lib.dumps(cfg, fmt))
    return 0


def _version() -> str:
    """The installed package's version, else the source tree's."""
    from importlib import metadata

    try:
        return metadata.version("lusjax")
    except metadata.PackageNotFoundError:
        from lusjax import __version__

        return __version__


def cmd_eval(args, overrides) -> int:
    from lusjax import carbon
    from lusjax.eval import protocol

    cfg = _load_config(args, overrides)
    with carbon.tracked(cfg.out_dir, "eval", command="eval"):  # OUT/carbon.json
        results = protocol.run(cfg)
    for note in results.get("notes", []):  # also in results.md; one line each, no traceback
        print(f"note: {note}", file=sys.stderr)
    print(f"results written to {results.get('out_dir', cfg.out_dir)}")
    return 0


def cmd_study(args, overrides) -> int:
    from lusjax import study

    cfg = _load_config(args, overrides)
    results = study.run(cfg)
    print(f"results written to {results['out_dir']}")
    return 0


def cmd_predict(args, rest) -> int:
    from lusjax.app import predict

    return predict.main(rest)


def cmd_bench(args, rest) -> int:
    if args.what == "input":
        from lusjax.app import bench_input

        return bench_input.main(rest)
    from lusjax.app import bench_step

    return bench_step.main(rest)


def cmd_sweep(args, rest) -> int:
    from lusjax import sweep

    return sweep.main(rest)


def cmd_sweep_report(args, rest) -> int:
    from lusjax import sweep_report

    return sweep_report.main(rest)


def cmd_report(args, overrides) -> int:
    from lusjax import report

    paths = report.render(args.workdir)
    for p in paths:
        print(p)
    return 0


def cmd_export(args, overrides) -> int:
    from lusjax import export

    for path in export.export(
        args.workdir, args.format, out=args.out, channels=args.channels, results=args.results
    ):
        print(path)
    return 0


def cmd_quickstart(args, overrides) -> int:
    from lusjax.app import quickstart

    return quickstart.main(workdir=args.workdir, overrides=overrides, quiet=args.quiet)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lusjax",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.split("\n\n")[1].rstrip() + "\n\nRun `lusjax COMMAND "
        "--help` for the options of each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"lusjax {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable, help_: str, passthrough: bool = False):
        # Raw: the epilogs' example lines stay as written; the description is wrapped here.
        sp = sub.add_parser(
            name,
            help=help_,
            description=textwrap.fill(help_, 79),
            add_help=not passthrough,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.set_defaults(fn=fn, passthrough=passthrough)
        return sp

    sp = add(
        "quickstart",
        cmd_quickstart,
        "generate synthetic LUS clips, pretrain SimCLR on CPU, and compare a linear probe "
        "of the pretrained encoder with a random-init one (a few minutes on 2 cores)",
    )
    sp.add_argument(
        "--workdir",
        default=os.path.join("runs", "quickstart"),
        help="where the run goes (default: runs/quickstart)",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.epilog = (
        "example:\n  lusjax quickstart --workdir runs/qs100 --config.total_steps=100\n"
        "Any key of configs/quickstart.py can be overridden\n"
        "(`lusjax config show configs/quickstart.py` lists them)."
    )

    add(
        "prep",
        cmd_prep,
        "build a sharded frame dataset from real clips or synthetic ones "
        "(see `lusjax prep --help`)",
        passthrough=True,
    )

    sp = add(
        "train",
        cmd_train,
        "SSL pretraining from a config file (resumes from the latest checkpoint in the workdir)",
    )
    sp.add_argument("--config", required=True, help=CONFIG_HELP)
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.epilog = (
        "examples:\n"
        "  lusjax train --config configs/quickstart.py --config.workdir=runs/qs\n"
        "  lusjax train --config configs/simclr_resnet.py:r50 --config.batch_size=512 "
        "--config.workdir=runs/r50 \\\n"
        "      --config.data.data_dir=data/pocus "
        "--config.data.train_split=fold0+fold1+fold2+fold3 --config.data.val_split=fold4\n"
        "Splits join with + or , (fold0+fold1 = fold0,fold1). "
        "`lusjax config show CONFIG` prints every key.\n"
        f"Exit status: 0 trained to total_steps; 2 bad input (one error line); "
        f"{PREEMPTED_EXIT} preempted by SIGTERM or SIGINT: the current step is saved, "
        "rerun the same command to resume."
    )

    sp = add(
        "config",
        cmd_config,
        "print a config file's resolved config (after the "
        "--config.KEY=VALUE overrides) without running anything",
    )
    sp.add_argument("action", choices=("show",))
    sp.add_argument("config_file", metavar="CONFIG", help="configs/x.py[:arg]")
    sp.add_argument("--json", action="store_true", help="JSON (as config.json) instead of YAML")
    sp.epilog = (
        "examples:\n"
        "  lusjax config show configs/simclr_resnet.py:r50 --config.batch_size=512\n"
        "  lusjax config show configs/eval.py:quick --json"
    )

    sp = add(
        "probe",
        cmd_probe,
        "quick linear probe (frame and clip accuracy) of a run's "
        "pretrained encoder, next to the same probe on a random-init encoder",
    )
    sp.add_argument("workdir", help="a finished `lusjax train` workdir")
    sp.add_argument("--data-dir", default=None, help="dataset (default: the run's own)")
    sp.add_argument(
        "--train-split",
        default="train",
        help="split(s) the probe trains on (default train; join with + or ,)",
    )
    sp.add_argument(
        "--test-split",
        default="test",
        help="split(s) it is tested on (default test; join with + or ,)",
    )
    sp.add_argument("--json", action="store_true", help="the raw numbers as JSON")
    sp.epilog = (
        "examples:\n"
        "  lusjax probe runs/quickstart\n"
        "  lusjax probe runs/quickstart --test-split val+test --json\n"
        "The quickstart tests on val+test (30 clips of its synthetic set); this "
        "command's default\nis test alone (15 clips), so its numbers differ from "
        "the quickstart's table."
    )

    sp = add(
        "eval",
        cmd_eval,
        "evaluation protocols (linear, MLP, kNN, fine-tune; label "
        "fractions; k-fold CV) from a config file",
    )
    sp.add_argument("--config", default="configs/eval.py", help=EVAL_CONFIG_HELP)
    sp.epilog = eval_help.epilog()

    sp = add(
        "study",
        cmd_study,
        "does SSL pretraining help on my data, and what does it "
        "cost? Per fold: pretrain on the training clips, evaluate vs scratch and pixel "
        "baselines; pooled CIs, paired tests, carbon break-even (resumable)",
    )
    sp.add_argument("--config", default="configs/study.py", help=CONFIG_HELP)
    sp.epilog = (
        "Main keys: data_dir, splits, tasks, exclude_classes, folds, run_folds, "
        "label_fractions, seeds, protocols, baselines, pretrain_data, bootstrap, ci, "
        "out_dir, and the recipe's train.* (e.g. --config.train.total_steps=500, "
        "--config.train.method=byol); see configs/study.py"
    )

    add(
        "predict",
        cmd_predict,
        "per-clip predictions for a folder of clips (see `lusjax predict --help`)",
        passthrough=True,
    )

    sp = add(
        "bench",
        cmd_bench,
        "throughput benchmarks: `input` (data pipeline) or `step` "
        "(jitted train step); JSON lines on stdout",
    )
    sp.add_argument("what", choices=("input", "step"))

    add(
        "sweep",
        cmd_sweep,
        "expand a sweep (configs/sweeps/*.py) into runs and run them here "
        "or emit SLURM / TPU VM / local launch commands (see `lusjax sweep --help`)",
        passthrough=True,
    )
    add(
        "sweep-report",
        cmd_sweep_report,
        "one table and plot of all runs of a sweep (see `lusjax sweep-report --help`)",
        passthrough=True,
    )

    sp = add(
        "report",
        cmd_report,
        "render a run's metrics (loss, probe accuracy, throughput, "
        "energy) as PNG plots in WORKDIR/plots, and one self-contained report.html "
        "(plots, last metrics, carbon table, config)",
    )
    sp.add_argument("workdir")
    sp.epilog = "example:\n  lusjax report runs/quickstart"

    sp = add(
        "export",
        cmd_export,
        "write a finished run's pretrained encoder for other code: "
        "a torchvision state_dict in safetensors (torch) or flax msgpack (flax), with "
        "MODEL_CARD.md beside it",
    )
    sp.add_argument("workdir", help="a finished `lusjax train` workdir (with encoder.json)")
    sp.add_argument("--format", required=True, help="torch or flax")
    sp.add_argument("--out", default=None, help="output folder (default WORKDIR/export/FORMAT)")
    sp.add_argument(
        "--channels",
        type=int,
        default=None,
        help="torch: input channels of the stem, 1 or 3 (default: the model's "
        "own; 1 -> 3 divides the kernel by 3, so a gray image repeated 3x "
        "gives the same features)",
    )
    sp.add_argument(
        "--results",
        default=None,
        help="an evaluation of this encoder for the "
        "model card: results.json, study.json or a folder holding them (default: "
        "those found under WORKDIR)",
    )
    sp.epilog = (
        "examples:\n"
        "  lusjax export runs/r18 --format torch --channels 3\n"
        "  lusjax export runs/r18 --format flax --out exports/r18\n"
        "  lusjax export runs/r18 --format torch --results eval_out/r18\n"
        "torch: resnet18, resnet50, mobilenetv3_small and mobilenetv3_large at "
        "width 1.0 (torchvision's);\nload it as MODEL_CARD.md shows. Written with "
        "numpy and safetensors: torch is not needed here."
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lusjax` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        from lusjax import config as config_lib

        # Everything after a passthrough command goes to that command's own parser.
        if argv and argv[0] in ("prep", "predict", "sweep", "sweep-report"):
            args = parser.parse_args(argv[:1])
            return args.fn(args, argv[1:])
        if len(argv) >= 2 and argv[0] == "bench":
            args = parser.parse_args(argv[:2])
            return args.fn(args, argv[2:])
        overrides, rest = config_lib.split_overrides(argv)
        args = parser.parse_args(rest)
        if args.command is None:
            parser.print_help()
            return 2
        return args.fn(args, overrides)
    except UserError as e:
        print(f"lusjax: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # saved and resumable: not a failure, not done either
        print(f"lusjax: {e}", file=sys.stderr)
        return PREEMPTED_EXIT
    except KeyboardInterrupt:
        print("lusjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
