"""SSL methods, every registered one: sharded == single device, a tiny training run;
the shared heads, queue and EMA helpers.

Each method's own references (its loss against numpy, its state): tests/ssl/test_<name>.py.
Helpers (8 forced CPU devices, global batch 16): tests/ssl_testing.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P
from ssl_testing import (
    N,
    assert_sharded_equals_single,
    jit,
    method_inputs,
    rand,
    tiny_cfg,
)

from lusjax import ssl
from lusjax.sharding import AXIS, make_mesh
from lusjax.ssl import heads

# ---------------------------------------------------------------------------
# Sharded (8 devices) == single device, loss, metrics, state and gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ssl.names())
def test_sharded_equals_single_device(name):
    """With the head outputs and initial state the loop would give it. Method-specific
    states (a queue that wraps, SwAV's filled queue): tests/ssl/."""
    cfg = tiny_cfg(name)
    assert_sharded_equals_single(name, cfg, *method_inputs(name, cfg))


@pytest.mark.parametrize("name", ["simclr", pytest.param("swav", marks=pytest.mark.slow)])
def test_grad_inside_shard_map_wrt_replicated_head(name):
    """As the loop will do: features sharded, head params replicated, synced BN,
    gradient taken inside shard_map. Equals the single-device gradient."""
    cfg = tiny_cfg(name)
    method = ssl.get(name)
    feats = {"view1": rand(0, N, 12), "view2": rand(1, N, 12)}
    head1, head8 = method.make_head(cfg), method.make_head(cfg, bn_axis_name=AXIS)
    variables = jit(lambda x: head1.init(jax.random.PRNGKey(0), x, train=False))(feats["view1"])

    def loss_fn(params, feats, head, axis_name):
        v = {**variables, "params": params}
        out = {
            k: head.apply(v, f, train=True, mutable=["batch_stats"])[0] for k, f in feats.items()
        }
        return method.loss(out, None, {}, cfg=cfg, axis_name=axis_name)[0]

    g1 = jit(jax.grad(loss_fn), static_argnums=(2, 3))(variables["params"], feats, head1, None)
    g8 = jit(
        jax.shard_map(
            lambda p, f: jax.grad(loss_fn)(p, f, head8, AXIS),
            mesh=make_mesh(),
            in_specs=(P(), P(AXIS)),
            out_specs=P(),
        )
    )(variables["params"], feats)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g8, g1)


# ---------------------------------------------------------------------------
# Queue, EMA, heads
# ---------------------------------------------------------------------------


def test_enqueue_wraparound():
    enqueue = jit(heads.enqueue)
    queue = jnp.zeros((5, 2))
    keys = jnp.arange(8.0).reshape(4, 2) + 1
    q, ptr = enqueue(queue, jnp.int32(3), keys)
    np.testing.assert_array_equal(np.asarray(q)[[3, 4, 0, 1]], keys)
    np.testing.assert_array_equal(np.asarray(q)[2], 0)
    assert int(ptr) == 2
    # More keys than slots: same as writing them one after the other.
    keys = jnp.arange(14.0).reshape(7, 2)
    q, ptr = enqueue(queue, jnp.int32(1), keys)
    ref = np.zeros((5, 2))
    for i, k in enumerate(np.asarray(keys)):
        ref[(1 + i) % 5] = k
    np.testing.assert_array_equal(q, ref)
    assert int(ptr) == (1 + 7) % 5


def test_ema_schedule():
    m = heads.ema_momentum
    np.testing.assert_allclose(
        [m(0, 100, 0.99), m(50, 100, 0.99), m(100, 100, 0.99)], [0.99, 0.995, 1.0], atol=1e-7
    )
    assert float(m(200, 100, 0.99)) == 1.0
    # The EMA update of a target: tests/ssl/test_byol.py, test_mocov2.py.


