"""Carbon reports: the per-phase table and chart of a run, and the poster's comparison.

`report_table` / `plot_phases` render a `carbon.Tracker.summary()` or a run's
ledger of segments (`carbon.read_ledger`: its totals, what `lusjax report` writes
as plots/carbon.md and carbon.png); `break_even` is
SSL pretraining + n fine-tunes (x + y n) against n supervised runs (z n).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lusjax import files


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def _notes(summary: dict[str, Any]) -> list[str]:
    return [
        (
            f"Model: {summary['n_devices']} x {summary['device_kind']} at "
            f"{summary['tdp_w']:g} W ({summary['tdp_source']}), cumulator's method "
            "(time x devices x TDP, + data transfer)."
        ),
        (
            f"Carbon intensity {summary['carbon_intensity_kg_per_kwh']:g} kg CO2e/kWh for "
            f"{summary['country']} ({summary['carbon_intensity_source']})."
        ),
        f"Measured GPU: {summary['measured_gpu_source']}.",
        f"Measured CPU: {summary['measured_cpu_source']}.",
        f"Human units from {summary['human_units_basis']}.",
    ]


def report_table(summary: dict[str, Any]) -> str:
    """Markdown table of a `Tracker.summary()`, or of a ledger's totals over its segments
    (`carbon.read_ledger`), with sources and reasons as notes."""
    cols = [
        ("phase", "phase"), ("time_s", "time (s)"), ("model_kwh", "model kWh"),
        ("model_kg_co2e", "model kg CO2e"), ("measured_gpu_kwh", "GPU kWh (NVML)"),
        ("measured_cpu_kwh", "CPU kWh (RAPL)"), ("measured_kg_co2e", "measured kg CO2e"),
        ("km_by_car", "km by car"), ("phone_charges", "phone charges"),
    ]  # fmt: skip
    segments = summary.get("segments")
    rows = summary["totals"] if segments is not None else summary
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in [*rows["phases"], rows["total"]]:
        cells = [_fmt(r[k]) for k, _ in cols]
        if r["phase"] == "total":
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if segments is None:
        lines += [f"- {n}" for n in _notes(summary)]
    else:
        lines.append(f"Totals over {len(segments)} run segment(s) (each start of the run):")
        for i, seg in enumerate(segments, 1):
            when = f"{seg.get('start', '?')} to {seg.get('end', '?')}"
            lines.append(
                f"- Segment {i} ({when}, {seg.get('exit', 'finished')}): " + " ".join(_notes(seg))
            )
    return "\n".join(lines) + "\n"


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, no global pyplot state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_phases(summary: dict[str, Any], path_png: str | Path) -> None:
    """Bar chart of kg CO2e per phase: model bars, and measured ones where available
    (a ledger: its totals over segments)."""
    if "segments" in summary:
        last = summary["segments"][-1] if summary["segments"] else {}
        summary = {**last, **summary["totals"]}
    phases = summary["phases"]
    names = [p["phase"] for p in phases]
    fig, ax = _figure()
    x = range(len(names))
    has_measured = any(p["measured_kg_co2e"] is not None for p in phases)
    w = 0.4 if has_measured else 0.8
    ax.bar([i - w / 2 * has_measured for i in x], [p["model_kg_co2e"] for p in phases], w,
           label="model (time x TDP)")  # fmt: skip
    if has_measured:
        have = [i for i, p in enumerate(phases) if p["measured_kg_co2e"] is not None]
        vals = [phases[i]["measured_kg_co2e"] for i in have]  # no bar where not measured
        ax.bar([i + w / 2 for i in have], vals, w, label="measured (NVML + RAPL available)")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("kg CO2e")
    ax.set_title(f"Carbon per phase ({summary.get('country')}, {summary.get('device_kind')})")
    ax.legend()
    fig.tight_layout()
    files.save_figure(fig, path_png, dpi=120)


def break_even(
    pretrain_kg: float, finetune_kg: float, supervised_kg: float, n_max: int | None = None
) -> dict[str, Any]:
    """The poster's comparison: x + y*n (SSL pretrain + n fine-tunes) vs z*n (supervised).

    Break-even where x + y*n = z*n, n* = x / (z - y), only if z > y; else "never"
    (unless x is 0, then n* = 0). `break_even_n_int` is the first whole n with
    x + y*n <= z*n. Curves run for n = 0..n_max (default covers the break-even).
    """
    x, y, z = float(pretrain_kg), float(finetune_kg), float(supervised_kg)
    if min(x, y, z) < 0:
        raise ValueError("break_even: costs must be >= 0")
    if x == 0:
        n_star: float | str = 0.0 if y <= z else "never"
    else:
        n_star = x / (z - y) if z > y else "never"
    n_int = "never" if n_star == "never" else max(0, math.ceil(n_star - 1e-9))
    if n_max is None:
        n_max = 10 if n_int == "never" else max(10, 2 * n_int)
    ns = list(range(n_max + 1))
    return {
        "pretrain_kg": x, "finetune_kg": y, "supervised_kg": z,
        "pretrain_over_supervised": x / z if z else None,
        "break_even_n": n_star, "break_even_n_int": n_int,
        "n": ns, "ssl_cost_kg": [x + y * n for n in ns], "supervised_cost_kg": [z * n for n in ns],
    }  # fmt: skip


def plot_break_even(be: dict[str, Any], path_png: str | Path) -> None:
    """Cost curves of `break_even()`: SSL pretrain + n fine-tunes vs n supervised runs."""
    fig, ax = _figure()
    ax.plot(be["n"], be["ssl_cost_kg"], "o-", label="SSL: pretrain + n fine-tunes")
    ax.plot(be["n"], be["supervised_cost_kg"], "s-", label="n supervised runs")
    if be["break_even_n"] != "never":
        n = be["break_even_n"]
        ax.axvline(n, color="grey", ls="--", label=f"break-even n = {n:.3g}")
        title = f"Break-even after {be['break_even_n_int']} downstream task(s)"
    else:
        title = "No break-even: a fine-tune costs at least a supervised run"
    ax.set_xlabel("downstream tasks n")
    ax.set_ylabel("kg CO2e")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    files.save_figure(fig, path_png, dpi=120)
