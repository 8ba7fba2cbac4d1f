"""`lusjax study`: per-fold SSL pretraining + evaluation vs baselines, driven by configs/study.py.

    lusjax study --config configs/study.py --config.data_dir=DATA

Reads top to bottom: data (minus excluded classes) -> tasks -> folds (clip
level, grouped by patient, stratified by label) -> for each fold to run:
pretrain on the other folds' clips only (`train.train`, data.clips_file) ->
check its pretrain_clips.json holds no test clip or patient -> features of
the fold's SSL encoder and of a random-init one -> for each label fraction x
seed: the frozen protocols and fine-tuning (`evaluators.get(name)`) on the
fold's training clips, the scratch and pixel baselines -> clip probabilities
of the test clips, saved per fold -> pooled statistics, study.json / .md and
plots (`lusjax.study_report`).

Resumable: a fold whose result.json exists is read back, not rerun (its
fingerprint must match the config); a finished pretraining (pretrain.json)
is not redone, and an interrupted one resumes from its checkpoints. Energy
and CO2e of each phase (pretrain, eval = features + frozen probes, finetune =
SSL fine-tuning, supervised = scratch) are stored with the fold's results, so
totals survive a resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from lusjax import carbon, files
from lusjax import config as config_lib
from lusjax.errors import UserError
from lusjax.eval import evaluators, metrics, protocol, splits
from lusjax.eval import features as feats_lib
from lusjax.eval.results import _jsonable
from lusjax.layout import (
    CHECKPOINTS_DIR,
    CLIPS_JSON,
    FOLD_JSON,
    FOLD_NPZ,
    PRETRAIN_CLIPS,
    PRETRAIN_JSON,
    STUDY_PRETRAIN_DIR,
    study_fold,
)

SSL, RANDOM, SCRATCH, PIXELS = "ssl", "random-init", "scratch", "pixels"
BASELINES = ("scratch", "pixels")
# Keys that change how results are shown, not what they are: a rerun may change them.
_PRESENTATION = ("out_dir", "progress", "run_folds", "bootstrap", "ci", "plots", "carbon")


def run(config) -> dict:
    """Runs the study of `config`; writes and returns study.json's content."""
    from lusjax import study_report

    t0 = time.time()
    out_dir = Path(config.out_dir).expanduser()
    notes: list[str] = []
    protocols = protocol.parse_protocols(config.protocols)
    baselines = parse_baselines(config.baselines)

    # --- Data: the study's clips, minus the excluded classes ------------------------
    data_dir = resolve_data_dir(config)
    split_names = feats_lib.split_names(data_dir, config.splits)
    data = feats_lib.load(data_dir, split_names, config.frames_per_clip)
    excluded = protocol.parse_list(config.exclude_classes)
    data, removed = feats_lib.drop_classes(data, excluded)
    for name, n in removed.items():
        notes.append(
            f"{name!r} excluded: its {n} clip(s) are left out of the study "
            "entirely (pretraining, training and testing; config exclude_classes)"
        )
    for name in sorted(set(excluded) - set(removed)):
        notes.append(
            f"exclude_classes names {name!r}, not a class of this dataset: nothing excluded for it"
        )
    tasks = protocol.usable_tasks(
        data.clips, protocol.parse_list(config.tasks), config.min_clips_per_class, notes
    )

    # --- Folds ------------------------------------------------------------------------
    first = next(iter(tasks))
    strat, class_names = data.clips.targets(first)
    groups = splits.groups_of(data.clips.video_id, data.clips.patient_id)
    known = np.any([data.clips.targets(t)[0] >= 0 for t in tasks], axis=0)
    cv = np.flatnonzero(known)
    folds, fold_notes = splits.kfold(
        strat[cv], groups[cv], config.folds, config.fold_seed, class_names
    )
    folds = [splits.Fold(cv[f.train], cv[f.test]) for f in folds]
    notes += fold_notes
    for f in folds:  # the leakage gate between training and test clips
        splits.check_disjoint(f.train, f.test, data.clips.video_id, data.clips.patient_id)
    run_folds = parse_run_folds(config.run_folds, len(folds))
    if len(run_folds) < len(folds):
        notes.append(
            f"only folds {', '.join(map(str, run_folds))} of {len(folds)} were run "
            "(config run_folds): pooled metrics cover those folds' test clips only"
        )
    fractions = [float(f) for f in config.label_fractions]
    notes += protocol.fraction_notes([folds[k] for k in run_folds], strat, fractions)
    notes += fold_class_notes(folds, run_folds, strat, class_names)
    if (~known).any():
        notes.append(
            f"{int((~known).sum())} unlabelled clip(s) are in no test fold; each "
            "fold pretrains on those of them whose patient is not a test patient"
        )
    extra = check_pretrain_data(config, data, folds, run_folds)

    # --- Per fold: pretrain, evaluate, save -------------------------------------------
    ctx = {
        "config": config,
        "data": data,
        "data_dir": data_dir,
        "split_names": split_names,
        "tasks": tasks,
        "protocols": protocols,
        "baselines": baselines,
        "fractions": fractions,
        "strat": strat,
        "groups": groups,
        "known": known,
        "fingerprint": fingerprint(config),
        "extra": extra[0],
        "extra_ids": extra[1],
        "cache": {},
    }
    fold_results = []
    for k in run_folds:
        fold_results.append(run_fold(ctx, k, folds[k], out_dir / study_fold(k)))

    # --- Pooled statistics and outputs -------------------------------------------------
    return study_report.write(
        out_dir,
        config,
        data,
        data_dir,
        tasks,
        folds,
        run_folds,
        fold_results,
        notes,
        time.time() - t0,
    )


