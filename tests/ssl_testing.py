"""Helpers of the SSL tests: tests/test_ssl.py (every registered method) and
tests/ssl/test_<method>.py (each method's own references).

Runs on the 8 forced CPU devices of conftest.py; the global batch is N = 16 (2 per
device) so every global-batch reduction is exercised.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lusjax import ssl
from lusjax.sharding import AXIS, make_mesh

N, D = 16, 8  # global batch, embedding width
TOL = {"rtol": 1e-5, "atol": 1e-5}
# Graphs here are tiny: XLA's backend optimisations cost more than they save
# (about half the compile time, which is most of these tests' time).
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# The largest value each size may take in the tests (a method's default only shrinks:
# a queue that is off by default, queue_size 0, stays off).
TINY = {
    "proj_hidden_dim": 32,
    "proj_dim": 16,
    "proj_layers": 2,
    "pred_hidden_dim": 16,
    "num_prototypes": 10,
    "queue_size": 64,
}


def rand(key, *shape, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


def unit(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def np_logsumexp(x):
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


def tree_allclose(a, b, **tol):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **(tol or TOL)), a, b)


def tiny_cfg(name: str, **overrides):
    """`name`'s default ssl config with its sizes shrunk to `TINY`, then `overrides`
    (keys the method does not have are ignored)."""
    cfg = ssl.get(name).default_config()
    cfg.update({k: min(cfg[k], v) for k, v in TINY.items() if k in cfg})
    cfg.update({k: v for k, v in overrides.items() if k in cfg})
    return cfg


def method_inputs(name: str, cfg):
    """What the loop passes to `name`'s loss, for random features: its head's outputs
    for two views, the target's (another two views) when it has one, and its initial
    method state."""
    method = ssl.get(name)
    head = method.make_head(cfg)

    @jit
    def make():
        feats = [rand(i, N, 12) for i in range(4)]
        hv = head.init(jax.random.PRNGKey(0), feats[0], train=False)
        out = lambda x: head.apply(hv, x, train=False)
        variables = {
            "params": {"head": hv["params"]},
            "batch_stats": {"head": hv.get("batch_stats", {})},
        }
        online = {"view1": out(feats[0]), "view2": out(feats[1])}
        target = {"view1": out(feats[2]), "view2": out(feats[3])} if method.needs_target else None
        return online, target, method.init_state(variables, cfg)

    return make()


def batch_specs(tree, global_outputs=()):
    """P(AXIS) for per-sample head outputs, P() for the method's global ones (SwAV's
    prototype matrix)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: P() if path[-1].key in global_outputs else P(AXIS), tree
    )


def loss_fns(name, cfg, target, state):
    """(single-device, sharded over the 8 devices) `online -> (loss, (metrics,
    state_updates))` of method `name`."""
    method = ssl.get(name)

    def single(online):
        loss, metrics, updates = method.loss(online, target, state, cfg=cfg, axis_name=None)
        return loss, (metrics, updates)

    def sharded(online):
        def per_device(o, t, s):
            loss, metrics, updates = method.loss(o, t, s, cfg=cfg, axis_name=AXIS)
            return loss, (metrics, updates)

        specs = functools.partial(batch_specs, global_outputs=method.global_outputs)
        in_specs = (specs(online), specs(target), P())
        f = jax.shard_map(per_device, mesh=make_mesh(), in_specs=in_specs, out_specs=P())
        return f(online, target, state)

    return single, sharded


def assert_sharded_equals_single(name, cfg, online, target, state):
    """Loss, metrics, state updates and gradients (wrt the head outputs) of `name` over 8
    devices equal the single-device ones; all finite, the gradient not all zero."""
    single, sharded = loss_fns(name, cfg, target, state)
    (l1, aux1), g1 = jit(jax.value_and_grad(single, has_aux=True))(online)
    (l8, aux8), g8 = jit(jax.value_and_grad(sharded, has_aux=True))(online)
    assert np.isfinite(l1) and all(np.isfinite(v) for v in aux1[0].values())
    np.testing.assert_allclose(l8, l1, **TOL)
    tree_allclose(aux8, aux1)
    tree_allclose(g8, g1)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g1))
