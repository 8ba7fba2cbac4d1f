"""VICReg: invariance + variance + covariance regularisation.

Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", 2021. https://arxiv.org/abs/2105.04906

Variance and covariance use the statistics of the global batch (unbiased, as
the paper's torch code), so the loss does not depend on the device split.
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
            "proj_dim": 2048,  # paper: 8192
            "proj_layers": 3,
            "sim_weight": 25.0,  # lambda: invariance (MSE)
            "var_weight": 25.0,  # mu: variance hinge
            "cov_weight": 1.0,  # nu: covariance
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="lars", lr=0.3, weight_decay=1e-4, momentum=0.9)


def _variance_covariance(z: jax.Array, axis_name, eps: float = 1e-4):
    """(mean_i relu(1 - std_i), sum_{i != j} cov_ij^2 / d) over the global batch."""
    n, d = global_batch_size(z, axis_name), z.shape[1]
    zc = z - global_mean(z, axis_name)
    cov = psum(zc.T @ zc, axis_name) / (n - 1)
    var = jnp.diagonal(cov)
    std_loss = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(var + eps)))
    cov_loss = (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(var))) / d
    return std_loss, cov_loss


def vicreg_loss(
    z1: jax.Array,
    z2: jax.Array,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    axis_name=None,
):
    """Returns (loss, {"invariance", "variance", "covariance"}); the variance and
    covariance terms are summed over the two views, as in the paper."""
    z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
    invariance = pmean(jnp.mean(jnp.square(z1 - z2)), axis_name)
    std1, cov1 = _variance_covariance(z1, axis_name)
    std2, cov2 = _variance_covariance(z2, axis_name)
    terms = {"invariance": invariance, "variance": std1 + std2, "covariance": cov1 + cov2}
    value = (
        sim_weight * terms["invariance"]
        + var_weight * terms["variance"]
        + cov_weight * terms["covariance"]
    )
    return value, terms


def loss(online, target, method_state, *, cfg, axis_name):
    del target, method_state
    z1, z2 = online["view1"]["z"], online["view2"]["z"]
    value, terms = vicreg_loss(
        z1, z2, cfg.sim_weight, cfg.var_weight, cfg.cov_weight, axis_name=axis_name
    )
    metrics = {"vicreg": value, **terms, "z_std": embedding_std((z1, z2), axis_name)}
    return value, metrics, {}


METHOD = Method(
    name="vicreg",
    make_head=projector_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    paper="https://arxiv.org/abs/2105.04906",
)
