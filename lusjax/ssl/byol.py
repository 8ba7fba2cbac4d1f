"""BYOL: an online predictor regresses an EMA target's projection of the other view.

Grill et al., "Bootstrap Your Own Latent", 2020. https://arxiv.org/abs/2006.07733

method_state: {"target": EMA variables of backbone + head}. The target head
also holds (and computes) a predictor, which is never trained and never read:
it keeps the target's variables the same structure as the online ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lusjax.sharding import pmean
from lusjax.ssl import Method
from lusjax.ssl.heads import (
    Head,
    copy_target,
    ema_target_update,
    embedding_std,
    l2_normalize,
    predictor,
    projector,
)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "proj_hidden_dim": 4096,
            "proj_dim": 256,
            "proj_layers": 2,
            "pred_hidden_dim": 4096,  # predictor: Linear-BN-ReLU-Linear back to proj_dim
            "base_momentum": 0.99,  # tau at step 0, cosine to final_momentum
            "final_momentum": 1.0,
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="lars", lr=0.2, weight_decay=1.5e-6, momentum=0.9)


def make_head(cfg, *, dtype=jnp.float32, bn_axis_name=None) -> Head:
    mlp = {"bn_axis_name": bn_axis_name, "dtype": dtype}
    return Head(projector=projector(cfg, **mlp), predictor=predictor(cfg, **mlp))


def normalized_mse(p: jax.Array, z: jax.Array, axis_name=None) -> jax.Array:
    """|| p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z), mean over the global batch; z is
    a target (no gradient)."""
    z = jax.lax.stop_gradient(z)
    cos = jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1)
    return pmean(jnp.mean(2.0 - 2.0 * cos), axis_name)


def init_state(variables, cfg) -> dict:
    return {"target": copy_target(variables)}


def loss(online, target, method_state, *, cfg, axis_name):
    del method_state
    p1, p2 = online["view1"]["p"], online["view2"]["p"]
    value = normalized_mse(p1, target["view2"]["z"], axis_name) + normalized_mse(
        p2, target["view1"]["z"], axis_name
    )
    z = (online["view1"]["z"], online["view2"]["z"])
    return value, {"byol": value, "z_std": embedding_std(z, axis_name)}, {}


METHOD = Method(
    name="byol",
    make_head=make_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    init_state=init_state,
    update_state=ema_target_update,
    needs_target=True,
    paper="https://arxiv.org/abs/2006.07733",
)
