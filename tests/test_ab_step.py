"""The stem max-pool formulations compute the same thing; ab_step.py swaps them cleanly."""

import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lusjax.models import layers

_spec = importlib.util.spec_from_file_location(
    "ab_step", Path(__file__).resolve().parent.parent / "benchmarks" / "ab_step.py"
)
ab_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab_step)


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (1, 9, 7, 2), (1, 2, 1, 1)])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("variant", ["maxpool=argmax", "maxpool=unfused"])
def test_argmax_max_pool_matches_flax_values_and_gradients(shape, ties, variant):
    pool = ab_step.SWAPS[variant]["max_pool_3x3_s2"]
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    if ties:  # after a ReLU most windows hold several equal zeros
        x = jnp.round(jax.nn.relu(x))
    flax_pool = ab_step.SWAPS["maxpool=reduce_window"]["max_pool_3x3_s2"]
    g = jax.random.normal(jax.random.PRNGKey(1), flax_pool(x).shape)
    ref = jax.vjp(flax_pool, x)
    new = jax.vjp(pool, x)
    np.testing.assert_array_equal(new[0], ref[0])
    np.testing.assert_allclose(new[1](g)[0], ref[1](g)[0], rtol=1e-6, atol=1e-6)
    bf = jax.jit(pool)(x.astype(jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_array_equal(bf, flax_pool(x.astype(jnp.bfloat16)))


def test_swaps_restore_the_library():
    before = layers.max_pool_3x3_s2
    with ab_step.swapped(ab_step.SWAPS["maxpool=argmax"]):
        assert layers.max_pool_3x3_s2 is layers.argmax_max_pool_3x3_s2
    assert layers.max_pool_3x3_s2 is before
    assert nn.max_pool  # flax's stays untouched
    both = ab_step.swaps_of("stem=s2d4+maxpool=unfused")
    assert set(both) == {"StemConvS2", "max_pool_3x3_s2"}


def test_the_library_uses_the_argmax_pool_on_gpus_only(monkeypatch):
    x = jnp.ones((1, 8, 8, 2))
    assert "select_and_scatter" in str(
        jax.jit(jax.grad(lambda x: layers.max_pool_3x3_s2(x).sum())).lower(x).as_text()
    )
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "select_and_scatter" not in str(
        jax.jit(jax.grad(lambda x: layers.max_pool_3x3_s2(x).sum())).lower(x).as_text()
    )