# ---------------------------------------------------------------------------
# One fold.
# ---------------------------------------------------------------------------


def run_fold(ctx: dict, k: int, fold: splits.Fold, fold_dir: Path) -> dict:
    """Pretrains and evaluates fold `k` (or reads back its saved result)."""
    config, data = ctx["config"], ctx["data"]
    done = read_fold(fold_dir, ctx["fingerprint"], data.clips.video_id[fold.test])
    if done is not None:
        print(f"fold {k}: finished earlier, results read from {fold_dir} (skipped)", flush=True)
        return done
    if (fold_dir / FOLD_JSON).is_file():
        print(
            f"fold {k}: evaluation settings changed since {fold_dir / FOLD_JSON} was "
            "written: evaluating again (its pretraining is reused if its settings match)",
            flush=True,
        )
    t_fold = time.time()
    pre = pretrain(ctx, k, fold, fold_dir)
    enc = _load_encoder(fold_dir / STUDY_PRETRAIN_DIR)
    # The leakage gate: the pretraining saw no test clip and no clip of a test patient.
    seen = splits.read_pretraining(fold_dir / STUDY_PRETRAIN_DIR)
    if seen is None:
        raise UserError(f"{fold_dir / STUDY_PRETRAIN_DIR} has no {PRETRAIN_CLIPS}")
    splits.check_pretraining(
        fold.test, data.clips.video_id, data.clips.patient_id, seen, flag="(no override in a study)"
    )

    tracker = carbon.Tracker(country=config.carbon.country, measure=config.carbon.measure)
    cache = ctx["cache"]
    with tracker.phase("eval"):
        x = {
            SSL: feats_lib.extract(
                enc, data, config.batch_size, config.progress, desc=f"fold {k} features (ssl)"
            )
        }
        if RANDOM not in cache:  # the same weights for every fold: extracted once
            from lusjax.encoder import Encoder

            rand = Encoder.random_init(
                enc.model_name, enc.model_kwargs, enc.image_size, seed=config.init_seed
            )
            cache[RANDOM] = (
                rand,
                feats_lib.extract(
                    rand, data, config.batch_size, config.progress, desc="features (random)"
                ),
            )
        rand, x[RANDOM] = cache[RANDOM]

    frozen = [p for p in ctx["protocols"] if evaluators.get(p).reads == "features"]
    tuned = [p for p in ctx["protocols"] if evaluators.get(p).reads == "encoder"]
    runs: list[dict] = []
    # Seconds of each fine-tuning run: the first one also compiles (the scratch runs
    # reuse its compiled steps), so a run's cost is taken at the median duration.
    run_s: dict[str, list[float]] = {"finetune": [], "supervised": []}
    bar = _progress(config, len(ctx["fractions"]) * config.seeds, f"fold {k} fits")
    for fraction in ctx["fractions"]:
        for seed in range(config.seeds):
            train_clips = splits.label_fraction(fold.train, ctx["strat"], fraction, seed)
            splits.check_disjoint(
                train_clips, fold.test, data.clips.video_id, data.clips.patient_id
            )
            fit = (ctx, data, train_clips, fold.test, seed, fraction, runs)
            with tracker.phase("eval"):
                _fit(*fit, SSL, enc, x[SSL], frozen)
                if SCRATCH in ctx["baselines"]:
                    _fit(*fit, RANDOM, rand, x[RANDOM], frozen)
                if PIXELS in ctx["baselines"]:
                    _fit(*fit, PIXELS, None, None, ["pixels"])
            for name in [p for p in tuned if seed in evaluators.get(p).seeds(config)]:
                t_run = time.time()
                with tracker.phase("finetune"):
                    _fit(*fit, SSL, enc, None, [name])
                run_s["finetune"].append(time.time() - t_run)
                if SCRATCH in ctx["baselines"]:
                    t_run = time.time()
                    with tracker.phase("supervised"):
                        _fit(*fit, SCRATCH, rand, None, [name])
                    run_s["supervised"].append(time.time() - t_run)
            bar.update(1)
    bar.close()
    summary = tracker.summary()
    tracker.close()
    result = {
        "fold": k,
        "fingerprint": ctx["fingerprint"],
        "train": data.clips.video_id[fold.train].tolist(),
        "test": data.clips.video_id[fold.test].tolist(),
        "pretrain": pre,
        "pretrain_clips": len(seen["video_id"]),
        "carbon": {
            "phases": [pre["carbon"], *summary["phases"]],
            **{
                key: summary[key]
                for key in (
                    "country",
                    "carbon_intensity_kg_per_kwh",
                    "platform",
                    "device_kind",
                    "n_devices",
                    "tdp_w",
                    "tdp_source",
                    "measured_gpu_source",
                    "measured_cpu_source",
                )
            },
        },
        "run_s": run_s,
        "wall_s": round(time.time() - t_fold, 1),
        "per_fold": [{key: r[key] for key in r if key not in ("probs", "video_id")} for r in runs],
    }
    emb_ssl, clip_idx = feats_lib.clip_embeddings(x[SSL], data.frame_clip)
    emb_rand, _ = feats_lib.clip_embeddings(x[RANDOM], data.frame_clip)
    write_fold(
        fold_dir,
        result,
        runs,
        {"emb_ssl": emb_ssl, "emb_random": emb_rand, "emb_video_id": data.clips.video_id[clip_idx]},
    )
    print(f"fold {k}: done in {result['wall_s']:.0f} s", flush=True)
    return read_fold(fold_dir, ctx["fingerprint"], data.clips.video_id[fold.test])