def test_mlp_head_structure_and_dtypes():
    head = heads.MLPHead(32, 16, num_layers=3, last_bn=True, dtype=jnp.bfloat16)
    variables = jit(lambda x: head.init(jax.random.PRNGKey(0), x, train=False))(jnp.ones((4, 8)))
    dense = [k for k in variables["params"] if k.startswith("Dense")]
    assert len(dense) == 3 and "bias" not in variables["params"]["Dense_2"]
    assert "BatchNorm_2" not in variables["params"]  # last BN: no scale/shift
    assert "BatchNorm_2" in variables["batch_stats"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    out, _ = jit(lambda v, x: head.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jnp.ones((4, 8))
    )
    assert out.shape == (4, 16) and out.dtype == jnp.float32
    params = jax.eval_shape(
        lambda x: heads.MLPHead(32, 16, use_bn=False).init(jax.random.PRNGKey(0), x, train=False),
        jnp.ones((4, 8)),
    )
    assert "batch_stats" not in params and "bias" in params["params"]["Dense_0"]


# ---------------------------------------------------------------------------
# Each method end to end on a tiny problem: finite, and a few steps lower it
# ---------------------------------------------------------------------------


def train_losses(name, steps):
    """A miniature of train.py's step: Dense "backbone" + the method's head on two
    noisy views of fixed random features, SGD, EMA update; returns the losses."""
    method, cfg = ssl.get(name), tiny_cfg(name)
    backbone, head = nn.Dense(24), method.make_head(cfg)
    x = rand(0, N, 12)
    views = {"view1": x + 0.3 * rand(1, N, 12), "view2": x + 0.3 * rand(2, N, 12)}
    tx = optax.sgd(0.05, momentum=0.9)

    @jit
    def init(x):
        bvars = backbone.init(jax.random.PRNGKey(1), x)
        hvars = head.init(jax.random.PRNGKey(2), jnp.ones((N, 24)), train=False)
        variables = {
            "params": {"backbone": bvars["params"], "head": hvars["params"]},
            "batch_stats": {"head": hvars.get("batch_stats", {})},
        }
        return variables, tx.init(variables["params"]), method.init_state(variables, cfg)

    variables, opt_state, mstate = init(x)

    def forward(v, x):
        f = backbone.apply({"params": v["params"]["backbone"]}, x)
        hv = {"params": v["params"]["head"], "batch_stats": v["batch_stats"]["head"]}
        out, upd = head.apply(hv, f, train=True, mutable=["batch_stats"])
        return out, {"head": upd.get("batch_stats", {})}

    @jit
    def step(variables, opt_state, mstate, i):
        def loss_fn(params):
            online, bstats = {}, None
            for v, xv in views.items():
                online[v], bstats = forward({**variables, "params": params}, xv)
            target = None
            if method.needs_target:
                target = jax.lax.stop_gradient(
                    {v: forward(mstate["target"], xv)[0] for v, xv in views.items()}
                )
            loss, metrics, upd = method.loss(online, target, mstate, cfg=cfg, axis_name=None)
            return loss, (metrics, upd, bstats)

        (loss, (metrics, upd, bstats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            variables["params"]
        )
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        variables = {
            "params": optax.apply_updates(variables["params"], updates),
            "batch_stats": bstats,
        }
        # The loss's state updates (queues) are left out: with one fixed batch, queued
        # keys would be its own positives. Each queue's update: tests/ssl/.
        del upd
        mstate = method.update_state(mstate, variables, i, steps, cfg)
        return variables, opt_state, mstate, loss, metrics

    losses = []
    for i in range(steps):
        variables, opt_state, mstate, loss, metrics = step(variables, opt_state, mstate, i)
        assert np.isfinite(loss) and all(np.isfinite(v) for v in metrics.values()), metrics
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("name", ssl.names())
def test_method_trains_on_tiny_problem(name):
    losses = train_losses(name, steps=10)
    assert losses[-1] < losses[0], losses
