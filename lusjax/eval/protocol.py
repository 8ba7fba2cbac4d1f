"""The evaluation protocol: `run(config) -> results`, driven by `configs/eval.py`.

    lusjax eval --config configs/eval.py --config.encoder=WORKDIR --config.data_dir=DATA

Reads top to bottom: data -> tasks -> folds -> encoders -> features -> for each
encoder x fold x label fraction x seed: fit every protocol on the training
clips, predict the test clips -> metrics per fold and pooled over folds ->
results.json, results.md, PNG plots (and the heads `lusjax predict` uses).

Frozen protocols (linear, MLP, kNN) fit one head per task on the shared
features; fine-tuning trains one backbone with all task heads at once. Folds
and label fractions are drawn once per clip, stratified by the clip label, so
every task and protocol sees exactly the same clips.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np

from lusjax import config as config_lib
from lusjax.errors import UserError
from lusjax.eval import features as feats_lib
from lusjax.eval import finetune, knn, linear, metrics, mlp, pixels, plots, splits
from lusjax.eval.results import (
    PROTOCOLS,
    crosscheck_table,
    dataset_summary,
    hardware,
    summarize,
    write_outputs,
)
from lusjax.layout import PRETRAIN_CLIPS

FROZEN = {
    "linear": linear.fit_predict,
    "mlp": mlp.fit_predict,
    "knn": knn.fit_predict,
    # `lusjax study`'s raw-pixel baseline: its "features" are the frames themselves.
    "pixels": pixels.fit_predict,
}
PRETRAINED, RANDOM = "pretrained", "random-init"


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
    frozen = [p for p in protocols if p in FROZEN]
    feats = {}
    for name, enc in encoders.items():
        if frozen or config.plots.embeddings:
            feats[name] = feats_lib.extract(
                enc, data, config.batch_size, config.progress, desc=f"features ({name})"
            )

    timing["features_s"] = time.time() - t0 - timing["data_s"]

    # Every fit, collected into test-frame probabilities per run key.
    pooled: dict[tuple, np.ndarray] = {}
    per_fold: dict[tuple, list] = collections.defaultdict(list)
    fit_s: dict[str, float] = collections.defaultdict(float)  # seconds fitting, per protocol
    crosscheck: dict[tuple, np.ndarray] = {}
    bar = _progress(config, len(encoders) * len(folds) * len(fractions) * config.seeds)
    for enc_name, enc in encoders.items():
        for fi, fold in enumerate(folds):
            for fraction in fractions:
                for seed in range(config.seeds):
                    train_clips = splits.label_fraction(fold.train, strat, fraction, seed)
                    splits.check_disjoint(
                        train_clips, fold.test, data.clips.video_id, data.clips.patient_id
                    )
                    sklearn_check = (
                        "linear" in protocols
                        and config.linear.sklearn_check
                        and fraction == 1.0
                        and seed == 0
                    )
                    t_fit = time.time()
                    for proto, task, te, probs, info in fit_split(
                        enc,
                        feats.get(enc_name),
                        data,
                        tasks,
                        protocols,
                        train_clips,
                        fold.test,
                        seed,
                        config,
                        sklearn_check,
                    ):
                        fit_s[proto] += time.time() - t_fit
                        if proto == "sklearn":
                            crosscheck.setdefault(
                                (enc_name, task), np.full((len(data), len(tasks[task])), np.nan)
                            )[te] = probs
                            continue
                        _record(
                            pooled,
                            per_fold,
                            (enc_name, proto, task, fraction, seed),
                            data,
                            task,
                            tasks[task],
                            te,
                            probs,
                            {"fold": fi, "n_train_clips": len(train_clips), **info},
                        )
                        t_fit = time.time()
                    bar.update(1)
    bar.close()
    timing["fits_s"] = time.time() - t0 - sum(timing.values())
    timing.update({f"fit_{p}_s": v for p, v in fit_s.items()})

    # Metrics pooled over folds (every labelled clip is tested exactly once).
    runs = []
    for key, probs in pooled.items():
        enc_name, proto, task, fraction, seed = key
        names = tasks[task]
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
                    probs[tested], y[tested], data.frame_clip[tested], names
                ),
            }
        )
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
# Fitting.
# ---------------------------------------------------------------------------


def fit_split(
    encoder,
    x,
    data,
    tasks: dict,
    protocols: list,
    train_clips,
    test_clips,
    seed: int,
    config,
    sklearn_check: bool = False,
):
    """Fits every protocol and task on one train/test split of clips.

    Yields (protocol, task, test frame indices, probabilities [M, K], info); with
    `sklearn_check`, also ("sklearn", ...) for scikit-learn's linear probe.
    """
    train_frames = splits.frames_of(data.frame_clip, train_clips)
    test_frames = splits.frames_of(data.frame_clip, test_clips)
    for proto in [p for p in protocols if p in FROZEN] + (["sklearn"] if sklearn_check else []):
        for task, names in tasks.items():
            probs, te = fit_frozen(
                proto, x, data, task, len(names), train_frames, test_frames, seed, config
            )
            yield proto, task, te, probs, {}
    if "finetune" in protocols and seed < config.finetune.seeds:
        probs, info = run_finetune(encoder, data, tasks, train_frames, test_frames, seed, config)
        for task in tasks:
            known = data.frame_targets(task)[test_frames] >= 0
            yield "finetune", task, test_frames[known], probs[task][known], {"chosen": info}


def fit_frozen(
    proto: str, x: np.ndarray, data, task: str, k: int, train_frames, test_frames, seed: int, config
) -> tuple[np.ndarray, np.ndarray]:
    """Fits `proto` on the training frames with a known target, predicts the test frames
    with a known target. Returns (probs [M, k], the test frame indices)."""
    y = data.frame_targets(task)
    tr = train_frames[y[train_frames] >= 0]
    te = test_frames[y[test_frames] >= 0]
    if len(te) == 0:
        return np.zeros((0, k)), te
    present = np.unique(y[tr])
    if len(present) < 2:  # nothing to learn: predict the one class seen (or uniform)
        probs = np.full((len(te), k), 1.0 / k)
        if len(present) == 1:
            probs = np.eye(k)[np.full(len(te), present[0])]
        return probs, te
    if proto == "sklearn":
        return linear.sklearn_probe(x[tr], y[tr], x[te], k, l2=config.linear.l2), te
    return FROZEN[proto](x[tr], y[tr], x[te], k, seed, **probe_kwargs(config, proto)), te


def probe_kwargs(config, proto: str) -> dict:
    """The keyword arguments of a frozen protocol from `config.<proto>`."""
    kwargs = {k: v for k, v in dict(config[proto]).items() if k != "sklearn_check"}
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
    return kwargs


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


def run_finetune(encoder, data, tasks: dict, train_frames, test_frames, seed: int, config):
    ft = config.finetune
    cfg = finetune.FinetuneConfig(
        steps=ft.steps,
        batch_size=ft.batch_size,
        optimizer=ft.optimizer,
        lrs=tuple(float(v) for v in ft.lrs),
        wds=tuple(float(v) for v in ft.wds),
        warmup_frac=ft.warmup_frac,
        val_fraction=ft.val_fraction,
        eval_batch_size=config.batch_size,
    )
    return finetune.fit_predict(
        encoder,
        data,
        train_frames,
        test_frames,
        {t: len(n) for t, n in tasks.items()},
        cfg,
        seed,
        stratify_task=next(iter(tasks)),
    )


def _record(pooled, per_fold, key, data, task, names, te, probs, fit_args):
    if len(te) == 0:
        return
    arr = pooled.setdefault(key, np.full((len(data), len(names)), np.nan))
    arr[te] = probs
    m = metrics.evaluate(probs, data.frame_targets(task)[te], data.frame_clip[te], names)
    per_fold[key].append(
        {
            **fit_args,
            "n_test_clips": len(np.unique(data.frame_clip[te])),
            "n_test_frames": len(te),
            **{level: {s: m[level][s] for s in metrics.SCALARS} for level in ("frame", "clip")},
            "notes": sorted(set(m["frame"]["notes"] + m["clip"]["notes"])),
        }
    )


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
        raise UserError(
            f"unknown protocol {', '.join(bad) or repr(value)}; choose from "
            f"{', '.join(PROTOCOLS)} or all"
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
        probe = linear.fit_probe(x[y >= 0], y[y >= 0], len(names), **probe_kwargs(config, "linear"))
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
