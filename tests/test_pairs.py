"""Pair sampling on hand-built clip tables: validity, balance, determinism, sharding, errors.

Pure numpy (no dataset on disk, no JAX): well under a second.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lusjax.data import pairs
from lusjax.errors import UserError


@dataclasses.dataclass
class Clips:
    """The fields of lusjax.data.shards.ClipTable that pair sampling reads."""

    video_id: list
    patient_id: list
    label: np.ndarray
    start: np.ndarray
    length: np.ndarray


def table(lengths, patients=None, labels=None) -> Clips:
    lengths = np.asarray(lengths, np.int64)
    n = len(lengths)
    return Clips(
        video_id=[f"v{i}" for i in range(n)],
        patient_id=list(patients) if patients is not None else [f"p{i}" for i in range(n)],
        label=np.asarray(labels if labels is not None else np.arange(n) % 3, np.int32),
        start=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        length=lengths,
    )


def take(ds, n_batches: int) -> dict[str, np.ndarray]:
    batches = [ds[k] for k in range(n_batches)]
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


CLIPS = table([5, 12, 3, 40, 1, 7], patients=["a", "a", "b", "c", "c", "c"])


@pytest.mark.parametrize("max_dt,min_dt", [(0, 0), (1, 0), (3, 0), (4, 2), (100, 0)])
def test_pairs_lie_in_one_clip_within_max_dt(max_dt, min_dt):
    clips = CLIPS if min_dt == 0 else table([5, 12, 3, 40, 7])
    ds = pairs.pair_batches(clips, seed=0, batch_size=64, max_dt=max_dt, min_dt=min_dt)
    s = take(ds, 20)
    c = s["clip"]
    start, end = clips.start[c], clips.start[c] + clips.length[c]
    assert np.all((s["anchor"] >= start) & (s["anchor"] < end))
    assert np.all((s["partner"] >= start) & (s["partner"] < end))
    dt = np.abs(s["anchor"] - s["partner"])
    assert dt.max() <= max_dt and dt.min() >= min_dt
    np.testing.assert_array_equal(s["partner_clip"], c)
    np.testing.assert_array_equal(s["label"], clips.label[c])
    if max_dt == 0:
        np.testing.assert_array_equal(s["anchor"], s["partner"])
    elif max_dt >= 3:  # every allowed distance occurs, in both orders
        d = s["partner"] - s["anchor"]
        assert set(range(min_dt, max_dt + 1 if max_dt < 39 else 5)) <= set(np.abs(d))
        assert (d > 0).any() and (d < 0).any()


def test_temporal_pairs_uniform_over_ordered_pairs():
    # One clip of 6 frames, max_dt 2: ordered pairs at distance 0: 6, 1: 10, 2: 8.
    clips = table([6])
    s = take(pairs.pair_batches(clips, seed=1, batch_size=500, max_dt=2), 8)
    counts = np.bincount(np.abs(s["anchor"] - s["partner"]), minlength=3) / len(s["anchor"])
    np.testing.assert_allclose(counts, np.array([6, 10, 8]) / 24, atol=0.03)
    # Every frame serves as anchor about equally often (edges slightly less).
    assert np.bincount(s["anchor"], minlength=6).min() > 0.6 * len(s["anchor"]) / 6


def test_micle_partner_is_another_clip_of_the_same_patient():
    ds = pairs.pair_batches(CLIPS, seed=0, batch_size=128, max_dt=2, micle_prob=1.0)
    s = take(ds, 10)
    pid = np.asarray(CLIPS.patient_id)
    c, pc = s["clip"], s["partner_clip"]
    assert np.all(pid[c] == pid[pc])
    has_other = np.array([(pid == pid[i]).sum() > 1 for i in range(len(pid))])
    assert np.all(pc[has_other[c]] != c[has_other[c]])  # always another clip when possible
    assert np.all(pc[~has_other[c]] == c[~has_other[c]])  # patient "b": temporal pair
    end = CLIPS.start[pc] + CLIPS.length[pc]
    assert np.all((s["partner"] >= CLIPS.start[pc]) & (s["partner"] < end))
    # micle_prob 0.5: about half of the eligible samples.
    s = take(pairs.pair_batches(CLIPS, seed=0, batch_size=256, max_dt=2, micle_prob=0.5), 8)
    eligible = has_other[s["clip"]]
    frac = (s["partner_clip"] != s["clip"])[eligible].mean()
    assert 0.4 < frac < 0.6


def test_balanced_per_clip_over_an_epoch():
    clips = table([2, 50, 7, 400, 13])
    slots = pairs.epoch_slots(clips, samples_per_clip=10)
    np.testing.assert_array_equal(np.bincount(slots), [10] * 5)
    # The stream: batch size dividing the epoch, one epoch = exactly 10 per clip.
    ds = pairs.pair_batches(clips, seed=3, batch_size=10, max_dt=1, samples_per_clip=10)
    first, second = take(ds, 5)["clip"], np.concatenate([ds[k]["clip"] for k in range(5, 10)])
    np.testing.assert_array_equal(np.bincount(first, minlength=5), [10] * 5)
    np.testing.assert_array_equal(np.bincount(second, minlength=5), [10] * 5)
    assert not np.array_equal(first, second)  # reshuffled each epoch
    # Default epoch length = number of frames, still balanced per clip.
    assert len(pairs.epoch_slots(clips)) == clips.length.sum()
    assert np.ptp(np.bincount(pairs.epoch_slots(clips))) <= 1


def test_weighted_epochs():
    clips = table([4, 16, 64])
    sq = np.bincount(pairs.epoch_slots(clips, weighting="sqrt_length", samples_per_clip=100))
    np.testing.assert_allclose(sq / sq.sum(), np.array([2, 4, 8]) / 14, atol=1e-2)
    ln = np.bincount(pairs.epoch_slots(clips, weighting="length"))
    np.testing.assert_array_equal(ln, clips.length)
    custom = np.bincount(
        pairs.epoch_slots(clips, weighting=np.array([1.0, 0.0, 3.0]), samples_per_clip=4),
        minlength=3,
    )
    np.testing.assert_array_equal(custom, [3, 0, 9])
    with pytest.raises(UserError, match="clip_weighting"):
        pairs.epoch_slots(clips, weighting="loud")


def test_same_seed_same_batches_and_random_access():
    a = pairs.pair_batches(CLIPS, seed=7, batch_size=16, max_dt=3, micle_prob=0.3)
    b = pairs.pair_batches(CLIPS, seed=7, batch_size=16, max_dt=3, micle_prob=0.3)
    c = pairs.pair_batches(CLIPS, seed=8, batch_size=16, max_dt=3, micle_prob=0.3)
    for k in (0, 5, 1000):  # batch k depends on k only: any order, any start
        for key in a[k]:
            np.testing.assert_array_equal(a[k][key], b[k][key])
    assert not np.array_equal(a[0]["anchor"], c[0]["anchor"])


def test_hosts_split_every_epoch():
    clips = table([3, 9, 27, 5])
    n = len(pairs.epoch_slots(clips, samples_per_clip=6))  # 24 slots, 12 per host
    per_host = [
        pairs.pair_batches(
            clips,
            seed=2,
            batch_size=4,
            max_dt=1,
            samples_per_clip=6,
            process_index=i,
            process_count=2,
        )
        for i in range(2)
    ]
    for epoch in range(2):
        clip_counts = sum(
            np.bincount(
                np.concatenate([ds[k]["clip"] for k in range(3 * epoch, 3 * epoch + 3)]),
                minlength=4,
            )
            for ds in per_host
        )
        np.testing.assert_array_equal(clip_counts, [6] * 4)  # hosts together = the epoch
    assert n == 24
    assert not np.array_equal(per_host[0][0]["anchor"], per_host[1][0]["anchor"])


def test_errors_are_one_line_user_errors():
    with pytest.raises(UserError, match="has no clips"):
        pairs.pair_batches(table([]), seed=0, batch_size=4, max_dt=1)
    short = table([5, 2, 8])
    with pytest.raises(UserError) as e:
        pairs.pair_batches(short, seed=0, batch_size=4, max_dt=4, min_dt=3)
    assert "1 of 3 clips" in str(e.value) and "v1" in str(e.value) and "\n" not in str(e.value)
    ds = pairs.pair_batches(short, seed=0, batch_size=64, max_dt=4, min_dt=3, skip_short=True)
    assert 1 not in set(ds[0]["clip"])
    with pytest.raises(UserError, match="fewer than 4 frames"):
        pairs.pair_batches(table([1, 2]), seed=0, batch_size=4, max_dt=4, min_dt=3, skip_short=True)
    with pytest.raises(UserError, match="min_dt"):
        pairs.pair_batches(short, seed=0, batch_size=4, max_dt=1, min_dt=2)
    with pytest.raises(UserError, match="micle_prob"):
        pairs.pair_batches(short, seed=0, batch_size=4, max_dt=1, micle_prob=2.0)
    with pytest.raises(UserError, match="fewer than the 8 hosts"):
        pairs.pair_batches(table([2, 3]), seed=0, batch_size=4, max_dt=1, process_count=8)


def test_global_batches_do_not_depend_on_the_number_of_hosts():
    """Hosts' slices of batch k, concatenated, are what one host reads alone: the same
    seed gives the same data on 1, 2 or 4 hosts."""
    clips = table([3, 9, 27, 5, 4])
    kw = dict(seed=3, max_dt=2, micle_prob=0.0)
    one = pairs.pair_batches(clips, batch_size=8, **kw)
    for hosts in (2, 4):
        per_host = [
            pairs.pair_batches(
                clips, batch_size=8 // hosts, process_index=i, process_count=hosts, **kw
            )
            for i in range(hosts)
        ]
        for k in (0, 1, 7):  # 7: past the first epoch
            for name, want in one[k].items():
                got = np.concatenate([ds[k][name] for ds in per_host])
                np.testing.assert_array_equal(got, want, err_msg=f"{hosts} hosts, batch {k}")


def test_max_dt_in_seconds_follows_each_clips_frame_rate():
    clips = table([40, 40, 40])
    clips.fps = np.array([30.0, 10.0, 5.0])
    cap = pairs.max_dt_frames(clips, max_dt=99, min_dt=0, max_dt_s=0.4)
    np.testing.assert_array_equal(cap, [12, 4, 2])  # 0.4 s at 30, 10 and 5 fps
    batch = take(pairs.pair_batches(clips, seed=0, batch_size=64, max_dt=99, max_dt_s=0.4), 20)
    dist = np.abs(batch["anchor"] - batch["partner"])
    for c, limit in enumerate(cap):
        d = dist[batch["clip"] == c]
        assert d.max() == limit  # reached, never exceeded
    np.testing.assert_array_equal(  # 3, 1 and 0.5 frames, never below min_dt
        pairs.max_dt_frames(clips, max_dt=3, min_dt=2, max_dt_s=0.1), [3, 2, 2]
    )


def test_max_dt_in_seconds_without_frame_rates_is_a_user_error():
    clips = table([10, 10])
    with pytest.raises(UserError, match="frame rate, unknown for 2 of 2 clips"):
        pairs.pair_batches(clips, seed=0, batch_size=4, max_dt=2, max_dt_s=0.5)
    clips.fps = np.array([20.0, np.nan])
    with pytest.raises(UserError, match="unknown for 1 of 2 clips .*v1"):
        pairs.pair_batches(clips, seed=0, batch_size=4, max_dt=2, max_dt_s=0.5)


def test_max_dt_in_seconds_with_a_one_frame_clip():
    """A still image or one-frame clip has no frame rate (None in dataset.json); it needs
    none: its only pair is its frame with itself."""
    clips = table([10, 1, 6])
    clips.fps = np.array([20.0, np.nan, 10.0])
    np.testing.assert_array_equal(pairs.max_dt_frames(clips, 99, 0, max_dt_s=0.2), [4, 0, 2])
    batch = take(pairs.pair_batches(clips, seed=0, batch_size=16, max_dt=99, max_dt_s=0.2), 4)
    still = batch["clip"] == 1
    assert still.any() and (batch["anchor"][still] == batch["partner"][still]).all()


def test_negative_min_dt_is_refused_in_seconds_mode_too():
    clips = table([10, 10])
    clips.fps = np.array([20.0, 20.0])
    with pytest.raises(UserError, match="min_dt"):
        pairs.pair_batches(clips, seed=0, batch_size=4, max_dt=2, min_dt=-1, max_dt_s=0.5)
