"""Barlow Twins: push the cross-correlation of the two views' embeddings to identity.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", 2021. https://arxiv.org/abs/2103.03230

The embeddings are batch-normalised with the mean/variance of the global
batch and the correlation is summed over it, so the loss does not depend on
how the batch is split over devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lusjax.sharding import pmean, psum
from lusjax.ssl import Method
from lusjax.ssl.heads import embedding_std, global_batch_size, global_mean, projector_head


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "proj_hidden_dim": 2048,
            "proj_dim": 2048,  # paper: 8192; the correlation matrix is proj_dim^2
            "proj_layers": 3,
            "lamb": 0.0051,  # weight of the off-diagonal (redundancy) term
            "scale_loss": 1.0,  # overall factor (solo-learn uses 0.1 on CIFAR)
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="lars", lr=0.2, weight_decay=1.5e-6, momentum=0.9)


def _batch_norm(z: jax.Array, axis_name, eps: float = 1e-5) -> jax.Array:
    """Standardises each dim with the global batch mean and (biased) variance."""
    mu = global_mean(z, axis_name)
    var = pmean(jnp.mean(jnp.square(z - mu), axis=0), axis_name)
    return (z - mu) * jax.lax.rsqrt(var + eps)


def barlow_loss(z1: jax.Array, z2: jax.Array, lamb: float, axis_name=None):
    """Returns (loss, on_diag, off_diag) with loss = on_diag + lamb * off_diag,
    on_diag = sum_i (1 - C_ii)^2, off_diag = sum_{i != j} C_ij^2, and C the
    cross-correlation of the batch-normalised embeddings over the global batch."""
    z1 = _batch_norm(z1.astype(jnp.float32), axis_name)
    z2 = _batch_norm(z2.astype(jnp.float32), axis_name)
    c = psum(z1.T @ z2, axis_name) / global_batch_size(z1, axis_name)
    diag = jnp.diagonal(c)
    on_diag = jnp.sum(jnp.square(1.0 - diag))
    off_diag = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
    return on_diag + lamb * off_diag, on_diag, off_diag


def loss(online, target, method_state, *, cfg, axis_name):
    del target, method_state
    z1, z2 = online["view1"]["z"], online["view2"]["z"]
    value, on_diag, off_diag = barlow_loss(z1, z2, cfg.lamb, axis_name)
    value = cfg.scale_loss * value
    metrics = {
        "barlow": value,
        "on_diag": on_diag,
        "off_diag": off_diag,
        "z_std": embedding_std((z1, z2), axis_name),
    }
    return value, metrics, {}


METHOD = Method(
    name="barlow",
    make_head=projector_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    paper="https://arxiv.org/abs/2103.03230",
)
