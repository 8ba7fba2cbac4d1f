"""Positive pairs from video: temporal neighbours, and MICLe-style same-patient clips.

An epoch is a list of *slots*, each naming a clip; every clip gets (about) the
same number of slots, or a number proportional to a per-clip weight
(`weighting`: "uniform", "sqrt_length", "length" = frame-uniform, or an array),
so long clips do not dominate (`epoch_slots`). `pair_batches` turns them into
this host's infinite stream of batches of pair indices, a grain MapDataset whose
element k is batch k:

    MapDataset.range(inf).map(PairBatches)   epoch = seeded permutation of the
                                             slots; global batch k = the next
                                             G slots, drawn from rng(seed, k);
                                             host i keeps the i-th B = G / hosts

so batch k is a pure function of (seed, k) and the global batch size G: the
same seed gives the same global batches on any number of hosts (each host
draws the whole global batch, cheap and vectorised, and keeps its slice), and
grain's iterator state (the next k) resumes exactly, with any number of
workers. Sampling is vectorised per batch (grain's per-element random_map
costs ~0.15 ms per sample on this CPU, more than decoding a frame).

`PairSampler` draws for each slot an ordered pair of frames (a, p) of its clip,
uniformly over all pairs with min_dt <= |a - p| <= max_dt (max_dt = min_dt = 0:
the same frame twice, SimCLR's two views of one image). Distances are in stored
frames (after any subsampling at ingest), or with max_dt_s in seconds at each
clip's stored frame rate. With probability `micle_prob`, and only when the
patient has another clip, the partner is a uniform frame of a uniform other
clip of the same patient (Azizi et al. 2021, "Big self-supervised
models advance medical image classification").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol

import grain
import numpy as np

from lusjax.errors import UserError

WEIGHTINGS = ("uniform", "sqrt_length", "length")


class ClipIndex(Protocol):
    """What pair sampling needs of a split's clip table (`lusjax.data.shards.ClipTable`)."""

    video_id: Sequence[str]
    patient_id: Sequence[str]
    label: np.ndarray  # int32 [n_clips]
    start: np.ndarray  # int64 [n_clips], first record of the clip
    length: np.ndarray  # int64 [n_clips]


def clip_weights(clips: ClipIndex, weighting: str | np.ndarray = "uniform") -> np.ndarray:
    """Per-clip sampling weights (float64 [n_clips], not normalised)."""
    length = np.asarray(clips.length, np.float64)
    if isinstance(weighting, str):
        if weighting == "uniform":
            return np.ones_like(length)
        if weighting == "sqrt_length":
            return np.sqrt(length)
        if weighting == "length":
            return length.copy()
        raise UserError(f"data.clip_weighting must be one of {WEIGHTINGS} (got {weighting!r})")
    w = np.asarray(weighting, np.float64)
    if w.shape != length.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise UserError(f"clip weights must be {len(length)} finite non-negative numbers")
    return w.copy()


def clip_slots(weights: np.ndarray, n_slots: int) -> np.ndarray:
    """An epoch of `n_slots` clip indices, clip c appearing ~n_slots * w_c / sum(w) times.

    Largest-remainder rounding: counts are exact up to one per clip. Sorted by
    clip (shuffling is the dataset's job).
    """
    w = np.asarray(weights, np.float64)
    total = w.sum()
    if total <= 0 or n_slots <= 0:
        raise UserError("no clip can be sampled (all weights are zero)")
    quota = n_slots * w / total
    counts = np.floor(quota).astype(np.int64)
    rest = n_slots - counts.sum()
    if rest > 0:
        # Stable order: biggest remainders first, ties by clip index.
        order = np.lexsort((np.arange(len(w)), -(quota - counts)))
        counts[order[:rest]] += 1
    return np.repeat(np.arange(len(w), dtype=np.int64), counts)


def check_clips(
    clips: ClipIndex, min_dt: int, *, skip_short: bool, what: str = "split"
) -> np.ndarray:
    """Bool [n_clips]: clips long enough for a pair; UserError when none / some are not."""
    n = len(clips.length)
    if n == 0:
        raise UserError(f"{what} has no clips: nothing to sample pairs from")
    length = np.asarray(clips.length)
    ok = length >= min_dt + 1
    if not ok.all():
        bad = np.flatnonzero(~ok)
        first = bad[0]
        msg = (
            f"{len(bad)} of {n} clips in {what} have fewer than {min_dt + 1} frames "
            f"(needed for data.min_dt={min_dt}), e.g. {clips.video_id[first]} with "
            f"{int(length[first])}"
        )
        if not skip_short or not ok.any():
            hint = "" if skip_short else "; lower data.min_dt or set data.skip_short_clips=True"
            raise UserError(msg + hint)
    return ok


