"""Classification metrics at frame and clip level, all computed by scikit-learn.

Clip-level predictions are the mean of the clip's frame probabilities. A
class absent from a test set makes its ROC/PR AUC undefined: it is NaN with a
note, and macro averages run over the classes where it is defined.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import sklearn
from sklearn import metrics as skm


def clip_probs(probs: np.ndarray, frame_clip: np.ndarray, frame_labels: np.ndarray):
    """Mean frame probabilities per clip.

    Returns (clip_probs [C, K], clip_labels [C], clips [C]) for the clips present,
    in increasing clip index.
    """
    clips, inverse = np.unique(frame_clip, return_inverse=True)
    sums = np.zeros((len(clips), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(clips))[:, None]
    labels = np.zeros(len(clips), np.int64)
    labels[inverse] = frame_labels
    return sums / counts, labels, clips


def classification(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, ROC AUC (OvR), PR AUC, confusion.

    `labels` [N] int in [0, K), `probs` [N, K] (rows sum to 1). For K == 2,
    `roc_auc`/`pr_auc` are those of class 1 (the positive finding).
    """
    # Inputs are ours and already checked; sklearn's per-call validation would
    # otherwise dominate a protocol's run time (thousands of small calls).
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        return _classification(np.asarray(labels), np.asarray(probs, np.float64), class_names)


def _classification(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    k = len(class_names)
    pred = probs.argmax(1)
    notes = []
    present = np.unique(labels)
    missing = [class_names[c] for c in range(k) if c not in present]
    if missing:
        notes.append(
            f"class(es) {', '.join(missing)} absent from this test set: "
            "their recall and AUC are undefined (NaN)"
        )
    with warnings.catch_warnings():  # the note above covers sklearn's warnings
        warnings.simplefilter("ignore")
        p, r, f1, support = skm.precision_recall_fscore_support(
            labels, pred, labels=np.arange(k), zero_division=0
        )
        out = {
            "n": len(labels),
            "accuracy": float(skm.accuracy_score(labels, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(labels, pred)),
            "macro_f1": float(np.mean(f1[present])),  # over the classes in this test set
            "confusion_matrix": skm.confusion_matrix(labels, pred, labels=np.arange(k)).tolist(),
        }
    # One-vs-rest AUCs, one sklearn call each, over the classes with both positives
    # and negatives in this test set; the others are undefined (NaN).
    onehot = np.eye(k, dtype=int)[labels]
    ok = [c for c in range(k) if 0 < onehot[:, c].sum() < len(labels)]
    roc_ok = pr_ok = []
    if ok:
        y_ok, p_ok = (
            (onehot[:, ok], probs[:, ok]) if len(ok) > 1 else (onehot[:, ok[0]], probs[:, ok[0]])
        )
        roc_ok = np.atleast_1d(skm.roc_auc_score(y_ok, p_ok, average=None))
        pr_ok = np.atleast_1d(skm.average_precision_score(y_ok, p_ok, average=None))
    roc = dict.fromkeys(class_names, math.nan)
    pr = dict(roc)
    for c, v_roc, v_pr in zip(ok, roc_ok, pr_ok):
        roc[class_names[c]], pr[class_names[c]] = float(v_roc), float(v_pr)
    r = np.where(onehot.sum(0) > 0, r, math.nan)  # recall of an absent class is undefined
    out["per_class"] = {
        name: {
            "precision": float(p[c]),
            "recall": float(r[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
            "roc_auc": roc[name],
            "pr_auc": pr[name],
        }
        for c, name in enumerate(class_names)
    }
    if k == 2:
        out["roc_auc"], out["pr_auc"] = roc[class_names[1]], pr[class_names[1]]
    else:
        out["roc_auc"], out["pr_auc"] = _nanmean(list(roc.values())), _nanmean(list(pr.values()))
    if math.isnan(out["roc_auc"]):
        notes.append("ROC/PR AUC undefined: the test set holds a single class")
    out["notes"] = notes
    return out


def evaluate(
    probs: np.ndarray, frame_labels: np.ndarray, frame_clip: np.ndarray, class_names: list[str]
) -> dict:
    """{"frame": metrics over frames, "clip": metrics over clips (mean frame probs)}."""
    cp, cl, _ = clip_probs(probs, frame_clip, frame_labels)
    return {
        "frame": classification(frame_labels, probs, class_names),
        "clip": classification(cl, cp, class_names),
    }


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


# The scalar metrics reported in tables and summaries, in order.
SCALARS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "pr_auc")
