"""The evaluation protocol: `run(config) -> results`, driven by `configs/eval.py`.

    lusjax eval --config configs/eval.py --config.encoder=WORKDIR --config.data_dir=DATA

Reads top to bottom: data -> tasks -> folds -> encoders -> features -> `plan`
(every encoder x fold x label fraction x seed x protocol, as a list of `Job`s) ->
`fit` (each job's evaluator, `evaluators.get(name)`, fitted on its training clips
and scored on its test clips) -> `score` (metrics per fold and pooled over folds)
-> results.json, results.md, PNG plots (and the heads `lusjax predict` uses).

Frozen protocols (linear, MLP, kNN) fit one head per task on the shared
features; fine-tuning trains one backbone with all task heads at once. Folds
and label fractions are drawn once per clip, stratified by the clip label, so
every task and protocol sees exactly the same clips.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import numpy as np

from lusjax import config as config_lib
from lusjax.errors import UserError
from lusjax.eval import evaluators, linear, metrics, plots, splits
from lusjax.eval import features as feats_lib
from lusjax.eval.results import (
    PROTOCOLS,
    crosscheck_table,
    dataset_summary,
    hardware,
    summarize,
    write_outputs,
)
from lusjax.layout import PRETRAIN_CLIPS

PRETRAINED, RANDOM = "pretrained", "random-init"
CROSSCHECK = "sklearn"  # the evaluator that checks the linear probe (config.linear.sklearn_check)


def run(config) -> dict:
    """Runs the whole protocol of `config`; writes and returns the results dict."""
    t0 = time.time()
    out_dir = Path(config.out_dir).expanduser()
    protocols = parse_protocols(config.protocol)
    notes: list[str] = []

    # Data: per-frame arrays, pooled over the CV splits (+ a fixed test split).
    data_dir = resolve_data_dir(config)
    data, fixed_test = load_frames(data_dir, config)
    tasks = usable_tasks(data.clips, parse_list(config.tasks), config.min_clips_per_class, notes)

    # Folds by clip, grouped by patient, stratified by the first task.
    strat, _ = data.clips.targets(next(iter(tasks)))
    groups = splits.groups_of(data.clips.video_id, data.clips.patient_id)
    known_any = np.any([data.clips.targets(t)[0] >= 0 for t in tasks], axis=0)
    if fixed_test is None:
        cv = np.flatnonzero(known_any)
        folds, fold_notes = splits.kfold(
            strat[cv],
            groups[cv],
            config.folds,
            config.fold_seed,
            data.clips.targets(next(iter(tasks)))[1],
        )
        folds = [splits.Fold(cv[f.train], cv[f.test]) for f in folds]
        notes += fold_notes
    else:
        folds = [
            splits.Fold(
                np.flatnonzero(known_any & ~fixed_test), np.flatnonzero(known_any & fixed_test)
            )
        ]
    for f in folds:  # the leakage gates, before anything is fitted
        splits.check_disjoint(f.train, f.test, data.clips.video_id, data.clips.patient_id)
    notes += check_pretraining(config, data, np.unique(np.concatenate([f.test for f in folds])))
    fractions = [float(f) for f in config.label_fractions]
    notes += fraction_notes(folds, strat, fractions)

    timing = {"data_s": time.time() - t0}
    encoders = build_encoders(config)
    frozen = any(evaluators.get(p).reads == "features" for p in protocols)
    feats = {}
    for name, enc in encoders.items():
        if frozen or config.plots.embeddings:
            feats[name] = feats_lib.extract(
                enc, data, config.batch_size, config.progress, desc=f"features ({name})"
            )
    timing["features_s"] = time.time() - t0 - timing["data_s"]

    # Plan (what to evaluate, as data), fit (each job's evaluator), score (metrics).
    jobs = plan(config, protocols, list(encoders), folds, strat, data)
    setup = Setup(data, {t: len(n) for t, n in tasks.items()}, encoders, feats)
    predictions, fit_s = fit(jobs, setup, config)
    timing["fits_s"] = time.time() - t0 - sum(timing.values())
    timing.update({f"fit_{p}_s": v for p, v in fit_s.items()})
    pooled, runs, crosscheck = score(predictions, data, tasks)

    results = {
        "out_dir": str(out_dir),
        "config": config_lib.to_dict(config),
        "hardware": hardware(),
        "dataset": dataset_summary(data, data_dir, tasks, folds),
        "folds": [
            {
                "train": data.clips.video_id[f.train].tolist(),
                "test": data.clips.video_id[f.test].tolist(),
            }
            for f in folds
        ],
        "runs": runs,
        "summary": summarize(runs),
        "crosscheck": crosscheck_table(crosscheck, data, tasks, pooled),
    }
    if config.save_heads:
        results["heads"] = save_heads(out_dir, encoders, feats, data, tasks, config)
    t_plots = time.time()
    results["plots"] = plots.render(
        out_dir,
        results["summary"],
        pooled,
        data,
        tasks,
        feats,
        metric=config.plots.metric,
        embeddings_plot=config.plots.embeddings,
        use_umap=config.plots.umap,
        seed=config.fold_seed,
        notes=notes,
    )
    results["notes"] = sorted(set(notes))
    timing["plots_s"] = time.time() - t_plots
    results["seconds"] = round(time.time() - t0, 1)
    results["timing"] = {k: round(v, 1) for k, v in timing.items()}
    write_outputs(out_dir, results)
    return results


# ---------------------------------------------------------------------------
# Plan, fit, score.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One fit of the plan: `evaluator` on `encoder`'s frames of the clips `train` (fold
    `fold`'s training clips at a label fraction, drawn with `seed`), scored on `test`."""

    encoder: str
    evaluator: str
    fold: int
    fraction: float
    seed: int
    train: np.ndarray  # clip indices
    test: np.ndarray  # clip indices


