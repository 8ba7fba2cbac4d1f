"""One Markdown table of several `lusjax study` runs (ablation rows), and the best row.

    python benchmarks/study_table.py ROOT/*/study.json [--fraction 0.1] [--protocol linear]
        [--json OUT.json]

Each row: the run's folder name, its recipe and main settings (method, backbone, image
size, pair window, ultrasound augmentations, steps), then clip-level balanced accuracy
[95% CI] of the SSL encoder under --protocol at each label fraction, the random-init and
scratch rows when the run has them, GPU (device) seconds and energy of pretraining. The
best row is the highest balanced accuracy at --fraction (the recipe choice of the
README); `--json` also writes every row as JSON. A study.json that is missing or
unreadable is named on one line and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cell(rec: dict | None, key: str = "balanced_accuracy") -> str:
    if not rec:
        return "—"
    m = rec[key]
    lo, hi = m["ci"]
    return f"{100 * m['value']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _find(pooled: list, encoder: str, protocol: str, fraction: float, task: str) -> dict | None:
    for r in pooled:
        if (r["encoder"], r["protocol"], r["task"]) == (encoder, protocol, task) and abs(
            r["fraction"] - fraction
        ) < 1e-9:
            return r
    return None


def settings(cfg: dict) -> dict:
    """The recipe settings an ablation varies, from a study.json's config."""
    t = cfg["train"]
    us = t["aug"].get("us", {})
    us_on = any(float(v) > 0 for k, v in us.items() if k.endswith("_prob"))
    dt = (
        f"{t['data']['max_dt_s']:g} s"
        if t["data"].get("max_dt_s", 0) > 0
        else f"{t['data']['max_dt']} frames"
    )
    return {
        "method": t["method"],
        "backbone": t["model"]["name"],
        "px": t["image_size"],
        "pair window": dt,
        "US aug": "on" if us_on else "off",
        "steps": t["total_steps"],
        "batch": t["batch_size"],
        "folds": cfg["run_folds"] or f"all {cfg['folds']}",
    }


def row(path: Path, protocol: str, task: str) -> dict:
    s = json.loads(path.read_text())
    fractions = [float(f) for f in s["config"]["label_fractions"]]
    pre = next(
        (ph for ph in s.get("carbon", {}).get("phases", []) if ph.get("phase") == "pretrain"), {}
    )
    timing = s.get("timing", {}).get("phases", {}).get("pretrain", {})
    out = {"name": path.parent.name, **settings(s["config"]), "cells": {}}
    for fr in fractions:
        out["cells"][fr] = {
            enc: _find(s["pooled"], enc, proto, fr, task)
            for enc, proto in (
                ("ssl", protocol),
                ("random-init", protocol),
                ("scratch", "finetune"),
                ("pixels", "pixels"),
            )
        }
    out["pretrain_device_s"] = timing.get("device_s", pre.get("time_s"))
    measured = pre.get("measured_kwh")  # NVML on a GPU; else cumulator's model
    out["pretrain_kwh"] = measured if measured is not None else pre.get("model_kwh")
    out["pretrain_kwh_source"] = "measured" if measured is not None else "model"
    return out


def _fmt_num(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[dict], protocol: str, fraction: float) -> str:
    fractions = sorted({fr for r in rows for fr in r["cells"]})
    keys = ["method", "backbone", "px", "pair window", "US aug", "steps", "folds"]
    head = [
        "row",
        *keys,
        *[f"SSL {protocol} {100 * f:g}%" for f in fractions],
        "pretrain device-s",
        "pretrain kWh",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r["cells"][f]["ssl"]) if f in r["cells"] else "—" for f in fractions]
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    *[str(r[k]) for k in keys],
                    *cells,
                    _fmt_num(r["pretrain_device_s"], ".0f"),
                    _fmt_num(r["pretrain_kwh"], ".4f"),
                ]
            )
            + " |"
        )
    base = [
        (enc, r["name"])
        for r in rows
        for enc in ("random-init", "scratch", "pixels")
        if any(r["cells"][f][enc] for f in r["cells"])
    ]
    for enc, name in base:
        r = next(x for x in rows if x["name"] == name)
        cells = [_cell(r["cells"][f][enc]) if f in r["cells"] else "—" for f in fractions]
        label = {
            "random-init": f"random-init {protocol}",
            "scratch": "scratch fine-tune",
            "pixels": "pixels PCA + linear",
        }[enc]
        lines.append(
            "| " + " | ".join([f"{label} (from {name})", *[""] * len(keys), *cells, "", ""]) + " |"
        )
    return "\n".join(lines)


def best(rows: list[dict], fraction: float) -> dict | None:
    """The row with the highest SSL balanced accuracy at `fraction` (the first on a tie)."""
    scored = [
        (r["cells"][fraction]["ssl"]["balanced_accuracy"]["value"], -i, r)
        for i, r in enumerate(rows)
        if fraction in r["cells"] and r["cells"][fraction]["ssl"]
    ]
    return max(scored, key=lambda t: t[:2])[2] if scored else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="study.json files")
    p.add_argument("--protocol", default="linear", help="SSL protocol compared (linear)")
    p.add_argument(
        "--fraction", type=float, default=0.1, help="label fraction that picks the best row (0.1)"
    )
    p.add_argument("--task", default="label")
    p.add_argument("--json", default="", help="also write the rows as JSON here")
    a = p.parse_args(argv)
    rows = []
    for path in map(Path, a.paths):
        try:
            rows.append(row(path, a.protocol, a.task))
        except (OSError, ValueError, KeyError) as e:
            print(f"study_table: skipped {path}: {type(e).__name__}: {e}", file=sys.stderr)
    if not rows:
        print("study_table: error: no readable study.json", file=sys.stderr)
        return 2
    print(table(rows, a.protocol, a.fraction))
    b = best(rows, a.fraction)
    if b is not None:
        v = b["cells"][a.fraction]["ssl"]["balanced_accuracy"]["value"]
        print(
            f"\nbest at {100 * a.fraction:g}% labels ({a.protocol}): {b['name']} "
            f"({100 * v:.1f}% balanced accuracy)"
        )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                [{**r, "cells": {str(k): v for k, v in r["cells"].items()}} for r in rows], indent=1
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
