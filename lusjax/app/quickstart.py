"""`lusjax quickstart`: the whole chain on the embedded synthetic data, on CPU.

Generates (once, cached) a synthetic LUS clip dataset, pretrains SimCLR on a
tiny ResNet (configs/quickstart.py), then fits the same linear probe on the
frozen features of the pretrained encoder and of a random-init one, and prints
both (frame- and clip-level test accuracy) with the time and energy spent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lusjax import config as config_lib
from lusjax.app.default_data import ensure_data
from lusjax.app.probe import probe_workdir
from lusjax.layout import QUICKSTART_JSON, QUICKSTART_MD


def _table(result: dict, train_summary: dict, pretrain_s: float) -> str:
    carbon = train_summary.get("carbon", {}).get("total", {})
    kwh = carbon.get("model_kwh")
    co2 = carbon.get("model_kg_co2e")
    rows = [
        "| encoder | frame acc | clip acc | pretrain time | energy (model) |",
        "|---|---|---|---|---|",
    ]
    for name in ("ssl", "random_init"):
        r = result[name]
        cost = f"{pretrain_s:.0f} s" if name == "ssl" else "—"
        energy = (
            f"{kwh * 1000:.2f} Wh, {co2 * 1000:.2f} g CO2e"
            if name == "ssl" and kwh is not None
            else "—"
        )
        rows.append(
            f"| {'SimCLR pretrained' if name == 'ssl' else 'random init'} "
            f"| {r['frame_accuracy']:.3f} | {r['clip_accuracy']:.3f} | {cost} | {energy} |"
        )
    return "\n".join(rows)


def main(workdir: str, overrides=(), quiet: bool = False) -> int:
    """Runs the quickstart into `workdir`; returns the exit status."""
    from lusjax import train

    overrides = [("workdir", workdir), *overrides]
    cfg = config_lib.load("configs/quickstart.py", overrides)
    print(f"[1/3] data: {ensure_data(cfg.data)}", flush=True)
    print(
        f"[2/3] pretraining {cfg.method} on {cfg.model.name} for {cfg.total_steps} steps "
        f"-> {cfg.workdir}",
        flush=True,
    )
    t0 = time.time()
    summary = train.train(cfg, progress=not quiet)
    pretrain_s = time.time() - t0
    print("[3/3] linear probe on frozen features: pretrained vs random init", flush=True)
    # Tested on every clip that pretraining did not see (val and test), by clip.
    result = probe_workdir(cfg.workdir, test_split="val+test")
    table = _table(result, summary, pretrain_s)
    print()
    print(table)
    ssl_acc = result["ssl"]["clip_accuracy"], result["ssl"]["frame_accuracy"]
    rnd_acc = result["random_init"]["clip_accuracy"], result["random_init"]["frame_accuracy"]
    verdict = "beats" if ssl_acc[1] > rnd_acc[1] else "does NOT beat"
    print(
        f"\nThe SimCLR-pretrained encoder {verdict} the random-init encoder "
        f"(frame accuracy {ssl_acc[1]:.3f} vs {rnd_acc[1]:.3f})."
    )
    out = Path(cfg.workdir)
    (out / QUICKSTART_JSON).write_text(
        json.dumps(
            {"probe": result, "pretrain_s": pretrain_s, "train": summary}, indent=2, default=str
        )
    )
    (out / QUICKSTART_MD).write_text(table + "\n")
    return 0