def plan(config, protocols: list[str], encoders: list[str], folds, strat, data) -> list[Job]:
    """Every fit of the protocol, in order: encoders x folds x label fractions x seeds x
    protocols (the per-task frozen ones first, the linear probe's scikit-learn cross-check
    after them at fraction 1.0 and seed 0, then the joint fine-tuning). Every job's
    training clips pass the leakage gate against its test clips here, before any fit.
    Tasks are not a dimension: each job predicts every task."""
    names = [p for p in protocols if not evaluators.get(p).joint]
    if "linear" in protocols and config.linear.sklearn_check:
        names.append(CROSSCHECK)
    names += [p for p in protocols if evaluators.get(p).joint]
    jobs = []
    for enc in encoders:
        for fi, fold in enumerate(folds):
            for fraction in [float(f) for f in config.label_fractions]:
                for seed in range(config.seeds):
                    train = splits.label_fraction(fold.train, strat, fraction, seed)
                    splits.check_disjoint(
                        train, fold.test, data.clips.video_id, data.clips.patient_id
                    )
                    for name in names:
                        if name == CROSSCHECK and (fraction != 1.0 or seed != 0):
                            continue
                        if seed in evaluators.get(name).seeds(config):
                            jobs.append(Job(enc, name, fi, fraction, seed, train, fold.test))
    return jobs


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every job reads: the frames, the tasks (-> number of classes), the encoders
    by name and their frozen features (if extracted)."""

    data: feats_lib.Frames
    tasks: dict[str, int]
    encoders: dict
    features: dict

    def inputs(self, encoder: str, clips: np.ndarray) -> evaluators.Inputs:
        """The frames of `clips` as `encoder`'s evaluators see them."""
        return evaluators.Inputs(
            self.data,
            splits.frames_of(self.data.frame_clip, clips),
            self.tasks,
            self.features.get(encoder),
            self.encoders[encoder],
        )


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One task's test-frame probabilities from one job."""

    job: Job
    task: str
    frames: np.ndarray  # the test frames scored: those with a known target
    probs: np.ndarray  # [M, K]
    info: dict  # what the evaluator records of its fit


