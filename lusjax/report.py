"""`lusjax report WORKDIR`: a run's metrics.jsonl as PNG plots a person can glance at, and
one self-contained `plots/report.html` (the plots, the last logged metrics, the carbon
table and the config) to open in a browser or attach to a lab notebook."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from lusjax import files
from lusjax import metrics as metrics_lib
from lusjax.errors import UserError
from lusjax.layout import CONFIG_JSON, METRICS_FILE, PLOTS_DIR

# (file name, title, keys plotted against step)
PANELS = (
    ("loss.png", "SSL loss", ("loss",)),
    ("probe.png", "online linear probe accuracy", ("probe_acc", "probe_val_acc")),
    ("throughput.png", "images / s", ("images_per_s",)),
    (
        "energy.png",
        "energy so far (kWh, cumulator model / measured)",
        ("model_kwh", "measured_gpu_kwh", "measured_cpu_kwh"),
    ),
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
        raise UserError(f"no metrics in {workdir} (expected {METRICS_FILE})")
    out_dir = files.path(workdir) / PLOTS_DIR
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
    written.append(_html(files.path(workdir), out_dir, records, written))
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


def _md_table_html(text: str) -> str:
    """The pipe tables of a Markdown text as HTML tables, other lines as paragraphs."""
    out, rows = [], []

    def flush():
        if rows:
            head, *body = rows
            out.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
                + "</table>"
            )
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip().strip("*")) for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{html.escape(line.lstrip('- '))}</p>")
    flush()
    return "\n".join(out)


def _html(workdir: Path, out_dir: Path, records: list[dict], written: list[Path]) -> Path:
    """plots/report.html: every PNG inlined (one file to send), the last metrics record,
    the carbon table and config.json."""
    last = records[-1]
    metrics_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_show(v))}</td></tr>"
        for k, v in last.items()
    )
    parts = [
        f"<h1>lusjax run {html.escape(str(workdir))}</h1>",
        f"<h2>Last logged step ({last['step']})</h2>",
        f"<table><tr><th>key</th><th>value</th></tr>{metrics_rows}</table>",
        "<h2>Plots</h2>",
    ]
    for p in written:
        if p.suffix == ".png":
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(
                f'<figure><img alt="{p.stem}" src="data:image/png;base64,{data}">'
                f"<figcaption>{p.name}</figcaption></figure>"
            )
    carbon_md = out_dir / "carbon.md"
    if carbon_md in written:
        parts += ["<h2>Energy and carbon</h2>", _md_table_html(carbon_md.read_text())]
    config = workdir / CONFIG_JSON
    if config.exists():
        parts += [
            "<h2>Config</h2>",
            f"<pre>{html.escape(json.dumps(json.loads(config.read_text()), indent=1))}</pre>",
        ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>lusjax report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    path = out_dir / "report.html"
    files.write_text_atomic(path, page)
    return path


def _show(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
