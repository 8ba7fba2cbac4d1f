"""PNG figures of an evaluation: label efficiency, ROC curves, confusion matrix, embeddings.

Each function takes plain arrays and a path, draws with matplotlib's Agg
backend (no display needed) and returns the path it wrote.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm

_DPI = 120


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def label_efficiency(curves: dict[str, tuple], path, *, metric: str, title: str = "") -> Path:
    """Mean ± std over label fractions (log x), one line per "encoder / protocol" curve:
    {name: (fractions, mean, err)}, err the std or [2, n] offsets below/above (a CI).
    Colour = protocol, dashed = random-init encoder."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    protocols = list(dict.fromkeys(name.split(" / ")[-1] for name in curves))
    fractions = sorted({float(f) for fr, _, _ in curves.values() for f in fr})
    for i, (name, (fr, mean, std)) in enumerate(curves.items()):
        fr, mean, std = map(np.asarray, (fr, mean, std))
        shift = 1 + 0.04 * (i - (len(curves) - 1) / 2)  # keep error bars apart
        colour = plt.get_cmap("tab10")(protocols.index(name.split(" / ")[-1]) % 10)
        ax.errorbar(
            fr * 100 * shift,
            mean,
            yerr=std,
            fmt=("--" if "random" in name else "-") + "o",
            color=colour,
            capsize=3,
            label=name,
            ms=4,
        )
    ax.set_xscale("log")
    ax.set_xticks([f * 100 for f in fractions], [f"{f * 100:g}%" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled training clips")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"label efficiency: {metric}", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def roc_classes(labels: np.ndarray, n_classes: int) -> list[int]:
    """The classes that get a one-vs-rest ROC curve: present, and not alone (a curve
    needs positives and negatives). Empty when the test set holds a single class."""
    labels = np.asarray(labels)
    classes = [1] if n_classes == 2 else range(n_classes)
    return [c for c in classes if (labels == c).any() and not (labels == c).all()]


def roc_curves(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str], path, *, title: str = ""
) -> Path | None:
    """One-vs-rest ROC curve per class (skips classes that are absent or alone); None,
    and no file, when no class has a curve (`roc_classes` is empty)."""
    classes = roc_classes(labels, len(class_names))
    if not classes:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for c in classes:
        pos = np.asarray(labels) == c
        fpr, tpr, _ = skm.roc_curve(pos, probs[:, c])
        ax.plot(fpr, tpr, label=f"{class_names[c]} (AUC {skm.auc(fpr, tpr):.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC (one vs rest)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def confusion(cm: np.ndarray, class_names: list[str], path, *, title: str = "") -> Path:
    """Confusion matrix (rows: true, columns: predicted), counts and row-normalised colour."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.1 * k + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(k), class_names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix", fontsize=9)
    return _save(fig, path)


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def embed_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D embedding of rows of `x` with sklearn t-SNE or (if installed) UMAP."""
    x = np.asarray(x, np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    if len(x) < 3:
        return np.zeros((len(x), 2))
    if method == "umap":
        import umap

        return umap.UMAP(n_neighbors=min(15, len(x) - 1), random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def embeddings(
    panels: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    path,
    *,
    method: str = "tsne",
    seed: int = 0,
    title: str = "",
) -> Path:
    """Side-by-side 2-D embeddings of clip features, one panel per encoder, coloured by label."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    labels = np.asarray(labels)
    cmap = plt.get_cmap("tab10")
    for ax, (name, feats) in zip(axes[0], panels.items()):
        xy = embed_2d(feats, method, seed)
        for c, cname in enumerate(class_names):
            m = labels == c
            if m.any():
                ax.scatter(
                    xy[m, 0],
                    xy[m, 1],
                    s=22,
                    color=cmap(c % 10),
                    label=cname,
                    edgecolors="k",
                    linewidths=0.3,
                )
        if (labels < 0).any():
            m = labels < 0
            ax.scatter(xy[m, 0], xy[m, 1], s=14, color="lightgrey", label="unlabeled")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if axes[0][0].get_legend_handles_labels()[0]:  # no points: no legend (and no warning)
        axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title or f"clip embeddings ({method})", fontsize=10)
    return _save(fig, path)


def render(
    out_dir,
    summary: list[dict],
    pooled: dict,
    data,
    tasks: dict,
    feats: dict,
    *,
    metric: str = "clip_balanced_accuracy",
    embeddings_plot: bool = True,
    use_umap: bool = True,
    seed: int = 0,
    notes: list | None = None,
) -> list[str]:
    """The figures of one evaluation (see `protocol.run`); returns their paths.

    Per task: the label-efficiency curve of `metric` (mean ± std over seeds);
    for the first protocol at the largest label fraction, seed 0, per encoder:
    clip-level ROC curves and confusion matrix. Clip embeddings (mean frame
    feature) of each encoder, t-SNE and UMAP if installed. A ROC plot that would
    be empty (the tested clips hold one class) is not drawn; `notes` gets a line.
    """
    from lusjax.eval import features, metrics

    out_dir = Path(out_dir)
    paths = []
    for task, names in tasks.items():
        curves = {}
        for row in summary:
            if row["task"] == task:
                curves.setdefault(f"{row['encoder']} / {row['protocol']}", []).append(
                    (row["fraction"], *row[metric])
                )
        curves = {k: tuple(zip(*sorted(v))) for k, v in curves.items()}
        if curves:
            paths.append(
                label_efficiency(
                    curves,
                    out_dir / f"label_efficiency_{task}.png",
                    metric=metric,
                    title=f"{task}: {metric} vs labels",
                )
            )
        keys = [k for k in pooled if k[2] == task and k[4] == 0]
        if not keys:
            continue
        proto, fraction = keys[0][1], max(k[3] for k in keys)
        for enc in dict.fromkeys(k[0] for k in keys):
            probs = pooled.get((enc, proto, task, fraction, 0))
            if probs is None:
                continue
            tested = ~np.isnan(probs[:, 0])
            cp, cl, _ = metrics.clip_probs(
                probs[tested], data.frame_clip[tested], data.frame_targets(task)[tested]
            )
            tag = f"{task}_{proto}_{enc}"
            title = f"{task}, {proto}, {enc}, {fraction * 100:g}% labels, clip level, pooled folds"
            roc = roc_curves(cl, cp, names, out_dir / f"roc_{tag}.png", title=title)
            if roc is not None:
                paths.append(roc)
            elif notes is not None:
                present = sorted({names[int(c)] for c in np.unique(cl) if c >= 0})
                notes.append(
                    f"no ROC plot for task {task!r} ({enc}): its tested clips hold "
                    f"one class only ({', '.join(present) or 'none'})"
                )
            cm = metrics.classification(cl, cp, names)["confusion_matrix"]
            paths.append(confusion(cm, names, out_dir / f"confusion_{tag}.png", title=title))
    if embeddings_plot and feats:
        task = next(iter(tasks))
        panels, clips = {}, None
        for enc, x in feats.items():
            panels[enc], clips = features.clip_embeddings(x, data.frame_clip)
        labels = data.clips.targets(task)[0][clips]
        for method in ("tsne", "umap") if use_umap and umap_available() else ("tsne",):
            paths.append(
                embeddings(
                    panels,
                    labels,
                    tasks[task],
                    out_dir / f"embeddings_{method}.png",
                    method=method,
                    seed=seed,
                    title=f"clip embeddings ({method}), coloured by {task}",
                )
            )
    return [str(p) for p in paths]
