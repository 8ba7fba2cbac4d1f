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
def test_argmax_max_pool_matches_flax_values_and_gradients(shape, ties):
    pool = layers.argmax_max_pool_3x3_s2
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


def _resnet18_grads(x):
    """(param gradients, features) of a train-mode ResNet-18 on x, fresh parameters."""
    from lusjax import models

    model = models.get("resnet18", num_channels=1, dtype="float32")
    v = model.init(jax.random.PRNGKey(1), x, train=False)

    def loss(params):
        out, _ = model.apply(
            {"params": params, "batch_stats": v["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return (out**2).sum(), out

    return jax.grad(loss, has_aux=True)(v["params"])


def test_blocks_stem_is_the_same_resnet():
    """stem=blocks: same parameter tree, features and gradients as stem=nhwc."""
    # 4 images of 64 px: train-mode BN over 2 values (2 images at 32 px) would turn float
    # rounding into 1% differences
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64, 1))
    with ab_step.swapped(ab_step.swaps_of("stem=nhwc")):
        ref = _resnet18_grads(x)
    with ab_step.swapped(ab_step.swaps_of("stem=blocks")):
        new = _resnet18_grads(x)
    assert jax.tree.structure(new) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
        assert a.shape == b.shape
        assert float(jnp.abs(a - b).max()) <= 1e-4 * float(jnp.abs(b).max()) + 1e-8


@pytest.mark.parametrize(
    "backend, size, form", [("gpu", 64, "blocks"), ("gpu", 62, "nhwc"), ("cpu", 64, "nhwc")]
)
def test_the_library_stem_form_per_backend_and_size(monkeypatch, backend, size, form):
    calls = []
    for name in ("imagenet_stem_blocks", "imagenet_stem_nhwc"):
        fn = getattr(layers, name)
        monkeypatch.setattr(
            layers, name, lambda *a, _fn=fn, _n=name, **k: calls.append(_n) or _fn(*a, **k)
        )
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    jax.eval_shape(lambda x: _resnet18_grads(x), jnp.zeros((2, size, size, 1)))
    assert set(calls) == {f"imagenet_stem_{form}"}


def test_swaps_restore_the_library():
    before = layers.max_pool_3x3_s2
    with ab_step.swapped(ab_step.SWAPS["maxpool=argmax"]):
        assert layers.max_pool_3x3_s2 is layers.argmax_max_pool_3x3_s2
    assert layers.max_pool_3x3_s2 is before
    assert nn.max_pool  # flax's stays untouched
    both = ab_step.swaps_of("stem=s2d4+maxpool=argmax")
    assert set(both) == {"imagenet_stem", "StemConvS2", "max_pool_3x3_s2"}


def test_the_library_uses_the_argmax_pool_on_gpus_only(monkeypatch):
    x = jnp.ones((1, 8, 8, 2))
    assert "select_and_scatter" in str(
        jax.jit(jax.grad(lambda x: layers.max_pool_3x3_s2(x).sum())).lower(x).as_text()
    )
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "select_and_scatter" not in str(
        jax.jit(jax.grad(lambda x: layers.max_pool_3x3_s2(x).sum())).lower(x).as_text()
    )


@pytest.mark.parametrize("variant", ["blur=matmul", "blur=barrier"])
def test_blur_candidates_equal_the_library_blur_and_swap_back(variant):
    from lusjax.data import us_augment

    blur, lib = ab_step.SWAPS[variant]["us_augment.gaussian_blur"], us_augment.gaussian_blur
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 20, 17, 1))
    sigma = jnp.array([0.3, 1.0, 2.5])

    def run(f):
        return jax.jit(jax.vmap(lambda xi, s: f(jnp, xi, s, 0.5 * s, 6, 4)))(x, sigma)

    np.testing.assert_allclose(run(blur), run(lib), rtol=1e-5, atol=1e-6)
    with ab_step.swapped(ab_step.swaps_of(variant)):
        assert us_augment.gaussian_blur is blur
    assert us_augment.gaussian_blur is lib
