"""The raw-pixel baseline: downsampled frames -> PCA -> the linear probe.

What a study's SSL features must beat to be worth their cost: no network at
all. Frame level like the other frozen protocols (clip = mean of its frames'
probabilities). PCA is fitted on the training frames only. Registered as the
evaluator "pixels" (settings: config.pixels, `lusjax study`'s).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lusjax.eval import evaluators, linear


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, size * size * C] in [0, 1] (area-averaged)."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(images, jnp.float32) / 255.0
    n, _, _, c = x.shape
    small = jax.image.resize(x, (n, size, size, c), "linear", antialias=True)
    return np.asarray(small, np.float32).reshape(n, -1)


@dataclasses.dataclass
class PixelProbe:
    """PCA of downsampled frames, then a linear probe on the components."""

    size: int
    pca: Any
    probe: linear.Probe

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 frames [M, H, W, C] -> [M, K] class probabilities."""
        z = self.pca.transform(downsample(images, self.size)).astype(np.float32)
        return self.probe.predict_proba(z)


def fit(
    train_images,
    train_y,
    num_classes: int,
    seed: int = 0,
    *,
    size: int = 32,
    pca_dim: int = 64,
    **probe_kw,
) -> PixelProbe:
    """The linear probe (`linear.fit_probe`, `probe_kw`) on the first `pca_dim` principal
    components of the downsampled training frames."""
    from sklearn.decomposition import PCA

    tr = downsample(train_images, size)
    dim = max(1, min(pca_dim, len(tr) - 1, tr.shape[1]))
    pca = PCA(dim, random_state=seed).fit(tr)
    z = pca.transform(tr).astype(np.float32)
    return PixelProbe(size, pca, linear.fit_probe(z, train_y, num_classes, seed=seed, **probe_kw))


EVALUATOR = evaluators.per_task("pixels", fit, reads="images")
