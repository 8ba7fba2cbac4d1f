"""Evaluation results: summaries over seeds and folds, and results.json / results.md.

Used by `lusjax.eval.protocol.run`; `markdown(results)` is the table in results.md.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np

from lusjax.eval import metrics, splits
from lusjax.files import write_text_atomic
from lusjax.layout import RESULTS_JSON, RESULTS_MD

PROTOCOLS = ("linear", "mlp", "knn", "finetune")  # the order of the results table

# ---------------------------------------------------------------------------
# Summaries.
# ---------------------------------------------------------------------------


def summarize(runs: list[dict]) -> list[dict]:
    """Mean ± std over seeds of the pooled metrics, per (encoder, protocol, task, fraction)."""
    groups = collections.defaultdict(list)
    for r in runs:
        groups[(r["encoder"], r["protocol"], r["task"], r["fraction"])].append(r)
    rows = []
    for (enc, proto, task, fraction), rs in groups.items():
        row = {
            "encoder": enc,
            "protocol": proto,
            "task": task,
            "fraction": fraction,
            "seeds": len(rs),
            "n_train_clips": float(
                np.mean([f["n_train_clips"] for r in rs for f in r["per_fold"]])
            ),
        }
        for level in ("frame", "clip"):
            for s in metrics.SCALARS:
                vals = np.array([r["pooled"][level][s] for r in rs], float)
                fold_vals = np.array([f[level][s] for r in rs for f in r["per_fold"]], float)
                row[f"{level}_{s}"] = _mean_std(vals)
                row[f"{level}_{s}_folds"] = _mean_std(fold_vals)
        rows.append(row)
    return rows


def _mean_std(vals: np.ndarray) -> list[float]:
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return [math.nan, math.nan]
    return [float(vals.mean()), float(vals.std())]


def crosscheck_table(sk: dict, data, tasks, pooled) -> list[dict]:
    """JAX linear probe vs sklearn LogisticRegression, pooled, fraction 1.0, seed 0."""
    rows = []
    for (enc, task), probs in sk.items():
        jx = pooled[(enc, "linear", task, 1.0, 0)]
        tested = ~np.isnan(probs[:, 0])
        y = data.frame_targets(task)[tested]
        a_sk = float((probs[tested].argmax(1) == y).mean())
        a_jx = float((jx[tested].argmax(1) == y).mean())
        agree = float((probs[tested].argmax(1) == jx[tested].argmax(1)).mean())
        rows.append(
            {
                "encoder": enc,
                "task": task,
                "frame_accuracy_jax": a_jx,
                "frame_accuracy_sklearn": a_sk,
                "prediction_agreement": agree,
            }
        )
    return rows


def dataset_summary(data, data_dir, tasks, folds) -> dict:
    counts = {}
    for task, names in tasks.items():
        y = data.clips.targets(task)[0]
        counts[task] = {n: int((y == i).sum()) for i, n in enumerate(names)}
    return {
        "data_dir": str(data_dir),
        "n_clips": len(data.clips),
        "n_frames": len(data),
        "n_patients": len(np.unique(splits.groups_of(data.clips.video_id, data.clips.patient_id))),
        "clips_per_class": counts,
        "n_folds": len(folds),
    }


def hardware() -> dict:
    import os
    import platform

    import jax

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": sorted({d.device_kind for d in jax.devices()}),
        "n_devices": jax.device_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def hardware_line(hw: dict) -> str:
    """`hardware()` in words: "CPU NAME (2 cores), JAX 0.10.2 on 1 CPU device (cpu)"."""
    n = hw.get("n_devices", len(hw.get("devices", [])))
    backend = str(hw.get("backend", "?"))
    kinds = ", ".join(hw.get("devices", []))
    return (
        f"{hw.get('cpu') or 'unknown CPU'} ({hw.get('cpu_cores')} cores), "
        f"JAX {hw.get('jax', '?')} on {n} {backend.upper()} device{'s' if n != 1 else ''}"
        + (f" ({kinds})" if kinds else "")
    )


# ---------------------------------------------------------------------------
# Outputs: results.json (everything) and results.md (the table).
# ---------------------------------------------------------------------------


def write_outputs(out_dir: Path, results: dict) -> None:
    """results.json (NaN written as null) and results.md in `out_dir`."""
    write_text_atomic(out_dir / RESULTS_JSON, json.dumps(_jsonable(results), indent=1) + "\n")
    (out_dir / RESULTS_MD).write_text(markdown(results))


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _pm(ms, seeds: int) -> str:
    """Percent, mean ± std over seeds (the mean alone from a single seed)."""
    mean, std = ms
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean * 100:.1f} ± {std * 100:.1f}" if seeds > 1 else f"{mean * 100:.1f}"


def markdown(results: dict) -> str:
    """The human summary: one table per task (pooled over folds, mean ± std over seeds)."""
    cfg, ds, hw = results["config"], results["dataset"], results["hardware"]
    seeds = max([r["seeds"] for r in results["summary"]] or [0])
    baseline = cfg.get("baseline") and cfg.get("encoder") != "random"
    lines = [
        "# Evaluation results",
        "",
        f"- Encoder: `{cfg.get('encoder')}`"
        + (" vs a random-init baseline of the same architecture" if baseline else ""),
        (
            f"- Data: `{ds['data_dir']}`: {ds['n_clips']} clips, {ds['n_patients']} "
            f"patients/groups, {ds['n_frames']} frames "
            f"(≤ {cfg.get('frames_per_clip') or 'all'} per clip)"
        ),
        (
            f"- {ds['n_folds']} fold(s) by clip, grouped by patient, stratified by clip label; "
            "label fractions count training clips (at least one per class); metrics pooled over "
            f"the test folds, mean ± std over {seeds} seed(s) (fine-tuning: "
            f"{cfg.get('finetune', {}).get('seeds', seeds)}; a single seed shows no ±); "
            "clip level = mean of frame probabilities"
        ),
        f"- Hardware: {hardware_line(hw)}; total time {results.get('seconds', 0):.0f} s",
        "",
    ]
    header = (
        "| protocol | encoder | labels | train clips | clip acc | clip bal. acc | "
        "clip ROC AUC | frame acc | frame bal. acc | frame ROC AUC |"
    )
    for task, counts in ds["clips_per_class"].items():
        clips = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines += [f"## Task `{task}` (clips: {clips})", "", header, "|---" * 10 + "|"]
        rows = [r for r in results["summary"] if r["task"] == task]
        rows.sort(key=lambda r: (PROTOCOLS.index(r["protocol"]), r["fraction"], r["encoder"]))
        for r in rows:
            cells = [
                _pm(r[m], r["seeds"])
                for m in (
                    "clip_accuracy",
                    "clip_balanced_accuracy",
                    "clip_roc_auc",
                    "frame_accuracy",
                    "frame_balanced_accuracy",
                    "frame_roc_auc",
                )
            ]
            lines.append(
                f"| {r['protocol']} | {r['encoder']} | {r['fraction'] * 100:g}% | "
                f"{r['n_train_clips']:.1f} | {' | '.join(cells)} |"
            )
        lines.append("")
    if results.get("crosscheck"):
        lines += [
            "## Linear probe: JAX vs scikit-learn (100% labels, seed 0, pooled)",
            "",
            "| encoder | task | JAX frame acc | sklearn frame acc | same prediction |",
            "|---|---|---|---|---|",
        ]
        for r in results["crosscheck"]:
            lines.append(
                f"| {r['encoder']} | {r['task']} | {r['frame_accuracy_jax'] * 100:.1f} "
                f"| {r['frame_accuracy_sklearn'] * 100:.1f} | "
                f"{r['prediction_agreement'] * 100:.1f}% |"
            )
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    if results.get("plots"):
        lines += (
            ["## Plots", ""]
            + [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]
            + [""]
        )
    return "\n".join(lines)