def max_dt_frames(
    clips: ClipIndex, max_dt: int, min_dt: int = 0, max_dt_s: float = 0.0
) -> np.ndarray:
    """Per clip, the largest frame distance of a positive pair (int64 [n_clips]).

    `max_dt` stored frames for every clip, or with `max_dt_s` > 0, that many
    seconds at each clip's stored frame rate (`fps` in dataset.json; clips of
    different frame rates then get different frame windows), never below min_dt.
    A clip of one frame (a still image) has no frame rate and needs none.
    """
    n = len(clips.length)
    if max_dt_s <= 0:
        return np.full(n, int(max_dt), np.int64)
    fps = getattr(clips, "fps", None)
    fps = np.full(n, np.nan) if fps is None else np.asarray(fps, np.float64)
    fps = np.where(np.asarray(clips.length) > 1, fps, 1.0)  # one frame: any window will do
    unknown = np.flatnonzero(~(fps > 0))
    if len(unknown):
        raise UserError(
            f"data.max_dt_s needs each clip's frame rate, unknown for {len(unknown)} of {n} "
            f"clips (e.g. {clips.video_id[unknown[0]]}): datasets written before lusjax "
            "recorded it need `lusjax prep` again; or give data.max_dt in frames"
        )
    return np.maximum(np.floor(max_dt_s * fps + 1e-6).astype(np.int64), int(min_dt))


