"""`lusjax report WORKDIR`: a run's metrics.jsonl as PNG plots a person can glance at."""

from __future__ import annotations

import os
from pathlib import Path

from lusjax import files
from lusjax import metrics as metrics_lib
from lusjax.errors import UserError

# (file name, title, keys plotted against step)
PANELS = (
    ("loss.png", "SSL loss", ("loss",)),
    ("probe.png", "online linear probe accuracy", ("probe_acc", "probe_val_acc")),
    ("throughput.png", "images / s", ("images_per_s",)),
    ("energy.png", "energy so far (kWh, cumulator model / measured)",
     ("model_kwh", "measured_gpu_kwh", "measured_cpu_kwh")),
    ("norms.png", "norms", ("grad_norm", "update_norm")),
)


def _series(records: list[dict], key: str):
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(r["step"])
            ys.append(v)
    return xs, ys


def render(workdir: str | os.PathLike) -> list[Path]:
    """Writes one PNG per panel that has data into `<workdir>/plots`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = metrics_lib.read(workdir)
    if not records:
        raise UserError(f"no metrics in {workdir} (expected {metrics_lib.METRICS_FILE})")
    out_dir = files.path(workdir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, keys in PANELS:
        series = [(k, *_series(records, k)) for k in keys]
        series = [s for s in series if s[1]]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, xs, ys in series:
            ax.plot(xs, ys, label=k, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        files.save_figure(fig, out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    written += _carbon(files.path(workdir), out_dir)
    return written


def _carbon(workdir: Path, out_dir: Path) -> list[Path]:
    """The run's per-phase energy/CO2e, totals over its segments (train records each), as a
    table and a chart."""
    from lusjax import carbon, carbon_report

    ledger = carbon.read_ledger(workdir)
    if not ledger["segments"]:
        return []
    table = out_dir / "carbon.md"
    table.write_text(carbon_report.report_table(ledger) + "\n")
    chart = out_dir / "carbon.png"
    carbon_report.plot_phases(ledger, chart)
    return [table, chart]
