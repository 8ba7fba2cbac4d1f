"""Evaluation splits by clip: grouped stratified k-fold, label fractions, leakage gates.

Everything here works on per-clip numpy arrays (one entry per clip): labels,
patient ids, clip ids. Frames follow their clip (`frames_of`), so frames of one
clip never land on both sides. The group of a clip is its patient when known,
else the clip itself. All functions are deterministic for a seed and do not
depend on the order clips come in.

Two leakage gates, both raising a `UserError` that names the ids:
`check_disjoint` (no clip or patient on both sides of a train/test split) and
`check_pretraining` (no test clip, nor a clip of a test patient, among those
the SSL pretraining saw, as recorded in the run's `pretrain_clips.json`,
unless explicitly allowed).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

from lusjax import files
from lusjax.errors import UserError
from lusjax.layout import PRETRAIN_CLIPS


@dataclasses.dataclass(frozen=True)
class Fold:
    """Clip indices (into the per-clip arrays) of one train/test split."""

    train: np.ndarray
    test: np.ndarray


def groups_of(clip_ids: np.ndarray, patient_ids: np.ndarray | None) -> np.ndarray:
    """The grouping key of each clip: its patient when known, else the clip id."""
    clip_ids = np.asarray(clip_ids).astype(str)
    if patient_ids is None:
        return clip_ids
    patient_ids = np.asarray(patient_ids).astype(str)
    known = (patient_ids != "") & (patient_ids != clip_ids)
    return np.where(known, np.char.add("patient:", patient_ids), np.char.add("clip:", clip_ids))


def kfold(
    labels: np.ndarray,
    groups: np.ndarray,
    k: int = 5,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> tuple[list[Fold], list[str]]:
    """Stratified k-fold over clips with whole groups (patients) on one side.

    `labels` [C] int (-1 = unlabeled, its own stratum), `groups` [C] (see
    `groups_of`). When there are fewer groups than `k`, k shrinks to the number
    of groups; when a class has fewer groups than folds it cannot appear in every
    test fold: both give a note (returned; `lusjax eval` prints it and puts it in
    results.md), not an error and not a Python warning.

    Returns (folds, notes).
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    notes: list[str] = []
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise UserError(f"cross-validation needs at least 2 clips/patients, got {n_groups}")
    if n_groups < k:
        notes.append(f"only {n_groups} clips/patients: using {n_groups} folds instead of {k}")
        k = n_groups
    for c in np.unique(labels):
        n_c = len(np.unique(groups[labels == c]))
        if n_c < k and c >= 0:
            name = class_names[c] if class_names is not None else str(c)
            notes.append(
                f"class {name!r} has {n_c} clips/patients for {k} folds: it is absent "
                f"from {k - n_c} test fold(s); its per-fold metrics there are NaN"
            )

    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold  # slow import

    # Sort by (group, label) so the result does not depend on the input order.
    order = np.lexsort((labels, groups))
    largest = max(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    if largest >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:  # sklearn refuses to stratify when no class fills every fold
        notes.append(f"no class has {k} clips/patients: folds are grouped but not stratified")
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():  # our note above says it more clearly
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        for tr, te in splitter.split(np.zeros(len(order)), labels[order], groups[order]):
            if len(tr) and len(te):
                folds.append(Fold(np.sort(order[tr]), np.sort(order[te])))
    return folds, notes


def label_fraction(
    train: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0
) -> np.ndarray:
    """A seeded subset of the training clips `train` holding `fraction` of them.

    Counted in clips, not frames, per class (stratified): class c keeps
    max(1, round(fraction * n_c)) of its n_c clips, so every class seen in
    training stays represented even at 1%. Returns sorted clip indices.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"label fraction must be in (0, 1], got {fraction}")
    train = np.sort(np.asarray(train))
    if fraction >= 1:
        return train
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)[train]
    keep = []
    for c in np.unique(labels):
        members = train[labels == c]
        n = max(1, round(fraction * len(members)))
        keep.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def check_disjoint(
    train: np.ndarray, test: np.ndarray, clip_ids: np.ndarray, patient_ids: np.ndarray | None = None
) -> None:
    """The leakage gate: raises UserError if a clip or a known patient is on both sides."""
    clip_ids = np.asarray(clip_ids).astype(str)
    both = sorted(set(clip_ids[train]) & set(clip_ids[test]))
    if both:
        raise UserError(
            f"leakage: {len(both)} clip(s) in both train and test: {', '.join(both[:10])}"
        )
    if patient_ids is not None:
        groups = groups_of(clip_ids, patient_ids)
        both = sorted(
            g.split(":", 1)[1]
            for g in set(groups[train]) & set(groups[test])
            if g.startswith("patient:")
        )
        if both:
            raise UserError(
                f"leakage: {len(both)} patient(s) in both train and test: {', '.join(both[:10])}"
            )


def read_pretraining(workdir: str | Path) -> dict | None:
    """The clips (and patients) a run's SSL pretraining saw, from its pretrain_clips.json:
    {"video_id": [...], "patient_id": [...], "data_dir", "split"}; None if absent."""
    path = files.path(workdir) / PRETRAIN_CLIPS
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        record["video_id"] = [str(v) for v in record["video_id"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path} is unreadable ({e}): cannot check evaluation against pretraining"
        ) from None
    return record


def pretraining_overlap(
    test: np.ndarray, clip_ids: np.ndarray, patient_ids: np.ndarray | None, seen: dict
) -> tuple[list[str], list[str]]:
    """(test clip ids pretraining saw, test patients of whom it saw a clip), sorted.

    A patient counts only when known (not equal to the clip id), on both sides."""
    clip_ids = np.asarray(clip_ids).astype(str)
    test_clips = clip_ids[np.asarray(test, int)]
    clips = sorted(set(test_clips) & set(seen.get("video_id", [])))
    patients: list[str] = []
    if patient_ids is not None and seen.get("patient_id"):
        seen_patients = {
            str(p) for v, p in zip(seen["video_id"], seen["patient_id"]) if p and str(p) != str(v)
        }
        groups = groups_of(clip_ids, patient_ids)[np.asarray(test, int)]
        patients = sorted(
            {g.split(":", 1)[1] for g in groups if g.startswith("patient:")} & seen_patients
        )
    return clips, patients


def check_pretraining(
    test: np.ndarray,
    clip_ids: np.ndarray,
    patient_ids: np.ndarray | None,
    seen: dict | None,
    *,
    allow: bool = False,
    flag: str = "--config.allow_pretrain_overlap=True",
) -> list[str]:
    """The pretraining leakage gate: refuses to test on clips, or patients, that the SSL
    pretraining saw (`seen`: see `read_pretraining`; None = nothing recorded).

    Raises UserError naming them; with `allow`, returns a note instead (the
    numbers for those clips are then transductive). Returns [] without overlap.
    """
    if not seen:
        return []
    clips, patients = pretraining_overlap(test, clip_ids, patient_ids, seen)
    if not clips and not patients:
        return []
    n_test = len(np.unique(np.asarray(clip_ids).astype(str)[np.asarray(test, int)]))
    what = []
    if clips:
        what.append(f"{len(clips)} of the {n_test} test clips: {_first(clips)}")
    if patients:
        what.append(f"{len(patients)} test patient(s): {_first(patients)}")
    where = f" ({seen['data_dir']}, split {seen.get('split')!r})" if seen.get("data_dir") else ""
    if not allow:
        raise UserError(
            f"leakage: the encoder's SSL pretraining{where} saw {'; and '.join(what)}. "
            "Test on clips pretraining did not see (e.g. other splits), or pass "
            f"{flag} to accept transductive numbers"
        )
    note = (
        f"{len(clips)} of the {n_test} test clips were seen without labels during "
        f"pretraining ({PRETRAIN_CLIPS}; and {len(patients)} test patient(s)), allowed by "
        "the config: for them the pretrained numbers are transductive"
    )
    return [note]


def _first(ids: list[str], n: int = 10) -> str:
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more


def frames_of(frame_clip: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Indices of the frames whose clip (`frame_clip` [N], a clip index) is in `clips`."""
    return np.flatnonzero(np.isin(frame_clip, clips))


def inner_split(
    train: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Fold:
    """One grouped, stratified train/validation split of `train` (for choosing
    hyper-parameters without touching the test fold). Clip indices are global."""
    train = np.sort(np.asarray(train))
    k = max(2, round(1 / val_fraction))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folds, _ = kfold(np.asarray(labels)[train], np.asarray(groups)[train], k, seed)
    f = folds[0]
    return Fold(train[f.train], train[f.test])
