"""BYOL: the normalised MSE in closed forms; the EMA target."""

import jax
import jax.numpy as jnp
import numpy as np
from ssl_testing import TOL, D, N, rand, unit

from lusjax.ssl import byol


def test_normalized_mse_closed_forms():
    z = rand(0, N, D)
    np.testing.assert_allclose(byol.normalized_mse(3.0 * z, z), 0.0, atol=1e-5)  # same direction
    np.testing.assert_allclose(byol.normalized_mse(-z, z), 4.0, atol=1e-5)  # |p/|p| - z/|z||^2
    e0, e1 = jnp.eye(D)[:1].repeat(N, 0), jnp.eye(D)[1:2].repeat(N, 0)
    np.testing.assert_allclose(byol.normalized_mse(e0, e1), 2.0, atol=1e-6)  # orthogonal
    # General: mean |p/|p| - z/|z||^2.
    p = rand(1, N, D)
    ref = np.mean(np.sum((unit(np.asarray(p)) - unit(np.asarray(z))) ** 2, -1))
    np.testing.assert_allclose(byol.normalized_mse(p, z), ref, **TOL)


def test_ema_target_update():
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
    new = byol.METHOD.update_state(state, online, 0, 100, cfg)["target"]
    np.testing.assert_allclose(new["params"]["head"]["w"], 0.02, rtol=1e-5)  # (1 - 0.99) * 2
    np.testing.assert_allclose(new["batch_stats"]["backbone"]["mean"], 0.01, rtol=1e-5)
