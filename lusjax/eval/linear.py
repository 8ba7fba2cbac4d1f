"""Probes on frozen features: a jitted JAX/optax trainer and a scikit-learn cross-check.

`fit_probe` trains a `Head` (linear, or an MLP when `hidden` is given; see
`mlp.py`) on standardized features with Adam and a cosine-decayed learning
rate, minimising class-balanced softmax cross-entropy + `l2/2 * |kernels|^2`.
That is the objective of scikit-learn's
`LogisticRegression(C=1/(l2*N), class_weight="balanced")`, so `sklearn_probe`
on the same features must agree with the linear JAX probe (tested).
The whole optimisation is one `lax.scan` under `jit`; inputs are padded to a
power-of-two row count so the many fits of a protocol reuse few compilations.
Registered as the evaluators "linear" (settings: config.linear) and "sklearn".
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lusjax.eval import evaluators


class Head(nn.Module):
    """Dense layers with ReLU (and dropout) between them, then a linear classifier."""

    num_classes: int
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


@dataclasses.dataclass
class Probe:
    """A trained head plus the feature standardization it expects."""

    head: Head
    params: dict
    mean: np.ndarray
    std: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float32) - self.mean) / self.std
        return np.asarray(_apply(self.head, self.params, pad_rows(z, bucket(len(z)))))[: len(z)]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """float [N, D] features -> [N, K] class probabilities."""
        return np.asarray(jax.nn.softmax(self.logits(x), -1))


@functools.partial(jax.jit, static_argnums=0)
def _apply(head, params, z):
    return head.apply({"params": params}, z)


def bucket(n: int, cap: int | None = None, floor: int = 8) -> int:
    """Rows to pad `n` to: the next power of two (at least `floor`, at most `cap`).

    Every distinct array shape costs a compilation; bucketing keeps a whole
    protocol (many folds, fractions, seeds) to a handful of them.
    """
    rows = max(floor, 1 << max(n - 1, 0).bit_length())
    return min(rows, cap) if cap else rows


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """`x` with zero rows appended up to `rows`."""
    if len(x) >= rows:
        return x
    return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)])


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(head, key, dim):
    return head.init(key, jnp.zeros((1, dim)))["params"]


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training features (std of constant features = 1)."""
    mean = x.mean(0).astype(np.float32)
    std = x.std(0).astype(np.float32)
    return mean, np.where(std > 1e-6, std, 1.0).astype(np.float32)


def balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-example weights n / (classes present * count of its class), sklearn's "balanced"."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = (counts > 0).sum()
    return (len(y) / (present * counts[y])).astype(np.float32)


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    hidden: tuple[int, ...] = (),
    dropout: float = 0.0,
    steps: int = 500,
    lr: float = 0.05,
    l2: float = 1e-2,
    batch_size: int = 0,
    class_balanced: bool = True,
    seed: int = 0,
) -> Probe:
    """Trains a head on features `x` [N, D] with integer labels `y` [N] in [0, num_classes).

    `batch_size` rows per step, drawn with replacement; 0 (or >= N) = every row every step.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if len(x) == 0:
        raise ValueError("no training examples")
    mean, std = standardize(x)
    z = (x - mean) / std
    w = balanced_weights(y, num_classes) if class_balanced else np.ones(len(y), np.float32)
    n = len(z)
    rows = bucket(n, floor=64)
    z, y, w = pad_rows(z, rows), pad_rows(y, rows), pad_rows(w, rows)  # padding weighs 0
    head = Head(num_classes, tuple(hidden), dropout)
    key_init, key_train = jax.random.split(jax.random.PRNGKey(seed))
    params = _init(head, key_init, z.shape[1])
    full = batch_size <= 0 or n <= batch_size
    params = _train(
        head,
        steps,
        0 if full else batch_size,
        full,
        params,
        z,
        y,
        w,
        n,
        key_train,
        jnp.float32(lr),
        jnp.float32(l2),
    )
    return Probe(head, jax.device_get(params), mean, std)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _train(head, steps, batch_size, full_batch, params, z, y, w, n, key, lr, l2):
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss_fn(p, zb, yb, wb, k):
        logits = head.apply({"params": p}, zb, train=True, rngs={"dropout": k})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        kernels = [
            v for path, v in jax.tree_util.tree_leaves_with_path(p) if path[-1].key == "kernel"
        ]
        reg = sum(jnp.sum(v * v) for v in kernels)
        return jnp.sum(wb * ce) / jnp.maximum(jnp.sum(wb), 1e-9) + 0.5 * l2 * reg

    def step(carry, k):
        p, s = carry
        k_batch, k_drop = jax.random.split(k)
        if full_batch:
            zb, yb, wb = z, y, w
        else:  # uniform minibatch over the n real rows
            idx = jax.random.randint(k_batch, (batch_size,), 0, n)
            zb, yb, wb = z[idx], y[idx], w[idx]
        g = jax.grad(loss_fn)(p, zb, yb, wb, k_drop)
        updates, s = tx.update(g, s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
    return params


def fit_predict(train_x, train_y, test_x, num_classes: int, seed: int = 0, **kw) -> np.ndarray:
    """Linear probe: fit on train, [M, K] probabilities on test."""
    return fit_probe(train_x, train_y, num_classes, seed=seed, **kw).predict_proba(test_x)


def sklearn_probe(
    train_x, train_y, test_x, num_classes: int, l2: float = 1e-2, class_balanced: bool = True
) -> np.ndarray:
    """scikit-learn LogisticRegression with the same objective; [M, K] probabilities."""
    return fit_sklearn(train_x, train_y, num_classes, l2, class_balanced).predict_proba(test_x)


@dataclasses.dataclass
class SklearnProbe:
    """A fitted scikit-learn LogisticRegression plus the feature standardization it expects."""

    clf: Any
    mean: np.ndarray
    std: np.ndarray
    num_classes: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """float [N, D] features -> [N, K] probabilities (0 for classes absent in training)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = self.clf.predict_proba((np.asarray(x, np.float32) - self.mean) / self.std)
        out = np.zeros((len(x), self.num_classes))
        out[:, self.clf.classes_] = p
        return out


def fit_sklearn(
    x, y, num_classes: int, l2: float = 1e-2, class_balanced: bool = True
) -> SklearnProbe:
    """scikit-learn's LogisticRegression(C=1/(l2*N)) on standardized features: the
    objective of `fit_probe`'s linear head."""
    from sklearn.linear_model import LogisticRegression

    mean, std = standardize(np.asarray(x, np.float32))
    clf = LogisticRegression(
        C=1.0 / (l2 * len(x)),
        max_iter=2000,
        class_weight="balanced" if class_balanced else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on separable data
        clf.fit((x - mean) / std, y)
    return SklearnProbe(clf, mean, std, num_classes)


def settings(cfg) -> dict:
    """The keyword arguments of `fit_probe` from `cfg.linear`."""
    return {k: v for k, v in dict(cfg.linear).items() if k != "sklearn_check"}


EVALUATOR = evaluators.per_task(
    "linear",
    lambda x, y, k, seed, **kw: fit_probe(x, y, k, seed=seed, **kw),
    kwargs=settings,
)
# The cross-check of `lusjax eval` (config.linear.sklearn_check): the same objective
# solved by scikit-learn, on the same features.
SKLEARN = evaluators.per_task(
    "sklearn",
    lambda x, y, k, seed, l2: fit_sklearn(x, y, k, l2=l2),
    kwargs=lambda cfg: {"l2": cfg.linear.l2},
)
