"""MoCo v2: InfoNCE against numpy; the two queues (global, wrapping, per view); the EMA
key encoder."""

import jax
import jax.numpy as jnp
import numpy as np
from ssl_testing import (
    TOL,
    D,
    N,
    assert_sharded_equals_single,
    jit,
    loss_fns,
    np_logsumexp,
    rand,
    tiny_cfg,
    unit,
)

from lusjax.ssl import heads, mocov2


def test_infonce_matches_numpy():
    q, k, t = rand(0, N, D), rand(1, N, D), 0.2
    queue = heads.l2_normalize(rand(2, 32, D))
    qn, kn, qu = (unit(np.asarray(a, np.float64)) for a in (q, k, queue))
    losses = []
    for i in range(N):
        logits = np.concatenate([[qn[i] @ kn[i]], qu @ qn[i]]) / t
        losses.append(np_logsumexp(logits) - logits[0])
    np.testing.assert_allclose(jit(mocov2.infonce)(q, k, queue, t), np.mean(losses), **TOL)


def inputs(cfg):
    """Random queries and keys of both views; queues whose pointer the N = 16 new keys
    move past the end (56 of 64)."""
    dim = cfg.proj_dim
    mk = lambda i: {"z": rand(i, N, dim), "p": rand(i + 10, N, dim)}
    online, target = {"view1": mk(0), "view2": mk(1)}, {"view1": mk(2), "view2": mk(3)}
    queue = heads.l2_normalize(rand(4, 2, cfg.queue_size, dim))
    return online, target, {"queue": queue, "queue_ptr": jnp.int32(56)}


def test_sharded_equals_single_device_with_the_queue_wrapping():
    cfg = tiny_cfg("mocov2")
    assert_sharded_equals_single("mocov2", cfg, *inputs(cfg))


def test_queue_updates_are_global():
    cfg = tiny_cfg("mocov2")
    online, target, state = inputs(cfg)
    _, (_, updates) = jit(loss_fns("mocov2", cfg, target, state)[1])(online)
    idx = (56 + np.arange(N)) % cfg.queue_size
    for i, view in enumerate(("view1", "view2")):  # one queue per view
        keys = unit(np.asarray(target[view]["z"]))
        np.testing.assert_allclose(np.asarray(updates["queue"])[i, idx], keys, **TOL)
        kept = np.setdiff1d(np.arange(cfg.queue_size), idx)
        np.testing.assert_array_equal(
            np.asarray(updates["queue"])[i, kept], np.asarray(state["queue"])[i, kept]
        )
    assert int(updates["queue_ptr"]) == (56 + N) % cfg.queue_size


def test_mocov2_queries_meet_the_queue_of_their_positive_view():
    """view-1 queries: positive key of view 2, negatives from the view-2 queue (solo-learn)."""
    cfg = tiny_cfg("mocov2")
    online, target, state = inputs(cfg)
    value, _ = jit(loss_fns("mocov2", cfg, target, state)[1])(online)
    q1, q2 = online["view1"]["z"], online["view2"]["z"]
    k1, k2 = target["view1"]["z"], target["view2"]["z"]
    t = cfg.temperature
    expect = (
        mocov2.infonce(q1, k2, state["queue"][1], t) + mocov2.infonce(q2, k1, state["queue"][0], t)
    ) / 2
    swapped = (
        mocov2.infonce(q1, k2, state["queue"][0], t) + mocov2.infonce(q2, k1, state["queue"][1], t)
    ) / 2
    np.testing.assert_allclose(float(value), float(expect), **TOL)
    assert abs(float(value) - float(swapped)) > 1e-4


def test_target_is_frozen_at_the_final_momentum():
    online = {
        "params": {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.full(2, 2.0)}},
        "batch_stats": {"backbone": {"mean": jnp.ones(3)}},
    }
    cfg = tiny_cfg("mocov2")
    state = mocov2.init_state(online, cfg)
    state["target"] = jax.tree.map(jnp.zeros_like, state["target"])
    # momentum 1 at the end (final_momentum): the target keeps its value
    assert (
        mocov2.METHOD.update_state(state, online, 100, 100, cfg)["target"]["params"]["head"][
            "w"
        ].sum()
        == 0
    )