def _fit(
    ctx, data, train_clips, test_clips, seed, fraction, runs, encoder_name, encoder, x, protos
):
    """Fits the evaluators `protos` (`evaluators.get`) on the training clips with features
    `x` (or the encoder, or the pixels: what each reads); appends clip-level runs."""
    k = {t: len(n) for t, n in ctx["tasks"].items()}

    def inputs(clips):
        return evaluators.Inputs(data, splits.frames_of(data.frame_clip, clips), k, x, encoder)

    for proto in protos:
        scored, info = evaluators.fit_score(
            evaluators.get(proto), inputs(train_clips), inputs(test_clips), ctx["config"], seed
        )
        for task, (te, probs) in scored.items():
            if not len(te):
                continue
            y = data.frame_targets(task)[te]
            cp, cl, clips = metrics.clip_probs(probs, data.frame_clip[te], y)
            names = ctx["tasks"][task]
            m = metrics.classification(cl, cp, names)
            runs.append(
                {
                    "encoder": encoder_name,
                    "protocol": proto,
                    "task": task,
                    "fraction": fraction,
                    "seed": seed,
                    "n_train_clips": len(train_clips),
                    "clip": {s: m[s] for s in metrics.SCALARS},
                    "info": info,
                    "probs": cp,
                    "video_id": data.clips.video_id[clips],
                }
            )


