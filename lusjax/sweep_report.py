"""`lusjax sweep-report ROOT`: one table and one plot of every run of a sweep.

    lusjax sweep-report runs/quick_sweep
      -> prints the table; writes ROOT/sweep_report.md and ROOT/sweep_report.png

A row per run: its overrides, status (done / running / partial / failed with
the error line / not started, see `lusjax.sweep_plan.run_status`), the step reached,
and from its metrics.jsonl the final loss, probe_acc, probe_val_acc, images/s,
and energy (kWh) / emissions (kg CO2e) so far. Runs come from ROOT/sweep.json
when the sweep wrote one, else from the sub-folders holding a config.json, whose
differing config values then stand for the overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from lusjax import files, sweep_plan
from lusjax.errors import UserError
from lusjax.layout import (
    CONFIG_JSON,
    METRICS_FILE,
    RUN_LOG,
    SWEEP_JSON,
    SWEEP_REPORT_MD,
    SWEEP_REPORT_PNG,
)

# (column, metrics key, format)
METRIC_COLUMNS = (
    ("loss", "loss", "{:.4f}"),
    ("probe_acc", "probe_acc", "{:.3f}"),
    ("probe_val_acc", "probe_val_acc", "{:.3f}"),
    ("images/s", "images_per_s", "{:.1f}"),
    ("kWh", "model_kwh", "{:.3g}"),
    ("kg CO2e", "model_kg_co2e", "{:.3g}"),
)


def _read_text(path) -> str | None:
    try:
        return path.read_text() if path.exists() else None
    except OSError:
        return None


def _records(workdir: str) -> list[dict]:
    text = _read_text(files.path(workdir) / METRICS_FILE)
    out = []
    for line in (text or "").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed writer
    return out


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def discover(root: str) -> list[dict]:
    """[{name, workdir, overrides}] of the runs under `root`."""
    rootp = files.path(root)
    if not rootp.exists():
        raise UserError(f"no such sweep root: {root}")
    plan_text = _read_text(rootp / SWEEP_JSON)
    runs = json.loads(plan_text)["runs"] if plan_text else []
    known = {r["name"] for r in runs}
    # Runs on disk that the plan does not list (or no plan at all).
    extra = []
    for sub in sorted(rootp.iterdir(), key=lambda p: p.name):
        if sub.name in known or not sub.is_dir():
            continue
        if any((sub / f).exists() for f in (CONFIG_JSON, RUN_LOG)):
            extra.append({"name": sub.name, "workdir": str(sub), "overrides": None})
    if extra:
        configs = {
            r["name"]: _flatten(
                json.loads(_read_text(files.path(r["workdir"]) / CONFIG_JSON) or "{}")
            )
            for r in extra
        }
        keys = sorted({k for c in configs.values() for k in c} - {"workdir"})
        varying = [
            k
            for k in keys
            if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1
        ]
        for r in extra:
            r["overrides"] = {k: configs[r["name"]].get(k) for k in varying}
    runs = runs + extra
    if not runs:
        raise UserError(f"no runs in {root} (no {SWEEP_JSON}, no run folders)")
    return runs


def collect(root: str) -> list[dict]:
    """One row per run: name, overrides, status, detail, step, total, metrics, records."""
    rows = []
    for r in discover(root):
        status, detail = sweep_plan.run_status(r["workdir"])
        recs = _records(r["workdir"])
        cfg_text = _read_text(files.path(r["workdir"]) / CONFIG_JSON)
        total = json.loads(cfg_text).get("total_steps") if cfg_text else None
        final = {}
        for rec in recs:  # the last value of each metric (probe_val_acc is not on every line)
            final.update({k: v for k, v in rec.items() if isinstance(v, (int, float))})
        rows.append(
            {
                "name": r["name"],
                "workdir": r["workdir"],
                "overrides": r.get("overrides") or {},
                "status": status,
                "detail": detail,
                "step": final.get("step"),
                "total_steps": total,
                "final": final,
                "records": recs,
            }
        )
    return rows


def _fmt(v, fmt: str) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "" if v is None else str(v)
    return fmt.format(v)


def _overrides_text(overrides: dict) -> str:
    return ", ".join(f"{k}={sweep_plan.override_text(v)}" for k, v in overrides.items()) or "-"


def table(rows: list[dict]) -> str:
    """The Markdown table (also what is printed)."""
    head = ["run", "overrides", "status", "step", *[c for c, _, _ in METRIC_COLUMNS], "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        step = "" if r["step"] is None else str(r["step"])
        if r["total_steps"]:
            step = f"{step or 0}/{r['total_steps']}"
        cells = [
            str(i + 1),
            _overrides_text(r["overrides"]),
            r["status"],
            step,
            *[_fmt(r["final"].get(k), f) for _, k, f in METRIC_COLUMNS],
            r["detail"],
        ]
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return "\n".join(lines) + f"\n\n{len(rows)} runs: {summary}\n"


def plot(rows: list[dict], path):
    """Loss and probe accuracy curves of every run, final throughput and energy bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(r["records"] for r in rows):
        return None
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    labels = [f"{i + 1}: {_overrides_text(r['overrides'])}"[:60] for i, r in enumerate(rows)]
    names = [str(i + 1) for i in range(len(rows))]
    for ax, key, title in (
        (axes[0, 0], "loss", "SSL loss"),
        (axes[0, 1], None, "probe accuracy (val, else train)"),
    ):
        series = []
        for label, r in zip(labels, rows):
            k = key or (
                "probe_val_acc" if any("probe_val_acc" in x for x in r["records"]) else "probe_acc"
            )
            series.append(
                (
                    label,
                    [
                        (x["step"], x[k])
                        for x in r["records"]
                        if isinstance(x.get(k), (int, float)) and not isinstance(x.get(k), bool)
                    ],
                )
            )
        if key is None and all(len(pts) <= 1 for _, pts in series):  # one eval: bars
            ax.bar(names, [pts[-1][1] if pts else 0.0 for _, pts in series], color="tab:blue")
            ax.set_xlabel("run")
        else:
            for label, pts in series:
                if pts:
                    ax.plot(*zip(*pts), label=label, marker="." if len(pts) < 30 else None)
            ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax, key, title in (
        (axes[1, 0], "images_per_s", "images / s (last log)"),
        (axes[1, 1], "model_kwh", "energy so far (kWh, model)"),
    ):
        vals = [r["final"].get(key, 0.0) or 0.0 for r in rows]
        colors = [
            "tab:green"
            if r["status"] == "done"
            else "tab:red"
            if r["status"] == "failed"
            else "tab:gray"
            for r in rows
        ]
        ax.bar(names, vals, color=colors)
        ax.set_title(title)
        ax.set_xlabel("run (green done, red failed, gray other)")
        ax.grid(alpha=0.3, axis="y")
    handles, leg = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, leg, loc="lower center", ncol=min(2, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 * math.ceil(len(handles) / 2) + 0.02, 1, 1))
    path = files.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def render(root: str, out_dir: str | None = None, *, with_plot: bool = True) -> dict:
    """Writes the Markdown table (and PNG); returns {'table', 'md', 'png', 'rows'}."""
    rows = collect(root)
    text = table(rows)
    out = files.path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    md = out / SWEEP_REPORT_MD
    md.write_text(f"# Sweep report: {root}\n\n{text}")
    png = None
    if with_plot:
        png = plot(rows, out / SWEEP_REPORT_PNG)
    return {"table": text, "md": md, "png": png, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """`lusjax sweep-report ROOT [--out DIR] [--no-plot]`."""
    p = argparse.ArgumentParser(
        prog="lusjax sweep-report",
        description="One table (Markdown, also printed) and one PNG of every run of a sweep: "
        "overrides, status, final loss / probe accuracy / images/s / energy.",
        epilog="example: lusjax sweep-report runs/quick_sweep",
    )
    p.add_argument("root", help="the sweep's --root (local or gs://)")
    p.add_argument("--out", default=None, help="where the report goes (default: ROOT)")
    p.add_argument("--no-plot", action="store_true", help="only the table")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    result = render(args.root, args.out, with_plot=not args.no_plot)
    print(result["table"])
    print(f"table: {result['md']}")
    if result["png"]:
        print(f"plot:  {result['png']}")
    return 0


if __name__ == "__main__":  # python -m lusjax.sweep_report ROOT
    try:
        sys.exit(main())
    except UserError as e:
        print(f"lusjax: error: {e}", file=sys.stderr)
        sys.exit(2)
