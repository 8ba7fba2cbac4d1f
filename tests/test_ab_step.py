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


def _depth_to_space(y6):
    b, hq, wq, _, _, c = y6.shape
    return y6.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * hq, 2 * wq, c)


@pytest.mark.parametrize("shape", [(2, 4, 4, 2, 2, 3), (1, 3, 5, 2, 2, 2), (1, 1, 1, 2, 2, 1)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_over_blocks_matches_flax(shape, ties):
    """The pool of an input given as 2x2 blocks = nn.max_pool of the assembled input."""
    y6 = jax.random.normal(jax.random.PRNGKey(0), shape)
    if ties:
        y6 = jnp.round(jax.nn.relu(y6))
    flax_pool = layers.reduce_window_max_pool_3x3_s2
    ref_out, ref_vjp = jax.vjp(lambda y: flax_pool(_depth_to_space(y)), y6)
    out, vjp = jax.vjp(layers.argmax_max_pool_3x3_s2_blocks, y6)
    np.testing.assert_array_equal(out, ref_out)
    g = jax.random.normal(jax.random.PRNGKey(1), out.shape)
    np.testing.assert_allclose(vjp(g)[0], ref_vjp(g)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [64, 62])  # 62: not in 4x4 blocks, the library's stem
def test_blocks_stem_is_the_same_resnet(size):
    """stem=blocks: same parameter tree, features and gradients as the library's stem."""
    from lusjax import models

    model = models.get("resnet18", num_channels=1, dtype="float32")
    # 4 images of 64 px: train-mode BN over 2 values (2 images at 32 px) would turn float
    # rounding into 1% differences
    x = jax.random.normal(jax.random.PRNGKey(0), (4, size, size, 1))
    v = model.init(jax.random.PRNGKey(1), x, train=False)

    def loss(params, stats):
        out, _ = model.apply(
            {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return (out**2).sum(), out

    ref = jax.grad(loss, has_aux=True)(v["params"], v["batch_stats"])
    with ab_step.swapped(ab_step.swaps_of("stem=blocks")):
        assert jax.tree.map(jnp.shape, model.init(jax.random.PRNGKey(1), x, train=False)) == (
            jax.tree.map(jnp.shape, v)
        )
        new = jax.grad(loss, has_aux=True)(v["params"], v["batch_stats"])
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
        assert float(jnp.abs(a - b).max()) <= 1e-4 * float(jnp.abs(b).max()) + 1e-8


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
