"""`lusjax study`'s outputs: pooled statistics, carbon, study.json, study.md and plots.

Pooled over the folds that ran, every test clip counts once. Each cell is the
clip-level metric of each seed's predictions, averaged over seeds, with a
percentile CI from a bootstrap that resamples patients (`lusjax.eval.stats`;
the same resamples for every row, so paired differences are paired). SSL vs
scratch per protocol and label fraction: the paired bootstrap of the
difference in balanced accuracy, and an exact McNemar test on clip
correctness of the seed-averaged probabilities.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np

from lusjax import config as config_lib
from lusjax import files
from lusjax.eval import splits, stats
from lusjax.eval.results import _jsonable, hardware
from lusjax.layout import STUDY_JSON, STUDY_MD

ROW_ORDER = [
    ("ssl", "linear"),
    ("ssl", "mlp"),
    ("ssl", "knn"),
    ("ssl", "finetune"),
    ("scratch", "finetune"),
    ("random-init", "linear"),
    ("random-init", "mlp"),
    ("random-init", "knn"),
    ("pixels", "pixels"),
]
ROW_NAMES = {
    ("pixels", "pixels"): "pixels / PCA + linear",
    ("scratch", "finetune"): "scratch / fine-tune (supervised)",
    ("ssl", "finetune"): "ssl / fine-tune",
}
PHASES = ("pretrain", "eval", "finetune", "supervised")


def write(
    out_dir: Path,
    config,
    data,
    data_dir,
    tasks,
    folds,
    run_folds,
    fold_results,
    notes,
    seconds: float,
) -> dict:
    """Pools the folds' results; writes study.json, study.md and the plots; returns the
    study.json content."""
    pooled = pool(fold_results, data, tasks)
    groups = splits.groups_of(data.clips.video_id, data.clips.patient_id)
    table, paired = [], []
    for task, p in pooled.items():
        w = stats.group_weights(groups[p["clips"]], config.bootstrap, config.fold_seed)
        for (enc, proto, fraction), seeds in sorted(p["runs"].items(), key=_row_key):
            table.append(
                {
                    "task": task,
                    "encoder": enc,
                    "protocol": proto,
                    "fraction": fraction,
                    "seeds": len(seeds),
                    **stats.summarize(p["y"], list(seeds.values()), w, config.ci),
                }
            )
        paired += paired_tests(task, p, w, config.ci)
    carbon = carbon_summary(fold_results)
    results = {
        "out_dir": str(out_dir),
        "config": config_lib.to_dict(config),
        "hardware": hardware(),
        "dataset": {
            "data_dir": str(data_dir),
            "n_clips": len(data.clips),
            "n_frames": len(data),
            "n_patients": len(np.unique(groups)),
            "clips_per_class": {t: _counts(data, t, n) for t, n in tasks.items()},
        },
        "folds": [
            {
                "fold": k,
                "run": k in run_folds,
                "train": data.clips.video_id[f.train].tolist(),
                "test": data.clips.video_id[f.test].tolist(),
                "test_patients": sorted(
                    {g.split(":", 1)[1] for g in groups[f.test] if g.startswith("patient:")}
                ),
            }
            for k, f in enumerate(folds)
        ],
        "per_fold": [
            {
                "fold": r["fold"],
                "pretrain": r["pretrain"],
                "pretrain_clips": r["pretrain_clips"],
                "wall_s": r["wall_s"],
                "carbon": r["carbon"]["phases"],
                # clip probabilities stay in fold{k}/result.npz
                "runs": [
                    {k: v for k, v in run.items() if k not in ("probs", "video_id")}
                    for run in r["per_fold"]
                ],
            }
            for r in fold_results
        ],
        "pooled": table,
        "paired_tests": paired,
        "statistics": (
            f"clip level; each metric is the mean over seeds of the metric of each "
            f"seed's predictions; {config.ci * 100:g}% percentile CIs from "
            f"{config.bootstrap} bootstrap resamples of patients (clips without a "
            "patient id are their own group); paired: same resamples, SSL minus "
            "scratch; McNemar: exact binomial on the clip correctness of the "
            "seed-averaged probabilities"
        ),
        "carbon": carbon,
        "timing": timing(fold_results, seconds),
        "notes": sorted(set(notes)) + resume_notes(fold_results) + verdict_notes(paired),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    results["plots"] = render_plots(out_dir, config, data, tasks, table, carbon, fold_results)
    files.write_text_atomic(out_dir / STUDY_JSON, json.dumps(_jsonable(results), indent=1) + "\n")
    files.write_text_atomic(out_dir / STUDY_MD, markdown(results))
    print(headline(results))
    return results


# ---------------------------------------------------------------------------
# Pooling and tests.
# ---------------------------------------------------------------------------


def pool(fold_results: list[dict], data, tasks: dict) -> dict:
    """Per task: {"clips": clip indices, "y": targets, "runs": {(encoder, protocol,
    fraction): {seed: probs [C, K]}}}, every run aligned to the same test clips."""
    index = {v: i for i, v in enumerate(data.clips.video_id)}
    parts = collections.defaultdict(lambda: collections.defaultdict(list))
    for res in fold_results:
        for r in res["per_fold"]:
            key = (r["encoder"], r["protocol"], r["fraction"], r["seed"])
            parts[r["task"]][key].append(([index[v] for v in r["video_id"]], r["probs"]))
    out = {}
    for task in tasks:
        runs: dict = collections.defaultdict(dict)
        clips = None
        for (enc, proto, fraction, seed), chunks in parts[task].items():
            idx = np.concatenate([c for c, _ in chunks])
            probs = np.concatenate([p for _, p in chunks])
            order = np.argsort(idx)
            idx, probs = idx[order], probs[order]
            if clips is None:
                clips = idx
            elif not np.array_equal(clips, idx):  # every protocol predicts every test clip
                raise RuntimeError(f"{enc}/{proto} at {fraction} seed {seed} tested other clips")
            runs[(enc, proto, fraction)][seed] = probs
        if clips is not None:
            out[task] = {"clips": clips, "y": data.clips.targets(task)[0][clips], "runs": runs}
    return out


def paired_tests(task: str, p: dict, w: np.ndarray, ci: float) -> list[dict]:
    """SSL (each protocol) vs scratch fine-tuning, per label fraction."""
    out = []
    for (enc, proto, fraction), seeds in sorted(p["runs"].items(), key=_row_key):
        base = p["runs"].get(("scratch", "finetune", fraction))
        if enc != "ssl" or base is None:
            continue
        a, b = list(seeds.values()), list(base.values())
        test = stats.paired_bootstrap(p["y"], a, b, w, "balanced_accuracy", ci)
        mc = stats.mcnemar_exact(
            np.mean(a, 0).argmax(1) == p["y"], np.mean(b, 0).argmax(1) == p["y"]
        )
        out.append(
            {
                "task": task,
                "fraction": fraction,
                "ssl_protocol": proto,
                "baseline": "scratch / finetune",
                **test,
                "mcnemar": mc,
            }
        )
    return out


def resume_notes(fold_results: list[dict]) -> list[str]:
    return [
        f"fold {r['fold']}: pretraining resumed from a checkpoint; its energy counts "
        "every segment (carbon.json), its wall time the resumed part only"
        for r in fold_results
        if r["pretrain"].get("resumed")
    ]


def verdict_notes(paired: list[dict]) -> list[str]:
    """Plain lines where SSL does not beat scratch."""
    out = []
    for t in paired:
        what = f"{t['task']}, {t['fraction'] * 100:g}% labels: SSL {t['ssl_protocol']}"
        numbers = f"balanced accuracy {_pp(t['difference'])} points, p = {t['p']:.3g}"
        if t["difference"] <= 0:
            out.append(f"{what} does not beat scratch fine-tuning ({numbers})")
        elif t["p"] >= 0.05:
            out.append(
                f"{what} is ahead of scratch fine-tuning but not significantly "
                f"({numbers}): no evidence that SSL helps here"
            )
    return out


def _row_key(item):
    (enc, proto, fraction), _ = item
    pos = ROW_ORDER.index((enc, proto)) if (enc, proto) in ROW_ORDER else len(ROW_ORDER)
    return pos, enc, proto, fraction


def _counts(data, task, names) -> dict:
    y = data.clips.targets(task)[0]
    return {n: int((y == i).sum()) for i, n in enumerate(names)}


# ---------------------------------------------------------------------------
# Carbon and timing.
# ---------------------------------------------------------------------------


def carbon_summary(fold_results: list[dict]) -> dict:
    """Per phase totals over the folds, and the break-even of SSL vs supervised."""
    from lusjax import carbon, carbon_report

    by_phase = collections.defaultdict(list)
    for res in fold_results:
        for ph in res["carbon"]["phases"]:
            by_phase[ph["phase"]].append(ph)
    # The ledger's rule (carbon.sum_rows): a sum is None when any fold lacks the number.
    totals = {name: carbon.sum_rows(name, rows) for name, rows in by_phase.items()}
    run_s = {
        ph: [t for r in fold_results for t in r.get("run_s", {}).get(ph, [])]
        for ph in ("finetune", "supervised")
    }
    runs = {ph: len(v) for ph, v in run_s.items()}
    phases = [totals[p] for p in PHASES if p in totals]
    out = {
        "phases": phases,
        "total": carbon.sum_rows("total", phases),
        "runs": runs,
        "folds": len(fold_results),
    }
    if fold_results:
        first = fold_results[0]["carbon"]
        out.update(
            {
                k: first.get(k)
                for k in (
                    "country",
                    "carbon_intensity_kg_per_kwh",
                    "device_kind",
                    "n_devices",
                    "tdp_w",
                    "tdp_source",
                    "measured_gpu_source",
                    "measured_cpu_source",
                )
            }
        )
    if not all(p in totals for p in ("pretrain", "finetune", "supervised")) or not all(
        runs.values()
    ):
        out["break_even"] = None
        return out
    measured = all(
        totals[p]["measured_kg_co2e"] is not None for p in ("pretrain", "finetune", "supervised")
    )
    src = "measured" if measured else "model"

    def per_run(phase: str, unit: str) -> float:
        # The phase's energy per second times a run's median duration: the first
        # fine-tune also compiles the step, which the others (and scratch) reuse.
        t = totals[phase]
        return t[f"{src}_{unit}"] / max(t["time_s"], 1e-9) * float(np.median(run_s[phase]))

    x = totals["pretrain"][f"{src}_kg_co2e"] / len(fold_results)
    be = carbon_report.break_even(
        x, per_run("finetune", "kg_co2e"), per_run("supervised", "kg_co2e")
    )
    out["break_even"] = {
        **be,
        "source": src,
        "pretrain_kwh": totals["pretrain"][f"{src}_kwh"] / len(fold_results),
        "finetune_kwh": per_run("finetune", "kwh"),
        "supervised_kwh": per_run("supervised", "kwh"),
        "finetune_run_s": float(np.median(run_s["finetune"])),
        "supervised_run_s": float(np.median(run_s["supervised"])),
        "basis": (
            "x = mean pretraining per fold (compilation included); y = one SSL fine-tune, "
            "z = one supervised-from-scratch fine-tune (each: grid search + retrain): "
            "the phase's energy per second times a run's median duration (the first "
            f"fine-tune also compiles); {src} energy"
        ),
    }
    return out


def timing(fold_results: list[dict], seconds: float) -> dict:
    """Wall seconds per phase (summed over folds) and device seconds (x devices)."""
    out = {"total_wall_s": round(seconds, 1), "phases": {}}
    for res in fold_results:
        n = res["carbon"].get("n_devices") or 1
        gpu = res["carbon"].get("platform") == "gpu"
        for ph in res["carbon"]["phases"]:
            t = out["phases"].setdefault(ph["phase"], {"wall_s": 0.0, "device_s": 0.0})
            t["wall_s"] += ph["time_s"]
            t["device_s"] += ph["time_s"] * (ph.get("n_devices") or n)
            t["device"] = "gpu" if gpu else res["carbon"].get("platform")
    for t in out["phases"].values():
        t["wall_s"], t["device_s"] = round(t["wall_s"], 1), round(t["device_s"], 1)
    return out


# ---------------------------------------------------------------------------
# study.md, the plots and the headline.
# ---------------------------------------------------------------------------


def _pp(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{round(v * 100, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.1f}"


def _cell(row: dict) -> str:
    ba = row["balanced_accuracy"]
    return (
        f"{_pct(ba['value'])} [{_pct(ba['ci'][0])}, {_pct(ba['ci'][1])}]; "
        f"acc {_pct(row['accuracy']['value'])}; AUC {_pct(row['roc_auc']['value'])}"
    )


def markdown(results: dict) -> str:
    """The human summary: the table per task, the paired tests, carbon, notes, plots."""
    cfg, ds = results["config"], results["dataset"]
    ran = [f["fold"] for f in results["folds"] if f["run"]]
    tc = cfg["train"]
    lines = [
        "# SSL study",
        "",
        (
            f"- Recipe: `{cfg['recipe']}` ({tc['method']}, {tc['model']['name']}, "
            f"{tc['image_size']} px, {tc['total_steps']} steps), pretrained per fold on that "
            "fold's training clips only"
            + (
                f" plus the unlabelled clips of `{cfg['pretrain_data']}`"
                if cfg.get("pretrain_data")
                else ""
            )
            + "."
        ),
        (
            f"- Data: `{ds['data_dir']}`: {ds['n_clips']} clips, {ds['n_patients']} "
            f"patients/groups; folds run: {', '.join(map(str, ran))} of {len(results['folds'])}."
        ),
        (
            f"- Cells: clip balanced accuracy % [{cfg['ci'] * 100:g}% CI]; accuracy; macro ROC "
            f"AUC (one-vs-rest). Statistics: {results['statistics']}."
        ),
        (
            f"- Seeds (label subsets): {cfg['seeds']} for the frozen protocols and pixels, "
            f"{min(cfg['seeds'], cfg['finetune']['seeds'])} for fine-tuning (SSL and scratch; "
            "config finetune.seeds)."
        ),
        "",
    ]
    for task, counts in ds["clips_per_class"].items():
        rows = [r for r in results["pooled"] if r["task"] == task]
        fractions = sorted({r["fraction"] for r in rows})
        lines += [
            f"## Task `{task}` ({', '.join(f'{k} {v}' for k, v in counts.items())})",
            "",
            "| encoder / protocol | "
            + " | ".join(f"{f * 100:g}% labels" for f in fractions)
            + " |",
            "|---" * (len(fractions) + 1) + "|",
        ]
        by_row = collections.defaultdict(dict)
        for r in rows:
            by_row[(r["encoder"], r["protocol"])][r["fraction"]] = r
        for key, cells in by_row.items():
            name = ROW_NAMES.get(tuple(key), f"{key[0]} / {key[1]}")
            lines.append(
                f"| {name} | "
                + " | ".join(_cell(cells[f]) if f in cells else "" for f in fractions)
                + " |"
            )
        lines.append("")
        tests = [t for t in results["paired_tests"] if t["task"] == task]
        if tests:
            lines += ["### SSL vs scratch (paired, same clips)", ""]
            for t in tests:
                mc = t["mcnemar"]
                lines.append(
                    f"- {t['fraction'] * 100:g}% labels, SSL {t['ssl_protocol']} minus scratch "
                    f"fine-tune: balanced accuracy {_pp(t['difference'])} points "
                    f"[{_pp(t['ci'][0])}, {_pp(t['ci'][1])}], bootstrap p = {t['p']:.3g}; "
                    f"McNemar: SSL-only correct {mc['a_only']}, scratch-only correct "
                    f"{mc['b_only']}, exact p = {mc['p']:.3g}"
                )
            lines.append("")
    lines += carbon_lines(results["carbon"])
    t = results["timing"]
    lines += [
        "## Time",
        "",
        f"- Total wall time of this invocation {t['total_wall_s']:.0f} s "
        "(finished folds read back cost none); per phase, summed over the folds: "
        + "; ".join(
            f"{k} {v['wall_s']:.0f} s wall, {v['device_s']:.0f} {v['device']}-device s"
            for k, v in t["phases"].items()
        ),
        "",
    ]
    if results["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    if results.get("plots"):
        lines += (
            ["## Plots", ""]
            + [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]
            + [""]
        )
        if any("embeddings" in p for p in results["plots"]):
            lines += [EMBEDDINGS_CAPTION, ""]
    return "\n".join(lines)


EMBEDDINGS_CAPTION = (
    "Embeddings: t-SNE of clip embeddings (mean frame feature) of every "
    "study clip through one encoder: the SSL encoder of the first fold run "
    "(its training clips included: one feature space, not a test result), "
    "next to the random-init encoder; coloured by label."
)


def carbon_lines(c: dict) -> list[str]:
    lines = ["## Carbon", ""]
    if not c.get("phases"):
        return lines + ["- no phase ran", ""]
    lines.append(
        f"- {c.get('n_devices')} x {c.get('device_kind')} at {c.get('tdp_w')} W "
        f"({c.get('tdp_source')}); {c.get('country')}, "
        f"{c.get('carbon_intensity_kg_per_kwh')} kg CO2e/kWh; measured GPU: "
        f"{c.get('measured_gpu_source')}; measured CPU: {c.get('measured_cpu_source')}"
    )
    for ph in [*c["phases"], c["total"]]:
        measured = (
            ""
            if ph["measured_kwh"] is None
            else f", measured {ph['measured_kwh']:.4g} kWh / {ph['measured_kg_co2e']:.4g} kg"
        )
        lines.append(
            f"- {ph['phase']} (all {c['folds']} fold(s)): {ph['time_s']:.0f} s, model "
            f"{ph['model_kwh']:.4g} kWh / {ph['model_kg_co2e']:.4g} kg CO2e{measured}"
        )
    be = c.get("break_even")
    if be:
        n = be["break_even_n"]
        lines.append(
            f"- Break-even ({be['source']}): pretraining x = {be['pretrain_kg']:.4g} kg "
            f"({be['pretrain_kwh']:.4g} kWh) per fold, one SSL fine-tune y = "
            f"{be['finetune_kg']:.4g} kg ({be['finetune_run_s']:.1f} s), one supervised run "
            f"z = {be['supervised_kg']:.4g} kg ({be['supervised_run_s']:.1f} s): "
            + (
                f"SSL pays off after n = {be['break_even_n_int']} downstream task(s) (n* = {n:.3g})"
                if n != "never"
                else "never (a fine-tune costs at least a supervised run)"
            )
        )
        lines.append(f"- Basis: {be['basis']}.")
        if be["supervised_kg"] and abs(be["finetune_kg"] / be["supervised_kg"] - 1) < 0.2:
            lines.append(
                "- SSL fine-tuning and scratch share the architecture and the step "
                "budget, so y ≈ z: cheaper fine-tunes do not pay the pretraining back; "
                "what it buys is the accuracy difference above."
            )
    else:
        lines.append(
            "- Break-even: not computed (it needs the pretraining, SSL fine-tuning and "
            "scratch fine-tuning runs: protocols finetune, baselines scratch)"
        )
    return lines + [""]


def headline(results: dict) -> str:
    """One line: the 10%-label (else the smallest) linear-probe balanced accuracy, SSL vs
    scratch, with p."""
    tests = [t for t in results["paired_tests"] if t["ssl_protocol"] == "linear"] or results[
        "paired_tests"
    ]
    if not tests:
        return "no SSL vs scratch comparison (needs the scratch baseline and fine-tuning)"
    t = min(tests, key=lambda t: (abs(t["fraction"] - 0.1), t["fraction"]))
    rows = {
        (r["encoder"], r["protocol"]): r
        for r in results["pooled"]
        if r["task"] == t["task"] and r["fraction"] == t["fraction"]
    }
    ssl = rows[("ssl", t["ssl_protocol"])]["balanced_accuracy"]["value"]
    base = rows[("scratch", "finetune")]["balanced_accuracy"]["value"]
    return (
        f"{t['task']}, {t['fraction'] * 100:g}% labels: SSL {t['ssl_protocol']} balanced "
        f"accuracy {_pct(ssl)}% vs scratch {_pct(base)}% (difference {_pp(t['difference'])}"
        f" points, p = {t['p']:.3g})"
    )


def render_plots(out_dir: Path, config, data, tasks, table, carbon, fold_results) -> list[str]:
    """Label efficiency with CI bars per task, carbon break-even, clip embeddings."""
    from lusjax import carbon_report
    from lusjax.eval import plots

    paths = []
    for task in tasks:
        curves = collections.defaultdict(list)
        for r in table:
            if r["task"] == task:
                ba = r["balanced_accuracy"]
                # "random" in a name draws it dashed (plots.label_efficiency): the baselines.
                name = {
                    "scratch": "scratch (random-init) / finetune",
                    "pixels": "pixels / PCA + linear",
                }.get(r["encoder"], f"{r['encoder']} / {r['protocol']}")
                curves[name].append(
                    (
                        r["fraction"],
                        ba["value"],
                        ba["value"] - ba["ci"][0],
                        ba["ci"][1] - ba["value"],
                    )
                )
        if curves:
            lines = {}
            for name, pts in curves.items():
                fr, mean, lo, hi = map(np.asarray, zip(*sorted(pts)))
                lines[name] = (fr, mean, np.stack([lo, hi]))
            paths.append(
                plots.label_efficiency(
                    lines,
                    out_dir / f"label_efficiency_{task}.png",
                    metric="clip_balanced_accuracy",
                    title=f"{task}: clip balanced accuracy, {config.ci * 100:g}% CI (patients)",
                )
            )
    if carbon.get("break_even"):
        path = out_dir / "carbon_break_even.png"
        carbon_report.plot_break_even(carbon["break_even"], path)
        paths.append(path)
    if config.plots.embeddings and fold_results:
        emb = fold_results[0]["embeddings"]
        index = {v: i for i, v in enumerate(data.clips.video_id)}
        idx = np.array([index[v] for v in emb["emb_video_id"]])
        task = next(iter(tasks))
        paths.append(
            plots.embeddings(
                {
                    f"SSL (fold {fold_results[0]['fold']} encoder)": emb["emb_ssl"],
                    "random-init": emb["emb_random"],
                },
                data.clips.targets(task)[0][idx],
                tasks[task],
                out_dir / "embeddings_tsne.png",
                seed=config.fold_seed,
                title=f"clip embeddings (t-SNE), coloured by {task}",
            )
        )
    return [str(p) for p in paths]
