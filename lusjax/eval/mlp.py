"""MLP heads on frozen features: the linear probe's trainer with hidden layers.

Same objective and optimiser as `linear.fit_probe` (class-balanced
cross-entropy, L2 on kernels, Adam with cosine decay), with ReLU hidden layers
and dropout between them. Registered as the evaluator "mlp" (settings: config.mlp).
"""

from __future__ import annotations

import numpy as np

from lusjax.eval import evaluators, linear


def fit(
    train_x,
    train_y,
    num_classes: int,
    seed: int = 0,
    *,
    hidden: tuple[int, ...] = (256,),
    dropout: float = 0.2,
    batch_size: int = 256,
    **kw,
) -> linear.Probe:
    """MLP probe fitted on (train_x, train_y) (minibatches: dropout's random masks over
    full batches would dominate the cost on CPU)."""
    return linear.fit_probe(
        train_x,
        train_y,
        num_classes,
        hidden=tuple(hidden),
        dropout=dropout,
        batch_size=batch_size,
        seed=seed,
        **kw,
    )


def fit_predict(train_x, train_y, test_x, num_classes: int, seed: int = 0, **kw) -> np.ndarray:
    """MLP probe: fit on train, [M, K] probabilities on test."""
    return fit(train_x, train_y, num_classes, seed, **kw).predict_proba(test_x)


EVALUATOR = evaluators.per_task("mlp", fit)
