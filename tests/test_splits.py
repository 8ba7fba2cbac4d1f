"""Splits are by video, grouped by patient, stratified, deterministic."""

import collections

import numpy as np
import pytest

from data_prep import splits
from lusjax.errors import UserError


def _clips(n_patients=60, seed=0, labels=("a", "b", "c"), unlabeled_every=0):
    """Patients with 1-4 clips each; a patient has one label (like real data)."""
    rng = np.random.default_rng(seed)
    clips = []
    for p in range(n_patients):
        label = labels[p % len(labels)]
        if unlabeled_every and p % unlabeled_every == 0:
            label = ""
        for k in range(int(rng.integers(1, 5))):
            clips.append(
                {"video_id": f"v{p:03d}_{k}", "patient_id": f"p{p:03d}", "label_name": label}
            )
    return clips


def _sides(assignment, clips, key):
    where = collections.defaultdict(set)
    for name, idx in assignment.items():
        for i in idx:
            where[clips[i][key]].add(name)
    return where


def test_fractions_partition_by_video_and_patient():
    clips = _clips()
    a = splits.assign_splits(clips, fractions=splits.DEFAULT_FRACTIONS, seed=3)
    all_idx = [i for idx in a.values() for i in idx]
    assert sorted(all_idx) == list(range(len(clips)))  # every clip exactly once
    assert all(len(s) == 1 for s in _sides(a, clips, "patient_id").values())
    # Sizes close to the fractions (whole patients of <= 4 clips move at once).
    for name, frac in splits.DEFAULT_FRACTIONS.items():
        assert abs(len(a[name]) - frac * len(clips)) <= 4, (name, len(a[name]))
    # Stratified: each split's label mix within 10 points of the overall mix.
    overall = collections.Counter(c["label_name"] for c in clips)
    for name, idx in a.items():
        mix = collections.Counter(clips[i]["label_name"] for i in idx)
        for label, n in overall.items():
            assert abs(mix[label] / len(idx) - n / len(clips)) < 0.1, (name, label)
    # Ordered by video id inside a split (record order of the writer).
    for idx in a.values():
        assert [clips[i]["video_id"] for i in idx] == sorted(clips[i]["video_id"] for i in idx)


def test_deterministic_and_independent_of_input_order():
    clips = _clips()
    a = splits.assign_splits(clips, fractions={"train": 0.8, "test": 0.2}, seed=1)
    b = splits.assign_splits(clips, fractions={"train": 0.8, "test": 0.2}, seed=1)
    assert a == b
    shuffled = [clips[i] for i in np.random.default_rng(0).permutation(len(clips))]
    c = splits.assign_splits(shuffled, fractions={"train": 0.8, "test": 0.2}, seed=1)
    ids = lambda asg, cl: {k: sorted(cl[i]["video_id"] for i in v) for k, v in asg.items()}
    assert ids(a, clips) == ids(c, shuffled)
    d = splits.assign_splits(clips, fractions={"train": 0.8, "test": 0.2}, seed=2)
    assert ids(a, clips) != ids(d, clips)


def test_small_data_every_split_sees_every_class():
    # 24 single-clip patients, 8 per class: 70/15/15 must still put each class in val/test.
    clips = [{"video_id": f"v{i:02d}", "label_name": "abc"[i % 3]} for i in range(24)]
    a = splits.assign_splits(clips, fractions=splits.DEFAULT_FRACTIONS, seed=0)
    for name, idx in a.items():
        assert {clips[i]["label_name"] for i in idx} == {"a", "b", "c"}, name
    assert [len(a[n]) for n in ("train", "val", "test")] == [18, 3, 3]


def test_folds_cover_everything_once_grouped():
    clips = _clips(n_patients=40)
    a = splits.assign_splits(clips, folds=5, seed=0)
    assert list(a) == [f"fold{i}" for i in range(5)]
    assert sorted(i for idx in a.values() for i in idx) == list(range(len(clips)))
    assert all(len(s) == 1 for s in _sides(a, clips, "patient_id").values())
    for idx in a.values():
        assert {clips[i]["label_name"] for i in idx} == {"a", "b", "c"}
        assert abs(len(idx) - len(clips) / 5) < 0.5 * len(clips) / 5


def test_unknown_patient_is_its_own_group_and_unlabeled_allowed():
    clips = _clips(n_patients=30, unlabeled_every=3)
    for c in clips[::2]:
        c.pop("patient_id")
    a = splits.assign_splits(clips, fractions={"train": 0.5, "test": 0.5}, seed=0)
    assert sorted(i for idx in a.values() for i in idx) == list(range(len(clips)))
    labels_test = {clips[i]["label_name"] for i in a["test"]}
    assert "" in labels_test  # unlabeled clips are stratified like a class


def test_raw_mode_puts_everything_in_train():
    clips = [{"video_id": f"v{i}"} for i in range(5)]
    assert splits.assign_splits(clips) == {"train": [0, 1, 2, 3, 4]}


def test_parse_and_bad_specs():
    assert splits.parse_fractions("train=0.8, test=0.2") == {"train": 0.8, "test": 0.2}
    for bad in ["train=0.8,test=0.3", "train", "train=x", "train=1.2,val=-0.2", "tr-ain=1", ""]:
        with pytest.raises(UserError):
            splits.parse_fractions(bad)
    clips = [{"video_id": "a"}, {"video_id": "a"}]
    with pytest.raises(UserError, match="Duplicate"):
        splits.assign_splits(clips, fractions={"train": 1.0})
    with pytest.raises(UserError, match="folds"):
        splits.assign_splits([{"video_id": "a"}, {"video_id": "b"}], folds=3)