def fit(jobs: list[Job], setup: Setup, config) -> tuple[list[Prediction], dict[str, float]]:
    """Runs the plan: each job's evaluator fitted on its training frames and scored on its
    test frames. Returns (the predictions, seconds spent per evaluator)."""
    out: list[Prediction] = []
    fit_s: dict[str, float] = collections.defaultdict(float)
    bar = _progress(config, len(jobs))
    for job in jobs:
        t_fit = time.time()
        train, test = setup.inputs(job.encoder, job.train), setup.inputs(job.encoder, job.test)
        ev = evaluators.get(job.evaluator)
        scored, info = evaluators.fit_score(ev, train, test, config, job.seed)
        fit_s[job.evaluator] += time.time() - t_fit
        out += [Prediction(job, t, te, p, info) for t, (te, p) in scored.items() if len(te)]
        bar.update(1)
    bar.close()
    return out, dict(fit_s)


def score(predictions: list[Prediction], data, tasks: dict) -> tuple[dict, list[dict], dict]:
    """Metrics of the predictions: per fold, and pooled over folds (every labelled clip is
    tested exactly once). Returns (test-frame probabilities [N, K] per run key (encoder,
    protocol, task, fraction, seed), NaN where not tested; the runs of results.json; the
    cross-check's probabilities per (encoder, task))."""
    pooled: dict[tuple, np.ndarray] = {}
    per_fold: dict[tuple, list] = collections.defaultdict(list)
    crosscheck: dict[tuple, np.ndarray] = {}
    for p in predictions:
        j, names = p.job, tasks[p.task]
        if j.evaluator == CROSSCHECK:
            empty = np.full((len(data), len(names)), np.nan)
            crosscheck.setdefault((j.encoder, p.task), empty)[p.frames] = p.probs
            continue
        key = (j.encoder, j.evaluator, p.task, j.fraction, j.seed)
        arr = pooled.setdefault(key, np.full((len(data), len(names)), np.nan))
        arr[p.frames] = p.probs
        per_fold[key].append(
            {
                "fold": j.fold,
                "n_train_clips": len(j.train),
                **p.info,
                **_fold_metrics(p, data, names),
            }
        )
    runs = []
    for key, probs in pooled.items():
        enc_name, proto, task, fraction, seed = key
        tested = ~np.isnan(probs[:, 0])
        y = data.frame_targets(task)
        runs.append(
            {
                "encoder": enc_name,
                "protocol": proto,
                "task": task,
                "fraction": fraction,
                "seed": seed,
                "per_fold": per_fold[key],
                "pooled": metrics.evaluate(
                    probs[tested], y[tested], data.frame_clip[tested], tasks[task]
                ),
            }
        )
    return pooled, runs, crosscheck


def _fold_metrics(p: Prediction, data, names: list[str]) -> dict:
    te = p.frames
    m = metrics.evaluate(p.probs, data.frame_targets(p.task)[te], data.frame_clip[te], names)
    return {
        "n_test_clips": len(np.unique(data.frame_clip[te])),
        "n_test_frames": len(te),
        **{level: {s: m[level][s] for s in metrics.SCALARS} for level in ("frame", "clip")},
        "notes": sorted(set(m["frame"]["notes"] + m["clip"]["notes"])),
    }


def fraction_notes(folds, strat: np.ndarray, fractions: list[float]) -> list[str]:
    """A note when label fractions select the same clips (tiny data: one per class)."""
    counts = {}
    for fr in fractions:
        key = tuple(len(splits.label_fraction(f.train, strat, fr, 0)) for f in folds)
        counts.setdefault(key, []).append(fr)
    return [
        f"label fractions {' and '.join(f'{f * 100:g}%' for f in frs)} select the same "
        f"number of training clips here ({np.mean(key):.1f} per fold: at least one per "
        "class), so their results coincide"
        for key, frs in counts.items()
        if len(frs) > 1
    ]


def _progress(config, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="eval fits", unit="fit", disable=not config.progress)


# ---------------------------------------------------------------------------
# Setup: protocols, data, tasks, encoders.
# ---------------------------------------------------------------------------


