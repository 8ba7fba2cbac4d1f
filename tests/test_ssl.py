"""SSL methods: losses vs numpy references, sharded == single-device, training smoke.

Runs on the 8 forced CPU devices of conftest.py; the global batch is 16 (2 per
device) so every global-batch reduction is exercised.
"""

from __future__ import annotations

import functools
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from lusjax import ssl
from lusjax.sharding import AXIS, make_mesh
from lusjax.ssl import barlow, byol, heads, mocov2, simclr, simsiam, swav, vicreg

N, D = 16, 8  # global batch, embedding width
TOL = {"rtol": 1e-5, "atol": 1e-5}
# Graphs here are tiny: XLA's backend optimisations cost more than they save
# (about half the compile time, which is most of this file's time).
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def rand(key, *shape, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


def tiny_cfg(name: str, **overrides):
    cfg = importlib.import_module(f"lusjax.ssl.{name}").default_config()
    tiny = {
        "proj_hidden_dim": 32,
        "proj_dim": 16,
        "proj_layers": 2,
        "pred_hidden_dim": 16,
        "num_prototypes": 10,
        "queue_size": 64,
    }
    if name == "swav":
        tiny["queue_size"] = 0  # its default; the queue has its own test
    cfg.update({k: v for k, v in {**tiny, **overrides}.items() if k in cfg})
    return cfg


def unit(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def np_logsumexp(x):
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


# ---------------------------------------------------------------------------
# Losses against plain numpy
# ---------------------------------------------------------------------------


def test_nt_xent_matches_numpy_loop():
    z1, z2, t = rand(0, N, D), rand(1, N, D), 0.2
    z = unit(np.concatenate([np.asarray(z1), np.asarray(z2)]).astype(np.float64))
    losses = []
    for i in range(2 * N):
        pos = (i + N) % (2 * N)
        sims = np.array([z[i] @ z[j] / t for j in range(2 * N) if j != i])
        losses.append(np_logsumexp(sims) - z[i] @ z[pos] / t)
    np.testing.assert_allclose(jit(simclr.nt_xent)(z1, z2, t), np.mean(losses), **TOL)


def test_infonce_matches_numpy():
    q, k, t = rand(0, N, D), rand(1, N, D), 0.2
    queue = heads.l2_normalize(rand(2, 32, D))
    qn, kn, qu = (unit(np.asarray(a, np.float64)) for a in (q, k, queue))
    losses = []
    for i in range(N):
        logits = np.concatenate([[qn[i] @ kn[i]], qu @ qn[i]]) / t
        losses.append(np_logsumexp(logits) - logits[0])
    np.testing.assert_allclose(jit(mocov2.infonce)(q, k, queue, t), np.mean(losses), **TOL)


def test_byol_and_simsiam_closed_forms():
    z = rand(0, N, D)
    # Same direction (any positive scale): BYOL 0, SimSiam -1.
    np.testing.assert_allclose(byol.normalized_mse(3.0 * z, z), 0.0, atol=1e-5)
    np.testing.assert_allclose(simsiam.negative_cosine(0.5 * z, z), -1.0, atol=1e-6)
    # Opposite: |p/|p| - z/|z||^2 = 4; cosine -1.
    np.testing.assert_allclose(byol.normalized_mse(-z, z), 4.0, atol=1e-5)
    np.testing.assert_allclose(simsiam.negative_cosine(-z, z), 1.0, atol=1e-6)
    # Orthogonal: 2 and 0.
    e0, e1 = jnp.eye(D)[:1].repeat(N, 0), jnp.eye(D)[1:2].repeat(N, 0)
    np.testing.assert_allclose(byol.normalized_mse(e0, e1), 2.0, atol=1e-6)
    np.testing.assert_allclose(simsiam.negative_cosine(e0, e1), 0.0, atol=1e-6)
    # General: mean |p/|p| - z/|z||^2.
    p = rand(1, N, D)
    ref = np.mean(np.sum((unit(np.asarray(p)) - unit(np.asarray(z))) ** 2, -1))
    np.testing.assert_allclose(byol.normalized_mse(p, z), ref, **TOL)


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


def np_sinkhorn(scores, iters, eps):
    """SwAV's reference distributed_sinkhorn, one process, float64."""
    q = np.exp(scores / eps).T  # [K, B]
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(1, keepdims=True)
        q /= k
        q /= q.sum(0, keepdims=True)
        q /= b
    return (q * b).T


sinkhorn = jit(swav.sinkhorn, static_argnums=(1, 2))


def test_sinkhorn_matches_reference_and_marginals():
    scores = heads.l2_normalize(rand(0, N, D)) @ heads.l2_normalize(rand(1, D, 10), axis=0)
    ref = np_sinkhorn(np.asarray(scores, np.float64), 3, 0.05)
    q = sinkhorn(scores, 3, 0.05)
    np.testing.assert_allclose(q, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)  # each sample: one unit of mass
    # Equal partition: converged, every prototype gets B / K of the mass.
    q = sinkhorn(scores, 200, 0.05)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(q.sum(0), N / 10, rtol=1e-3)


def test_sinkhorn_extra_rows_count_once():
    """Queue rows in the sums == the same rows appended to the batch."""
    s = heads.l2_normalize(rand(0, N + 6, D)) @ heads.l2_normalize(rand(1, D, 10), axis=0)
    valid = jnp.array([True] * 4 + [False] * 2)
    ref = sinkhorn(s[: N + 4], 3, 0.05)[:N]
    q = sinkhorn(s[:N], 3, 0.05, extra_scores=s[N:], extra_valid=valid)
    np.testing.assert_allclose(q, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Sharded (8 devices) == single device, loss, metrics, state and gradients
# ---------------------------------------------------------------------------


def fake_inputs(name, cfg):
    """Random head outputs of both views (and target) plus a method state."""
    dim = cfg.proj_dim
    mk = lambda i: {"z": rand(i, N, dim), "p": rand(i + 10, N, dim)}
    online, target = {"view1": mk(0), "view2": mk(1)}, None
    state = {}
    if name == "mocov2":
        target = {"view1": mk(2), "view2": mk(3)}
        queue = heads.l2_normalize(rand(4, 2, cfg.queue_size, dim))
        state = {"queue": queue, "queue_ptr": jnp.int32(56)}  # N = 16 keys wrap past 64
    if name == "byol":
        target = {"view1": mk(2), "view2": mk(3)}
    if name == "swav":
        protos = heads.l2_normalize(rand(5, dim, cfg.num_prototypes), axis=0)
        for v in online.values():
            v["scores"] = heads.l2_normalize(v["z"]) @ protos
            if cfg.queue_size:
                v["prototypes"] = protos
        if cfg.queue_size:
            state = {
                "queue": heads.l2_normalize(rand(6, cfg.queue_size, dim)),
                "queue_ptr": jnp.int32(40),
                "queue_count": jnp.int32(40),  # 40 of 64 filled
            }
    return online, target, state


def batch_specs(tree):
    """P(AXIS) for per-sample arrays, P() for the shared prototype matrix."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: P() if "prototypes" in jax.tree_util.keystr(path) else P(AXIS), tree
    )


def loss_fns(name, cfg, target, state):
    method = ssl.get(name)

    def single(online):
        loss, metrics, updates = method.loss(online, target, state, cfg=cfg, axis_name=None)
        return loss, (metrics, updates)

    def sharded(online):
        def per_device(o, t, s):
            loss, metrics, updates = method.loss(o, t, s, cfg=cfg, axis_name=AXIS)
            return loss, (metrics, updates)

        in_specs = (batch_specs(online), batch_specs(target), P())
        f = jax.shard_map(per_device, mesh=make_mesh(), in_specs=in_specs, out_specs=P())
        return f(online, target, state)

    return single, sharded


SHARDED_CASES = [(n, {}) for n in ssl.NAMES] + [("swav", {"queue_size": 64})]


@pytest.mark.parametrize("name,overrides", SHARDED_CASES, ids=lambda c: str(c) if c else "")
def test_sharded_equals_single_device(name, overrides):
    cfg = tiny_cfg(name, **overrides)
    online, target, state = fake_inputs(name, cfg)
    single, sharded = loss_fns(name, cfg, target, state)
    (l1, aux1), g1 = jit(jax.value_and_grad(single, has_aux=True))(online)
    (l8, aux8), g8 = jit(jax.value_and_grad(sharded, has_aux=True))(online)
    assert np.isfinite(l1) and all(np.isfinite(v) for v in aux1[0].values())
    np.testing.assert_allclose(l8, l1, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), aux8, aux1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), g8, g1)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g1))


def test_simclr_without_all_gather_differs():
    """Negative check: per-device NT-Xent (axis_name=None inside shard_map) sees
    only local negatives, so it must not match the global-batch loss."""
    z1, z2 = rand(0, N, D), rand(1, N, D)
    local = jit(
        jax.shard_map(
            lambda a, b: simclr.nt_xent(a, b, 0.1, axis_name=None)[None],
            mesh=make_mesh(),
            in_specs=P(AXIS),
            out_specs=P(AXIS),
        )
    )(z1, z2)
    global_ = jit(simclr.nt_xent)(z1, z2, 0.1)
    assert abs(float(jnp.mean(local)) - float(global_)) > 1e-2


def test_queue_updates_are_global():
    cfg = tiny_cfg("mocov2")
    online, target, state = fake_inputs("mocov2", cfg)
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
    online, target, state = fake_inputs("mocov2", cfg)
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


def test_ema_schedule_and_update():
    m = heads.ema_momentum
    np.testing.assert_allclose(
        [m(0, 100, 0.99), m(50, 100, 0.99), m(100, 100, 0.99)], [0.99, 0.995, 1.0], atol=1e-7
    )
    assert float(m(200, 100, 0.99)) == 1.0
    online = {
        "params": {
            "backbone": {"w": jnp.ones(3)},
            "head": {"w": jnp.full(2, 2.0)},
            "probe": {"w": jnp.ones(4)},
        },
        "batch_stats": {"backbone": {"mean": jnp.ones(3)}},
    }
    state = byol.init_state(online, byol.default_config())
    assert "probe" not in state["target"]["params"]  # the probe has no target copy
    state["target"] = jax.tree.map(jnp.zeros_like, state["target"])
    cfg = byol.default_config()
    new = byol.update_state(state, online, 0, 100, cfg)["target"]
    np.testing.assert_allclose(new["params"]["head"]["w"], 0.02, rtol=1e-5)  # (1 - 0.99) * 2
    np.testing.assert_allclose(new["batch_stats"]["backbone"]["mean"], 0.01, rtol=1e-5)
    assert (
        mocov2.update_state(state, online, 100, 100, cfg)["target"]["params"]["head"]["w"].sum()
        == 0
    )  # momentum 1 at the end: target frozen


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


def test_swav_prototypes_are_normalised():
    cfg = tiny_cfg("swav", queue_size=64)
    head = swav.make_head(cfg)

    @jit
    def init_apply(x):
        variables = head.init(jax.random.PRNGKey(0), x, train=False)
        variables["params"]["prototypes"] = 5.0 * variables["params"]["prototypes"]
        return variables, head.apply(variables, x, train=False)

    variables, out = init_apply(rand(0, 4, 12))
    np.testing.assert_allclose(jnp.linalg.norm(out["prototypes"], axis=0), 1.0, rtol=1e-5)
    assert float(jnp.abs(out["scores"]).max()) <= 1.0 + 1e-5
    state = swav.init_state(variables, cfg)
    assert state["queue"].shape == (64, 16) and int(state["queue_count"]) == 0


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
        if name == "mocov2":  # fixed batch: enqueued keys would be its own positives
            upd = {}
        mstate = method.update_state({**mstate, **upd}, variables, i, steps, cfg)
        return variables, opt_state, mstate, loss, metrics

    losses = []
    for i in range(steps):
        variables, opt_state, mstate, loss, metrics = step(variables, opt_state, mstate, i)
        assert np.isfinite(loss) and all(np.isfinite(v) for v in metrics.values()), metrics
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("name", ssl.NAMES)
def test_method_trains_on_tiny_problem(name):
    losses = train_losses(name, steps=10)
    assert losses[-1] < losses[0], losses
