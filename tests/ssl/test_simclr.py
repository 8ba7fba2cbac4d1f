"""SimCLR: NT-Xent against a numpy loop; its negatives span the global batch."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from ssl_testing import TOL, D, N, jit, np_logsumexp, rand, unit

from lusjax.sharding import AXIS, make_mesh
from lusjax.ssl import simclr


def test_nt_xent_matches_numpy_loop():
    z1, z2, t = rand(0, N, D), rand(1, N, D), 0.2
    z = unit(np.concatenate([np.asarray(z1), np.asarray(z2)]).astype(np.float64))
    losses = []
    for i in range(2 * N):
        pos = (i + N) % (2 * N)
        sims = np.array([z[i] @ z[j] / t for j in range(2 * N) if j != i])
        losses.append(np_logsumexp(sims) - z[i] @ z[pos] / t)
    np.testing.assert_allclose(jit(simclr.nt_xent)(z1, z2, t), np.mean(losses), **TOL)


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
