"""SwAV: Sinkhorn-Knopp against the paper's reference; the queue; the prototypes."""

import jax
import jax.numpy as jnp
import numpy as np
from ssl_testing import D, N, assert_sharded_equals_single, jit, rand, tiny_cfg

from lusjax.ssl import heads, swav


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


def test_sharded_equals_single_device_with_a_queue():
    """With the queue on, 40 of its 64 rows filled: they enter Sinkhorn's sums once."""
    cfg = tiny_cfg("swav", queue_size=64)
    dim = cfg.proj_dim
    protos = heads.l2_normalize(rand(5, dim, cfg.num_prototypes), axis=0)
    online = {}
    for i, view in enumerate(("view1", "view2")):
        z = rand(i, N, dim)
        online[view] = {"z": z, "scores": heads.l2_normalize(z) @ protos, "prototypes": protos}
    state = {
        "queue": heads.l2_normalize(rand(6, cfg.queue_size, dim)),
        "queue_ptr": jnp.int32(40),
        "queue_count": jnp.int32(40),
    }
    assert_sharded_equals_single("swav", cfg, online, None, state)


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
