"""Clip-level statistics with patient-grouped bootstrap: CIs, paired tests, McNemar.

Every metric here takes per-clip weights `w` ([n] or [B, n]): weight 1 for
every clip is the point estimate; a bootstrap replicate is the weight vector
"how many times was this clip's patient drawn" (`group_weights`), so all B
replicates of a metric are one vectorised computation. Resampling whole
patients keeps a patient's clips together (clips of one patient are not
independent); a clip without a patient is its own group.

Weighted forms equal the metrics on the resampled list of clips:
accuracy = sum w 1[pred = y] / sum w; balanced accuracy = mean over the classes
present (sum w > 0) of their weighted recall; macro ROC AUC = mean over the
classes with positives and negatives of the one-vs-rest Mann-Whitney AUC with
pairs weighted w_i w_j (ties count 1/2), which is sklearn's roc_auc_score.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as sps

METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def group_weights(groups: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """int [n_boot, n]: per clip, how often its group was drawn when G groups are drawn
    with replacement out of the G groups (each replicate has G groups, not n clips)."""
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = inverse.max() + 1 if len(inverse) else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / max(n_groups, 1)), size=n_boot)
    return counts[:, inverse]


def _as_2d(w, n: int) -> np.ndarray:
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    return w[None] if w.ndim == 1 else w


def accuracy(y: np.ndarray, probs: np.ndarray, w=None) -> np.ndarray:
    """Weighted accuracy of argmax(probs) against y; [B] (a scalar array for w [n])."""
    w2 = _as_2d(w, len(y))
    correct = (np.asarray(probs).argmax(1) == np.asarray(y)).astype(float)
    out = (w2 @ correct) / np.maximum(w2.sum(1), 1e-12)
    return out if np.ndim(w) == 2 else out[0]


def balanced_accuracy(y: np.ndarray, probs: np.ndarray, w=None) -> np.ndarray:
    """Weighted mean recall over the classes present (weight > 0)."""
    y = np.asarray(y)
    w2 = _as_2d(w, len(y))
    correct = (np.asarray(probs).argmax(1) == y).astype(float)
    recalls = []
    for c in np.unique(y):
        m = (y == c).astype(float)
        support = w2 @ m
        recalls.append(
            np.where(support > 0, (w2 @ (m * correct)) / np.maximum(support, 1e-12), np.nan)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(np.stack(recalls), 0) if recalls else np.full(len(w2), np.nan)
    return out if np.ndim(w) == 2 else out[0]


def roc_auc(y: np.ndarray, probs: np.ndarray, w=None) -> np.ndarray:
    """Weighted one-vs-rest macro ROC AUC (binary: that of class 1); NaN where no class
    has both positives and negatives."""
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    w2 = _as_2d(w, len(y))
    k = probs.shape[1]
    classes = [1] if k == 2 else range(k)
    aucs = []
    for c in classes:
        s = probs[:, c]
        # above[i, j] = 1 if s_i > s_j, 1/2 if tied: the Mann-Whitney kernel.
        above = (s[:, None] > s[None]).astype(float) + 0.5 * (s[:, None] == s[None])
        wp, wn = w2 * (y == c), w2 * (y != c)
        num = np.einsum("bi,ij,bj->b", wp, above, wn)
        den = wp.sum(1) * wn.sum(1)
        aucs.append(np.where(den > 0, num / np.maximum(den, 1e-12), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: the NaN is the answer
        out = np.nanmean(np.stack(aucs), 0)
    return out if np.ndim(w) == 2 else out[0]


FUNCTIONS = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "roc_auc": roc_auc}


def percentile_ci(values: np.ndarray, ci: float = 0.95) -> list[float]:
    """[low, high] percentile interval of the finite bootstrap values (NaN if none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return [math.nan, math.nan]
    a = (1 - ci) / 2
    return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]


def seed_mean(metric: str, y: np.ndarray, probs_per_seed: list[np.ndarray], w=None):
    """The metric of each seed's predictions, averaged over seeds (per replicate)."""
    fn = FUNCTIONS[metric]
    return np.mean([fn(y, p, w) for p in probs_per_seed], 0)


def summarize(
    y: np.ndarray, probs_per_seed: list[np.ndarray], weights: np.ndarray, ci: float = 0.95
) -> dict:
    """{metric: {"value", "ci": [lo, hi]}} for every metric of METRICS: the mean over
    seeds of the clip-level metric, and its patient-bootstrap percentile interval."""
    out = {}
    for m in METRICS:
        point = float(seed_mean(m, y, probs_per_seed))
        out[m] = {"value": point, "ci": percentile_ci(seed_mean(m, y, probs_per_seed, weights), ci)}
    return out


def paired_bootstrap(
    y: np.ndarray,
    probs_a: list[np.ndarray],
    probs_b: list[np.ndarray],
    weights: np.ndarray,
    metric: str = "balanced_accuracy",
    ci: float = 0.95,
) -> dict:
    """A minus B in `metric` (each the mean over its seeds) on the same clips, with the
    same patient resamples for both: the difference, its percentile CI and a two-sided
    bootstrap p value, 2 min(P*(d <= 0), P*(d >= 0)) with the +1 correction."""
    diff = float(seed_mean(metric, y, probs_a) - seed_mean(metric, y, probs_b))
    boot = seed_mean(metric, y, probs_a, weights) - seed_mean(metric, y, probs_b, weights)
    boot = boot[np.isfinite(boot)]
    n = len(boot)
    p = min(1.0, 2 * min((np.sum(boot <= 0) + 1) / (n + 1), (np.sum(boot >= 0) + 1) / (n + 1)))
    return {
        "metric": metric,
        "difference": diff,
        "ci": percentile_ci(boot, ci),
        "p": float(p),
        "n_boot": int(n),
    }


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired correctness: b = A right and B wrong,
    c = A wrong and B right; two-sided p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2)
    (p = 1 when b + c = 0)."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else min(1.0, 2 * float(sps.binom.cdf(min(b, c), b + c, 0.5)))
    return {"a_only": b, "b_only": c, "p": p}
