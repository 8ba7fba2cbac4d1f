"""Assign clips to splits by *video*, never by frame.

Two ways to split:
  * fractions, e.g. {"train": 0.7, "val": 0.15, "test": 0.15}: a greedy,
    seeded assignment of whole patients that keeps each label's share close to
    the target in every split;
  * k folds (`folds=k`): the same greedy with k equal shares, splits `fold0..`.
Both keep every clip of a patient on one side (the patient is the group; a clip
with no known patient is its own group) and stratify by label (unlabeled clips
form their own stratum). No spec at all is the raw-frames mode: every clip in
`train`. All of it is deterministic for a seed and independent of input order.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence

import numpy as np

from lusjax.errors import UserError

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_fractions(text: str) -> dict[str, float]:
    """Parses "train=0.7,val=0.15,test=0.15" into {name: fraction}."""
    fractions = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"Bad split spec {part!r}: expected name=fraction, e.g. train=0.8.")
    return check_fractions(fractions)


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validates split names and fractions (positive, summing to 1)."""
    if not fractions:
        raise UserError("The split spec names no split.")
    for name, frac in fractions.items():
        if not _NAME_RE.match(name):
            raise UserError(f"Bad split name {name!r}: use letters, digits and _ only.")
        if not frac > 0:
            raise UserError(f"Split {name!r} has fraction {frac}; fractions must be > 0.")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"Split fractions sum to {total:g}, not 1: {dict(fractions)}.")
    return dict(fractions)


def fold_names(folds: int) -> list[str]:
    return [f"fold{i}" for i in range(folds)]


def assign_splits(
    clips: Sequence[Mapping],
    *,
    fractions: Mapping[str, float] | None = None,
    folds: int | None = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Splits clips by video, stratified by label, grouped by patient.

    Args:
      clips: one mapping per clip with "video_id", optional "patient_id" and
        "label_name" ("" = unlabeled).
      fractions: split name -> fraction of clips (summing to 1).
      folds: number of folds instead of fractions (splits "fold0", "fold1", ...).
      seed: the assignment is a pure function of the clips and this seed.

    Returns:
      split name -> indices into `clips`, ordered by video_id. With neither
      `fractions` nor `folds` (raw-frames mode) every clip goes to "train".
    """
    if fractions is not None and folds is not None:
        raise UserError("Give split fractions or a number of folds, not both.")
    ids = [str(c["video_id"]) for c in clips]
    dupes = [v for v, n in collections.Counter(ids).items() if n > 1]
    if dupes:
        raise UserError(f"Duplicate video ids would leak across splits: {dupes[:5]}.")
    groups = [str(c.get("patient_id") or c["video_id"]) for c in clips]
    labels = [str(c.get("label_name") or "") for c in clips]

    if fractions is None and folds is None:
        side = {"train": list(range(len(clips)))}
    elif folds is not None:
        side = _kfold(groups, labels, int(folds), seed)
    else:
        side = _fractions(groups, labels, check_fractions(fractions), seed)
    return {name: sorted(idx, key=lambda i: ids[i]) for name, idx in side.items()}


def _kfold(groups: list[str], labels: list[str], folds: int, seed: int) -> dict[str, list[int]]:
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}.")
    n_groups = len(set(groups))
    if n_groups < folds:
        raise UserError(f"{folds} folds need at least {folds} patients/clips, got {n_groups}.")
    # k equal fractions through the same greedy as train/val/test: like sklearn's
    # StratifiedGroupKFold (greedy, balancing label counts), without its import.
    return _fractions(groups, labels, dict.fromkeys(fold_names(folds), 1 / folds), seed)


def _fractions(
    groups: list[str], labels: list[str], fractions: dict[str, float], seed: int
) -> dict[str, list[int]]:
    """Greedy: biggest patients first, each to the split with the largest deficit.

    With few patients, a split that still lacks one of the patient's labels
    (and has room for the patient) wins first, so every split sees every class
    when there are enough patients of it.

    The deficit of a split for a patient is how many of that patient's labels
    the split still lacks relative to its target share; ties and equal-size
    patients are ordered by a seeded permutation. sklearn has no stratified,
    grouped shuffle-split, and this keeps small datasets close to the targets.
    """
    names = list(fractions)
    label_names = sorted(set(labels))
    lab_idx = {lab: k for k, lab in enumerate(label_names)}
    members: dict[str, list[int]] = collections.defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    group_ids = sorted(members)
    counts = np.zeros((len(group_ids), len(label_names)))
    for gi, g in enumerate(group_ids):
        for i in members[g]:
            counts[gi, lab_idx[labels[i]]] += 1

    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(group_ids))
    order = sorted(range(len(group_ids)), key=lambda gi: (-counts[gi].sum(), tiebreak[gi]))
    frac = np.array([fractions[n] for n in names])
    target = frac[:, None] * counts.sum(0)[None, :]  # [split, label]
    current = np.zeros_like(target)
    split_jitter = rng.permutation(len(names)) * 1e-9  # seeded tie-break between splits
    out: dict[str, list[int]] = {n: [] for n in names}
    for gi in order:
        has = counts[gi] > 0
        deficit = ((target - current) * counts[gi][None, :]).sum(1)
        # Small data: a split that has none of this patient's labels yet, and
        # room for the patient, comes first, so val/test see every class when
        # there are enough patients of it (the targets alone would give all of
        # a rare class to train).
        room = target.sum(1) - current.sum(1) >= 0.5 * counts[gi].sum()
        lacks = ((current[:, has] == 0) & (target[:, has] > 0)).any(1) & room
        # Relative deficit breaks ties toward the split furthest from its share.
        rel = (target - current).sum(1) / np.maximum(target.sum(1), 1e-9)
        score = deficit + 1e-6 * rel + split_jitter + lacks * 1e6
        s = int(np.argmax(score))
        current[s] += counts[gi]
        out[names[s]].extend(members[group_ids[gi]])
    return out