def parse_list(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def parse_protocols(value) -> list[str]:
    names = parse_list(value)
    if "all" in names:
        return list(PROTOCOLS)
    bad = [n for n in names if n not in PROTOCOLS]
    if bad or not names:
        close = [c for n in bad for c in config_lib.suggest(n, PROTOCOLS)]
        hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        raise UserError(
            f"unknown protocol {', '.join(bad) or repr(value)}{hint} (choose from "
            f"{', '.join(PROTOCOLS)} or all)"
        )
    return names


def resolve_data_dir(config) -> str:
    """config.data_dir, else the dataset the encoder was pretrained on."""
    if config.data_dir:
        return str(Path(config.data_dir).expanduser())
    if config.encoder != "random":
        from lusjax.app import default_data

        saved = config_lib.load_saved(config.encoder)
        if "data" in saved:
            return default_data.ensure_data(saved.data)
    raise UserError("set --config.data_dir (a dataset made by `lusjax prep`)")


def load_frames(data_dir: str, config):
    """(frames of the CV splits [+ the test split], bool [C] marking test-split clips or None).

    With a test split and no `splits`, training uses every other split."""
    if not config.test_split:
        return feats_lib.load(data_dir, config.splits, config.frames_per_clip), None
    names = feats_lib.split_names(data_dir, config.splits)
    if not config.splits:  # test_split may join several ("fold3+fold4" or "fold3,fold4")
        test_names = feats_lib.split_names(data_dir, config.test_split)
        names = [n for n in names if n not in test_names]
    if not names:
        raise UserError(f"no split left to train on beside the test split {config.test_split!r}")
    data = feats_lib.load(data_dir, names, config.frames_per_clip)
    test = feats_lib.load(
        data_dir, config.test_split, config.frames_per_clip, setting="--config.test_split"
    )
    merged = feats_lib.concat(data, test)
    return merged, np.arange(len(merged.clips)) >= len(data.clips)


def usable_tasks(clips, names: list[str], min_clips: int, notes: list) -> dict[str, list[str]]:
    """The tasks with at least two classes of `min_clips` clips each; others get a note.

    The rule: the clip-label task `label` with no labelled clip at all is an error
    (the metadata gave no labels: nothing the user asked for can be measured); a
    task with some labels but too few per class, and a binary finding that no clip
    records (the default `tasks` asks for every finding, most metadata has some),
    is skipped with a note.
    """
    out = {}
    for task in names:
        y, class_names = clips.targets(task)
        if task == feats_lib.LABEL_TASK and not (y >= 0).any():
            raise UserError(
                f"task 'label' has no labelled clip among the {len(y)} evaluated "
                f"({labels_present(clips)}); give the metadata a 'label' column "
                "and prep again, or set --config.tasks to tasks that have labels"
            )
        counts = np.bincount(y[y >= 0], minlength=len(class_names))
        if (counts >= min_clips).sum() < 2:
            notes.append(
                f"task {task!r} skipped: clips per class {counts.tolist()} "
                f"({', '.join(class_names)}); needs 2 classes with >= {min_clips}"
            )
            continue
        out[task] = class_names
    if not out:
        raise UserError(f"no usable task among {', '.join(names)}: " + "; ".join(notes))
    return out


def labels_present(clips) -> str:
    """Which tasks have labelled clips, in words: "labels exist for: b_lines (12 clips)"."""
    from lusjax.data.format import FINDINGS

    have = []
    for task in (feats_lib.LABEL_TASK, *FINDINGS):
        n = int((clips.targets(task)[0] >= 0).sum())
        if n:
            have.append(f"{task} ({n} clips)")
    return "labels exist for: " + ", ".join(have) if have else "no clip has any label"


def build_encoders(config) -> dict:
    """{"pretrained": the encoder of config.encoder, "random-init": same architecture} ."""
    from lusjax.encoder import Encoder

    if config.encoder == "random":
        m = config.model
        return {
            RANDOM: Encoder.random_init(
                m.name,
                {"num_channels": m.num_channels, "width": m.width, "dtype": m.dtype},
                config.image_size,
                seed=config.init_seed,
            )
        }
    from lusjax.checkpoint import load_encoder

    enc = load_encoder(config.encoder)
    out = {PRETRAINED: enc}
    if config.baseline:
        out[RANDOM] = Encoder.random_init(
            enc.model_name, enc.model_kwargs, enc.image_size, seed=config.init_seed
        )
    return out


def check_pretraining(config, data, test_clips: np.ndarray) -> list[str]:
    """The pretraining leakage gate for `config.encoder` (see `splits.check_pretraining`):
    refuses test clips/patients its pretraining saw unless config.allow_pretrain_overlap."""
    if config.encoder == "random":
        return []
    seen = splits.read_pretraining(config.encoder)
    if seen is None:
        note = (
            f"{config.encoder} has no {PRETRAIN_CLIPS}: cannot check that the "
            "test clips were not seen in pretraining"
        )
        return [note]
    return splits.check_pretraining(
        test_clips,
        data.clips.video_id,
        data.clips.patient_id,
        seen,
        allow=config.allow_pretrain_overlap,
    )


# ---------------------------------------------------------------------------
# Heads for `lusjax predict`, and the quick probe for the quickstart.
# ---------------------------------------------------------------------------


def save_heads(out_dir: Path, encoders, feats, data, tasks, config) -> dict:
    """Linear heads on every labelled clip, on the features of config.encoder's encoder,
    saved for `lusjax predict`."""
    from lusjax.eval import predict

    name = PRETRAINED if PRETRAINED in encoders else RANDOM
    x = feats.get(name)
    if x is None:
        x = feats_lib.extract(encoders[name], data, config.batch_size)
    heads = {}
    for task, names in tasks.items():
        y = data.frame_targets(task)
        probe = linear.fit_probe(x[y >= 0], y[y >= 0], len(names), **linear.settings(config))
        heads[task] = (probe, names)
    return predict.save_heads(
        out_dir,
        heads,
        encoder=encoders[name],
        encoder_spec=config.encoder,
        encoder_name=name,
        init_seed=config.init_seed,
    )


def linear_probe_accuracy(
    encoder,
    data_dir,
    train_split: str = "train",
    test_split: str = "test",
    frames_per_clip: int = 0,
    seed: int = 0,
    pretraining: dict | None = None,
    allow_pretrain_overlap: bool = False,
    train_setting: str = "--train-split",
    test_setting: str = "--test-split",
) -> dict:
    """Frame- and clip-level accuracy of a linear probe (fast; for the quickstart).

    Trains the JAX linear probe on the clip labels of `train_split`, tests on
    `test_split`; clips and patients must not overlap, and none of the test clips
    (or patients) may be among `pretraining`'s (the encoder's pretrain_clips.json,
    `splits.read_pretraining`) unless `allow_pretrain_overlap` (leakage gates).
    """
    t0 = time.time()
    train = feats_lib.load(data_dir, train_split, frames_per_clip, setting=train_setting)
    test = feats_lib.load(data_dir, test_split, frames_per_clip, setting=test_setting)
    data = feats_lib.concat(train, test)
    tr_clips = np.arange(len(train.clips))
    te_clips = np.arange(len(train.clips), len(data.clips))
    splits.check_disjoint(tr_clips, te_clips, data.clips.video_id, data.clips.patient_id)
    splits.check_pretraining(
        te_clips,
        data.clips.video_id,
        data.clips.patient_id,
        pretraining,
        allow=allow_pretrain_overlap,
        flag="allow_pretrain_overlap=True",
    )
    x = feats_lib.extract(encoder, data)
    y = data.frame_targets("label")
    tr = splits.frames_of(data.frame_clip, tr_clips)
    te = splits.frames_of(data.frame_clip, te_clips)
    tr, te = tr[y[tr] >= 0], te[y[te] >= 0]
    if len(tr) == 0 or len(te) == 0:
        raise UserError(f"linear probe needs labelled clips in {train_split!r} and {test_split!r}")
    k = len(data.clips.class_names)
    probs = linear.fit_predict(x[tr], y[tr], x[te], k, seed)
    m = metrics.evaluate(probs, y[te], data.frame_clip[te], data.clips.class_names)
    return {
        "frame_accuracy": m["frame"]["accuracy"],
        "clip_accuracy": m["clip"]["accuracy"],
        "frame_balanced_accuracy": m["frame"]["balanced_accuracy"],
        "clip_balanced_accuracy": m["clip"]["balanced_accuracy"],
        "n_train_clips": len(np.unique(data.frame_clip[tr])),
        "n_train_frames": len(tr),
        "n_test_clips": len(np.unique(data.frame_clip[te])),
        "n_test_frames": len(te),
        "seconds": round(time.time() - t0, 2),
    }
