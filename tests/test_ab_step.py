"""The layer variants that benchmarks/ab_step.py swaps in compute what they replace."""

import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lusjax.models import layers

_spec = importlib.util.spec_from_file_location(
    "ab_step", Path(__file__).resolve().parent.parent / "benchmarks" / "ab_step.py")
ab_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab_step)


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (1, 9, 7, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_argmax_max_pool_matches_flax_values_and_gradients(shape, ties):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    if ties:  # after a ReLU most windows hold several equal zeros
        x = jnp.round(jax.nn.relu(x))
    g = jax.random.normal(jax.random.PRNGKey(1), layers.max_pool_3x3_s2(x).shape)
    ref = jax.vjp(layers.max_pool_3x3_s2, x)
    new = jax.vjp(ab_step.argmax_max_pool, x)
    np.testing.assert_array_equal(new[0], ref[0])
    np.testing.assert_allclose(new[1](g)[0], ref[1](g)[0], rtol=1e-6, atol=1e-6)
    bf = ab_step.argmax_max_pool(x.astype(jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16


def test_swaps_restore_the_library():
    before = layers.max_pool_3x3_s2
    with ab_step.swapped(ab_step.SWAPS["maxpool=argmax"]):
        assert layers.max_pool_3x3_s2 is ab_step.argmax_max_pool
    assert layers.max_pool_3x3_s2 is before
    assert nn.max_pool  # flax's stays untouched