def pretrain(ctx: dict, k: int, fold: splits.Fold, fold_dir: Path) -> dict:
    """SSL pretraining of fold `k` on its training clips (and the unlabelled clips of
    non-test patients) in fold_dir/pretrain; skipped when pretrain.json says it finished."""
    from lusjax import train

    config, data = ctx["config"], ctx["data"]
    record = fold_dir / PRETRAIN_JSON
    test_groups = set(ctx["groups"][fold.test])
    unlabelled = [i for i in np.flatnonzero(~ctx["known"]) if ctx["groups"][i] not in test_groups]
    clip_ids = (
        sorted(data.clips.video_id[np.concatenate([fold.train, unlabelled]).astype(int)].tolist())
        + ctx["extra_ids"]
    )
    cfg = pretrain_config(config, ctx, fold_dir)
    settings = config_lib.to_dict(cfg)
    settings.pop("workdir")  # where, not what: the same out_dir may be spelled otherwise
    settings["data"].pop("clips_file")  # its content, clip_ids, is hashed instead
    fp = hashlib.sha256(json.dumps([settings, clip_ids], sort_keys=True).encode()).hexdigest()[:16]
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("fingerprint") != fp:
            raise UserError(
                f"{fold_dir / STUDY_PRETRAIN_DIR} was pretrained with other settings "
                "(recipe, data or fold clips): use another --config.out_dir, or "
                f"delete {fold_dir} to pretrain again"
            )
        print(f"fold {k}: pretraining finished earlier (skipped)", flush=True)
        return done
    if (fold_dir / CLIPS_JSON).is_file() and json.loads(
        (fold_dir / CLIPS_JSON).read_text()
    ) != clip_ids:
        raise UserError(
            f"{fold_dir / STUDY_PRETRAIN_DIR} holds a pretraining of other clips: use "
            f"another --config.out_dir, or delete {fold_dir} to pretrain again"
        )
    files.write_text_atomic(fold_dir / CLIPS_JSON, json.dumps(clip_ids) + "\n")
    print(
        f"fold {k}: pretraining {cfg.method}/{cfg.model.name} on {len(clip_ids)} clips "
        f"({cfg.total_steps} steps) in {cfg.workdir}",
        flush=True,
    )
    resumed = any((fold_dir / STUDY_PRETRAIN_DIR / CHECKPOINTS_DIR).glob("*"))
    t0 = time.time()
    summary = train.train(cfg, progress=config.progress)
    # Every segment of the pretraining (carbon.json's ledger): a resumed run counts the
    # energy of its earlier segments too.
    totals = carbon.read_ledger(cfg.workdir)["totals"]["phases"]
    phase = next(p for p in totals if p["phase"] == "pretrain")
    out = {
        "steps": summary["step"],
        "clips": len(clip_ids),
        "wall_s": round(time.time() - t0, 1),
        "carbon": phase,
        "final": summary.get("final", {}),
        "fingerprint": fp,
        # Resumed from a checkpoint: wall_s counts this process's part only.
        "resumed": resumed,
    }
    files.write_text_atomic(record, json.dumps(_jsonable(out), indent=1) + "\n")
    return out


def pretrain_config(config, ctx: dict, fold_dir: Path):
    """The recipe (config.train) pointed at this fold's clips and workdir."""
    cfg = config.train.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.workdir = str(fold_dir / STUDY_PRETRAIN_DIR)
        cfg.data.data_dir = ctx["data_dir"]
        cfg.data.train_split = "+".join(ctx["split_names"])
        cfg.data.extra_data_dir = ctx["extra"] or ""
        cfg.data.clips_file = str(fold_dir / CLIPS_JSON)
        cfg.probe.eval_every = 0  # its val split may hold test clips: no online probe eval
    cfg.lock()
    return cfg


def _load_encoder(workdir: Path):
    from lusjax.checkpoint import load_encoder

    return load_encoder(workdir)


# ---------------------------------------------------------------------------
# Saved fold results (resume).
# ---------------------------------------------------------------------------


def write_fold(fold_dir: Path, result: dict, runs: list[dict], arrays: dict) -> None:
    """result.npz (clip probabilities per run, embeddings), then result.json: the json
    is written last, so it marks a complete fold."""
    arrays = dict(arrays)
    for i, r in enumerate(runs):
        arrays[f"probs{i}"], arrays[f"video_id{i}"] = r["probs"], r["video_id"].astype(str)
    fold_dir.mkdir(parents=True, exist_ok=True)
    tmp = fold_dir / f".{FOLD_NPZ}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(fold_dir / FOLD_NPZ)
    files.write_text_atomic(fold_dir / FOLD_JSON, json.dumps(_jsonable(result), indent=1) + "\n")


