"""SimSiam: the negative cosine in closed forms."""

import jax.numpy as jnp
import numpy as np
from ssl_testing import D, N, rand

from lusjax.ssl import simsiam


def test_negative_cosine_closed_forms():
    z = rand(0, N, D)
    np.testing.assert_allclose(simsiam.negative_cosine(0.5 * z, z), -1.0, atol=1e-6)  # same
    np.testing.assert_allclose(simsiam.negative_cosine(-z, z), 1.0, atol=1e-6)  # opposite
    e0, e1 = jnp.eye(D)[:1].repeat(N, 0), jnp.eye(D)[1:2].repeat(N, 0)
    np.testing.assert_allclose(simsiam.negative_cosine(e0, e1), 0.0, atol=1e-6)  # orthogonal