class PairSampler:
    """Vectorised pair sampling: clip indices [B] + a numpy Generator -> pair index arrays."""

    def __init__(
        self,
        clips: ClipIndex,
        *,
        max_dt: int,
        min_dt: int = 0,
        micle_prob: float = 0.0,
        max_dt_s: float = 0.0,
    ):
        if max_dt_s < 0 or not np.isfinite(max_dt_s):
            raise UserError(f"data.max_dt_s must be >= 0 seconds (got {max_dt_s})")
        if min_dt < 0 or (max_dt_s == 0 and (max_dt < 0 or min_dt > max_dt)):
            raise UserError(f"need 0 <= data.min_dt <= data.max_dt (got {min_dt}, {max_dt})")
        if not 0.0 <= micle_prob <= 1.0:
            raise UserError(f"data.micle_prob must be in [0, 1] (got {micle_prob})")
        self.min_dt, self.micle_prob = int(min_dt), float(micle_prob)
        self.start = np.asarray(clips.start, np.int64)
        self.length = np.asarray(clips.length, np.int64)
        self.label = np.asarray(clips.label, np.int32)
        # Other clips of the same patient, as CSR (ptr [n + 1], idx).
        by_patient: dict[str, list[int]] = {}
        for i, pid in enumerate(clips.patient_id):
            by_patient.setdefault(str(pid), []).append(i)
        others = [
            [j for j in by_patient[str(pid)] if j != i] for i, pid in enumerate(clips.patient_id)
        ]
        self.n_other = np.array([len(o) for o in others], np.int64)
        self.others_ptr = np.concatenate([[0], np.cumsum(self.n_other)]).astype(np.int64)
        self.others_idx = np.array([j for o in others for j in o], np.int64)
        # Distances d = min_dt + j, j < K, weighted by their number of ordered pairs in
        # each clip (L for d = 0, 2 (L - d) otherwise; 0 where d >= L): a per-clip CDF.
        # Each clip's largest distance: max_dt frames, or max_dt_s seconds at its frame rate.
        self.cap = max_dt_frames(clips, max_dt, min_dt, max_dt_s)
        longest = int(self.length.max()) if len(self.length) else 1
        top = int(self.cap.max()) if len(self.cap) else self.min_dt
        k = np.arange(self.min_dt, max(self.min_dt, min(top, longest - 1)) + 1)
        length = self.length[:, None]
        w = np.where(k[None] == 0, length, 2 * (length - k[None]))
        self.dists = k
        allowed = (k[None] < length) & (k[None] <= self.cap[:, None])
        self.cdf = np.cumsum(np.where(allowed, w, 0), axis=1).astype(np.float64)

    def sample(self, clip: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Pairs for clips `clip` [B]: anchor/partner record indices, clips, label, seed."""
        c = np.asarray(clip, np.int64)
        b = len(c)
        u = rng.random((6, b))
        # Temporal partner: uniform over ordered pairs (a, p) with min_dt <= |a - p| <= max_dt.
        cdf = self.cdf[c]
        j = np.minimum((cdf <= (u[0] * cdf[:, -1])[:, None]).sum(1), len(self.dists) - 1)
        d = self.dists[j]
        a = np.minimum((u[1] * (self.length[c] - d)).astype(np.int64), self.length[c] - d - 1)
        swap = u[2] < 0.5
        anchor, partner = np.where(swap, a + d, a), np.where(swap, a, a + d)
        pc = c
        if self.micle_prob > 0 and len(self.others_idx):
            n_other = self.n_other[c]
            micle = (u[3] < self.micle_prob) & (n_other > 0)
            pick = self.others_ptr[c] + (u[4] * n_other).astype(np.int64)
            pc = np.where(micle, self.others_idx[np.minimum(pick, len(self.others_idx) - 1)], c)
            anchor = np.where(micle, (u[1] * self.length[c]).astype(np.int64), anchor)
            partner = np.where(micle, (u[5] * self.length[pc]).astype(np.int64), partner)
        return {
            "anchor": self.start[c] + anchor,
            "partner": self.start[pc] + partner,
            "clip": c.astype(np.int32),
            "partner_clip": np.asarray(pc, np.int32),
            "label": self.label[c],
            "seed": rng.integers(0, 2**32, size=b, dtype=np.uint32),
        }


def epoch_slots(
    clips: ClipIndex,
    *,
    weighting: str | np.ndarray = "uniform",
    samples_per_clip: int = 0,
    min_dt: int = 0,
    skip_short: bool = False,
    what: str = "split",
) -> np.ndarray:
    """The clip index of every sample of one epoch (see module docstring).

    samples_per_clip: slots per clip on average; 0 = as many slots in all as the
      split has frames (so an "epoch" keeps its usual size).
    """
    ok = check_clips(clips, min_dt, skip_short=skip_short, what=what)
    w = clip_weights(clips, weighting) * ok
    n_ok = int(ok.sum())
    if samples_per_clip < 0:
        raise UserError(f"data.samples_per_clip must be >= 0 (got {samples_per_clip})")
    n_slots = (
        samples_per_clip * n_ok if samples_per_clip else int(np.asarray(clips.length)[ok].sum())
    )
    return clip_slots(w, n_slots)


class PairBatches(grain.transforms.Map):
    """Batch number k (of this host's infinite stream) -> that batch's pair indices.

    Global stream position g = k * G + j (G = batch_size * process_count, the
    global batch) is slot g % n of epoch g // n, n = len(slots); each epoch's
    order is a seeded permutation of the slots. The draws of global batch k
    come from a Generator seeded by (seed, k), and host i keeps rows
    [i * B, (i + 1) * B). So batch k is a pure function of (seed, k, G, host):
    resumable from k alone, and the hosts' slices together are the batch one
    host would read alone, whatever the number of hosts.
    """

    def __init__(
        self,
        slots: np.ndarray,
        sampler: PairSampler,
        *,
        seed: int,
        batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        shuffle: bool = True,
    ):
        self.slots, self.sampler = np.asarray(slots, np.int64), sampler
        self.seed, self.batch_size, self.shuffle = int(seed), int(batch_size), bool(shuffle)
        self.index, self.count = int(process_index), int(process_count)
        if len(self.slots) < self.count:
            raise UserError(
                f"an epoch has {len(self.slots)} samples, fewer than the {self.count} hosts"
            )
        self._perm_cache: dict[int, np.ndarray] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_perm_cache"] = {}
        return state

    def _order(self, epoch: int) -> np.ndarray:
        """Slot positions of `epoch`, in order (the same on every host)."""
        order = self._perm_cache.get(epoch)
        if order is None:
            n = len(self.slots)
            order = (
                np.random.default_rng([self.seed, epoch, 0x5107]).permutation(n)
                if self.shuffle
                else np.arange(n)
            )
            if len(self._perm_cache) > 2:
                self._perm_cache.pop(min(self._perm_cache))
            self._perm_cache[epoch] = order
        return order

    def positions(self, k: int) -> np.ndarray:
        """Clip indices of global batch k (every host's rows)."""
        g = self.batch_size * self.count
        j = np.arange(k * g, (k + 1) * g, dtype=np.int64)
        epochs, offsets = np.divmod(j, len(self.slots))
        out = np.empty(len(j), np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self.slots[self._order(int(e))[offsets[m]]]
        return out

    def map(self, k) -> dict[str, np.ndarray]:
        k = int(k)
        # (seed, 0, k): what host 0 drew before batches were global, so one-host runs
        # see the same data as with earlier lusjax versions.
        rng = np.random.default_rng([self.seed, 0, k, 0xBA7C])
        batch = self.sampler.sample(self.positions(k), rng)
        rows = slice(self.index * self.batch_size, (self.index + 1) * self.batch_size)
        return {name: v[rows] for name, v in batch.items()}


def pair_batches(
    clips: ClipIndex,
    *,
    seed: int,
    batch_size: int,
    max_dt: int,
    min_dt: int = 0,
    micle_prob: float = 0.0,
    max_dt_s: float = 0.0,
    weighting: str | np.ndarray = "uniform",
    samples_per_clip: int = 0,
    skip_short: bool = False,
    shuffle: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    what: str = "split",
) -> grain.MapDataset:
    """This host's infinite stream of pair-index batches, as a grain MapDataset.

    Element k is a dict of [batch_size] arrays: anchor, partner (record indices),
    clip, partner_clip, label (the anchor clip's), seed (uint32, for per-example
    randomness downstream). Sampling is per batch and vectorised: grain's
    per-element overhead (~0.1 ms) would otherwise cost more than decoding.
    """
    if batch_size <= 0:
        raise UserError(f"batch size must be positive (got {batch_size})")
    slots = epoch_slots(
        clips,
        weighting=weighting,
        samples_per_clip=samples_per_clip,
        min_dt=min_dt,
        skip_short=skip_short,
        what=what,
    )
    sampler = PairSampler(
        clips, max_dt=max_dt, min_dt=min_dt, micle_prob=micle_prob, max_dt_s=max_dt_s
    )
    batches = PairBatches(
        slots,
        sampler,
        seed=seed,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        shuffle=shuffle,
    )
    return grain.MapDataset.range(sys.maxsize).map(batches)
