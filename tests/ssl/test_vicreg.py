"""VICReg: the loss and its three terms against numpy."""

import numpy as np
from ssl_testing import D, N, jit, rand

from lusjax.ssl import vicreg


def test_vicreg_matches_numpy():
    z1, z2 = rand(0, N, D, scale=0.5), rand(1, N, D, scale=2.0)
    a, b = (np.asarray(x, np.float64) for x in (z1, z2))

    def var_cov(x):
        std = np.sqrt(x.var(0, ddof=1) + 1e-4)
        cov = np.cov(x, rowvar=False)
        return np.mean(np.maximum(0, 1 - std)), (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / D

    inv = np.mean((a - b) ** 2)
    (v1, c1), (v2, c2) = var_cov(a), var_cov(b)
    loss, terms = jit(vicreg.vicreg_loss)(z1, z2, 25.0, 25.0, 1.0)
    assert v1 > 0  # scale 0.5: the hinge is active for view 1
    np.testing.assert_allclose(
        [terms["invariance"], terms["variance"], terms["covariance"]],
        [inv, v1 + v2, c1 + c2],
        rtol=1e-5,
    )
    np.testing.assert_allclose(loss, 25 * inv + 25 * (v1 + v2) + (c1 + c2), rtol=1e-5)