def read_fold(fold_dir: Path, fp: str, test_ids) -> dict | None:
    """A saved fold result with its runs' clip probabilities, or None if not finished."""
    path = fold_dir / FOLD_JSON
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("fingerprint") != fp or sorted(result["test"]) != sorted(map(str, test_ids)):
        return None  # other settings: evaluated again
    with np.load(fold_dir / FOLD_NPZ, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    for i, r in enumerate(result["per_fold"]):
        r["probs"], r["video_id"] = arrays[f"probs{i}"], arrays[f"video_id{i}"]
    result["embeddings"] = {key: arrays[key] for key in arrays if key.startswith("emb_")}
    return result


def fingerprint(config) -> str:
    """Hash of the settings that determine a fold's results."""
    d = config_lib.to_dict(config)
    for key in _PRESENTATION:
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Setup and checks.
# ---------------------------------------------------------------------------


def resolve_data_dir(config) -> str:
    """config.data_dir, else the recipe's data (the cached synthetic dataset by default)."""
    from lusjax.app import default_data

    if config.data_dir:
        data = config.train.data.copy_and_resolve_references()
        with data.unlocked():
            data.data_dir = str(Path(config.data_dir).expanduser())
        return default_data.ensure_data(data)
    return default_data.ensure_data(config.train.data)


def parse_baselines(value) -> list[str]:
    names = protocol.parse_list(value)
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise UserError(f"unknown baseline {', '.join(bad)}; choose from {', '.join(BASELINES)}")
    return names


def parse_run_folds(value, n_folds: int) -> list[int]:
    """ "" = every fold; "0,2" = those (each in [0, n_folds))."""
    names = protocol.parse_list(value)
    if not names:
        return list(range(n_folds))
    try:
        ks = sorted({int(v) for v in names})
    except ValueError:
        raise UserError(f"run_folds must be fold numbers like 0,1 (got {value!r})") from None
    bad = [k for k in ks if not 0 <= k < n_folds]
    if bad:
        raise UserError(
            f"run_folds {', '.join(map(str, bad))}: the study has folds 0..{n_folds - 1}"
        )
    return ks


def fold_class_notes(folds, run_folds, strat: np.ndarray, class_names: list[str]) -> list[str]:
    """Notes on thin classes: a class with < 2 training clips, or absent from a test fold."""
    notes = []
    for k in run_folds:
        f = folds[k]
        tr = np.bincount(strat[f.train][strat[f.train] >= 0], minlength=len(class_names))
        te = np.bincount(strat[f.test][strat[f.test] >= 0], minlength=len(class_names))
        for c, name in enumerate(class_names):
            if tr[c] < 2:
                notes.append(
                    f"fold {k}: class {name!r} has {tr[c]} training clip(s) (< 2): "
                    "its probes learn it from almost nothing"
                )
            if te[c] == 0:
                notes.append(
                    f"fold {k}: no test clip of class {name!r} (pooled metrics still "
                    "cover it through the other folds)"
                )
    return notes


def check_pretrain_data(config, data, folds, run_folds) -> tuple[str | None, list[str]]:
    """The extra unlabelled pretraining dataset (config.pretrain_data), after the leakage
    gate: refused if it holds a clip, or a clip of a patient, of a test fold that runs.
    Returns (its folder, its clip ids), or (None, [])."""
    if not config.pretrain_data:
        return None, []
    from lusjax.data import shards

    extra_dir = str(Path(config.pretrain_data).expanduser())
    extra = shards.open_split(extra_dir, "+".join(shards.list_splits(extra_dir))).clips
    seen = {"video_id": list(extra.video_id), "patient_id": list(extra.patient_id)}
    for k in run_folds:
        clips, patients = splits.pretraining_overlap(
            folds[k].test, data.clips.video_id, data.clips.patient_id, seen
        )
        if clips or patients:
            what = "; ".join(
                [f"{len(clips)} test clip(s): {', '.join(clips[:5])}"] * bool(clips)
                + [f"{len(patients)} test patient(s): {', '.join(patients[:5])}"] * bool(patients)
            )
            raise UserError(
                f"pretrain_data {extra_dir} overlaps fold {k}'s test set ({what}): "
                "pretraining would see test clips; remove them from it"
            )
    return extra_dir, sorted(map(str, extra.video_id))


def _progress(config, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="fit", disable=not config.progress, leave=False)
