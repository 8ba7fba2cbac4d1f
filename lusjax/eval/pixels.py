"""The raw-pixel baseline: downsampled frames -> PCA -> the linear probe.

What a study's SSL features must beat to be worth their cost: no network at
all. Frame level like the other frozen protocols (clip = mean of its frames'
probabilities). PCA is fitted on the training frames only.
"""

from __future__ import annotations

import numpy as np

from lusjax.eval import linear


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, size * size * C] in [0, 1] (area-averaged)."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(images, jnp.float32) / 255.0
    n, _, _, c = x.shape
    small = jax.image.resize(x, (n, size, size, c), "linear", antialias=True)
    return np.asarray(small, np.float32).reshape(n, -1)


def fit_predict(
    train_images,
    train_y,
    test_images,
    num_classes: int,
    seed: int = 0,
    *,
    size: int = 32,
    pca_dim: int = 64,
    **probe_kw,
) -> np.ndarray:
    """[M, K] test probabilities of the linear probe (`linear.fit_predict`, `probe_kw`)
    on the first `pca_dim` principal components of the downsampled training frames."""
    from sklearn.decomposition import PCA

    tr, te = downsample(train_images, size), downsample(test_images, size)
    dim = max(1, min(pca_dim, len(tr) - 1, tr.shape[1]))
    pca = PCA(dim, random_state=seed).fit(tr)
    return linear.fit_predict(
        pca.transform(tr).astype(np.float32),
        train_y,
        pca.transform(te).astype(np.float32),
        num_classes,
        seed,
        **probe_kw,
    )
