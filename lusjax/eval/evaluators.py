"""Evaluators: the ways an encoder is measured, found by name, behind one contract.

    ev = evaluators.get("linear")
    fitted = ev.fit(train, cfg, seed)  # train: `Inputs`; cfg: the command's config
    probs = ev.score(fitted, test)  # {task: [M, K] probabilities of test.labelled(task)}

`train` and `test` name frames of one `Frames` (indices into it) with the tasks
to predict and what an evaluator may read of them: frozen features, the frames'
pixels, or the encoder itself (`Evaluator.reads`). An evaluator's settings are
`cfg.<name>` (configs/eval.py's `linear`, `mlp`, `knn`, `finetune`; the study's
`pixels`). Each evaluator module defines its `EVALUATOR`, as each SSL method
module defines its `METHOD`:

    linear    linear probe on frozen features (`linear.py`)
    sklearn   scikit-learn's LogisticRegression, the linear probe's cross-check
    mlp       MLP head on frozen features (`mlp.py`)
    knn       weighted kNN on frozen features (`knn.py`)
    finetune  backbone + one head per task, trained jointly (`finetune.py`)
    pixels    downsampled frames -> PCA -> linear probe (`pixels.py`; study baseline)
    online    `lusjax train`'s online probe (`online.py`): fitted by the train step

`lusjax eval` offers the protocols `results.PROTOCOLS`; `protocol.plan` says which
evaluator runs on which clips, `fit_score` runs one.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from lusjax.errors import UserError

if TYPE_CHECKING:
    from lusjax.eval.features import Frames

# name -> (module of lusjax.eval, attribute)
_REGISTRY = {
    "linear": ("linear", "EVALUATOR"),
    "sklearn": ("linear", "SKLEARN"),
    "mlp": ("mlp", "EVALUATOR"),
    "knn": ("knn", "EVALUATOR"),
    "finetune": ("finetune", "EVALUATOR"),
    "pixels": ("pixels", "EVALUATOR"),
    "online": ("online", "EVALUATOR"),
}
NAMES = tuple(_REGISTRY)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Frames an evaluator fits on or scores, and what it may read of them."""

    data: Frames  # every frame of the evaluation: targets, clips, pixels
    frames: np.ndarray  # int [N]: this set's frames (indices into `data`)
    tasks: dict[str, int]  # task -> number of classes
    features: np.ndarray | None = None  # float [len(data), D]: frozen features of every frame
    encoder: Any = None  # the `Encoder` evaluated (fine-tuning starts from it)

    def labelled(self, task: str) -> np.ndarray:
        """This set's frames whose target for `task` is known (>= 0)."""
        return self.frames[self.data.frame_targets(task)[self.frames] >= 0]


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """`fit(train: Inputs, cfg, seed) -> fitted`; `score(fitted, test: Inputs) -> {task:
    [M, K] probabilities of test.labelled(task)}`; `info(fitted)`: what a result records
    of the fit beside its scores (fine-tuning: the chosen lr and wd).

    `reads`: "features" (frozen features), "images" (the frames' pixels) or "encoder"
    (trains it). `joint`: one model for all tasks at once; otherwise one independent
    model per task, so a task with no labelled test frame need not be fitted. `fit` is
    None for the online probe, whose head the train step fits.
    """

    name: str
    fit: Callable[[Inputs, Any, int], Any] | None
    score: Callable[[Any, Inputs], dict[str, np.ndarray]]
    reads: str
    joint: bool = False
    info: Callable[[Any], dict] = lambda fitted: {}

    def seeds(self, cfg) -> range:
        """The seeds it runs: cfg.seeds, capped by cfg.<name>.seeds where that exists
        (fine-tuning, the costly one, repeats fewer times)."""
        n = cfg.seeds
        section = cfg.get(self.name)
        if section is not None and "seeds" in section:
            n = min(n, section.seeds)
        return range(n)


def get(name: str) -> Evaluator:
    """The evaluator registered as `name` (`lusjax.eval.<module>.EVALUATOR`)."""
    if name not in _REGISTRY:
        from lusjax.config import suggest

        close = suggest(name, NAMES)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown evaluator {name!r}{hint} (choose from {', '.join(NAMES)})")
    module, attr = _REGISTRY[name]
    return getattr(importlib.import_module(f"lusjax.eval.{module}"), attr)


def fit_score(
    ev: Evaluator, train: Inputs, test: Inputs, cfg, seed: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Fits `ev` on `train` and scores `test`: ({task: (test frames scored, probabilities
    [M, K])}, info). A per-task evaluator skips the tasks with no labelled test frame."""
    if not ev.joint:
        tasks = {t: k for t, k in train.tasks.items() if len(test.labelled(t))}
        train = dataclasses.replace(train, tasks=tasks)
        test = dataclasses.replace(test, tasks=tasks)
    fitted = ev.fit(train, cfg, seed)
    probs = ev.score(fitted, test)
    return {t: (test.labelled(t), p) for t, p in probs.items()}, ev.info(fitted)


# ---------------------------------------------------------------------------
# Per-task evaluators: one model per task on an array per frame.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Constant:
    """What a task with fewer than two classes among its training frames predicts: the
    one class seen, or uniform when none was."""

    num_classes: int
    present: tuple[int, ...]

    def predict_proba(self, x) -> np.ndarray:
        k = self.num_classes
        if len(self.present) == 1:
            return np.eye(k)[np.full(len(x), self.present[0])]
        return np.full((len(x), k), 1.0 / k)


def per_task(
    name: str,
    fit_one: Callable[..., Any],
    reads: str = "features",
    kwargs: Callable[[Any], dict] | None = None,
) -> Evaluator:
    """An evaluator that fits `fit_one(x [N, ...], y [N], num_classes, seed, **kwargs(cfg))
    -> model` for each task on the training frames with a known target, and scores
    `model.predict_proba(x)` on the test frames with one. `x` is the frozen features
    (`reads="features"`) or the frames' pixels ("images"); `kwargs(cfg)` defaults to
    cfg.<name>."""
    kwargs = kwargs or (lambda cfg: dict(cfg[name]))

    def fit(train: Inputs, cfg, seed: int) -> dict:
        x, kw, models = _array(train, reads), kwargs(cfg), {}
        for task, k in train.tasks.items():
            rows = train.labelled(task)
            y = train.data.frame_targets(task)[rows]
            present = np.unique(y)
            if len(present) < 2:  # nothing to learn
                models[task] = Constant(k, tuple(present.tolist()))
            else:
                models[task] = fit_one(x[rows], y, k, seed, **kw)
        return models

    def score(models: dict, test: Inputs) -> dict[str, np.ndarray]:
        x = _array(test, reads)
        return {task: m.predict_proba(x[test.labelled(task)]) for task, m in models.items()}

    return Evaluator(name, fit, score, reads)


def _array(inputs: Inputs, reads: str) -> np.ndarray:
    x = inputs.features if reads == "features" else inputs.data.images
    if x is None:
        raise ValueError(f"these inputs carry no {reads}")
    return x
