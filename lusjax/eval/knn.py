"""Weighted k-nearest-neighbour classifier on frozen features (cosine similarity).

As in Wu et al. 2018 / DINO: each of the k most similar training examples
votes for its class with weight exp(similarity / temperature); the class
scores, normalised to sum to one, are the predicted probabilities. Registered as
the evaluator "knn" (settings: config.knn).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lusjax.eval import evaluators
from lusjax.eval.linear import bucket, pad_rows


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@jax.jit
def _votes(test, train, onehot, temperature, k_mask):
    sim = test @ train.T  # [M, N] cosine similarities
    sim = jnp.where(onehot.sum(1) > 0, sim, -2.0)  # padded rows: never neighbours
    top, idx = jax.lax.top_k(sim, k_mask.shape[0])  # [M, k]
    weight = jnp.exp((top - 1.0) / temperature) * k_mask  # shift by 1: same ratios, no overflow
    return jnp.einsum("mk,mkc->mc", weight, onehot[idx])


@dataclasses.dataclass
class KNN:
    """The training set, ready to vote: unit rows and one-hot classes, padded."""

    train: np.ndarray  # float32 [rows, D], unit norm (padding: zero rows)
    onehot: np.ndarray  # float32 [rows, K] (padding: zero rows, never neighbours)
    mask: np.ndarray  # float32 [min(k, N)]: the neighbours that vote
    temperature: float
    chunk: int

    def predict_proba(self, test_x) -> np.ndarray:
        """[M, K] class probabilities of `test_x` from its nearest training rows (cosine)."""
        test = _unit(test_x)
        out = []
        for i in range(0, len(test), self.chunk):
            part = test[i : i + self.chunk]
            votes = _votes(
                pad_rows(part, bucket(len(part), self.chunk)),
                self.train,
                self.onehot,
                np.float32(self.temperature),
                self.mask,
            )
            out.append(np.asarray(votes)[: len(part)])
        k = self.onehot.shape[1]
        votes = np.concatenate(out) if out else np.zeros((0, k), np.float32)
        return votes / np.maximum(votes.sum(1, keepdims=True), 1e-30)


def fit(
    train_x,
    train_y,
    num_classes: int,
    seed: int = 0,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> KNN:
    """The classifier of `train_x` [N, D] with labels `train_y` (nothing is trained)."""
    del seed  # deterministic
    rows = bucket(len(train_x))  # padded rows have no class and can never be picked
    train = pad_rows(_unit(train_x), rows)
    onehot = pad_rows(np.eye(num_classes, dtype=np.float32)[np.asarray(train_y)], rows)
    mask = np.ones(min(k, len(train_x)), np.float32)
    return KNN(train, onehot, mask, temperature, chunk)


def fit_predict(train_x, train_y, test_x, num_classes: int, seed: int = 0, **kw) -> np.ndarray:
    """[M, K] class probabilities of `test_x` from its k nearest `train_x` (cosine)."""
    return fit(train_x, train_y, num_classes, seed, **kw).predict_proba(test_x)


EVALUATOR = evaluators.per_task("knn", fit)
