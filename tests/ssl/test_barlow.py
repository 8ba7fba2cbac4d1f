"""Barlow Twins: the loss and its two terms against numpy."""

import numpy as np
from ssl_testing import D, N, jit, rand

from lusjax.ssl import barlow


def test_barlow_matches_numpy():
    z1, z2, lamb = rand(0, N, D), rand(1, N, D) + 0.5 * rand(0, N, D), 0.0051
    a, b = (np.asarray(x, np.float64) for x in (z1, z2))
    an = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)
    bn = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5)
    c = an.T @ bn / N
    on = sum((1 - c[i, i]) ** 2 for i in range(D))
    off = sum(c[i, j] ** 2 for i in range(D) for j in range(D) if i != j)
    loss, on_j, off_j = jit(barlow.barlow_loss)(z1, z2, lamb)
    np.testing.assert_allclose([loss, on_j, off_j], [on + lamb * off, on, off], rtol=1e-5)
