"""SimSiam: predictor + stop-gradient, negative cosine, no negatives, no target net.

Chen & He, "Exploring Simple Siamese Representation Learning", 2020.
https://arxiv.org/abs/2011.10566
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lusjax.sharding import pmean
from lusjax.ssl import Method
from lusjax.ssl.heads import Head, embedding_std, l2_normalize, predictor, projector


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "proj_hidden_dim": 2048,
            "proj_dim": 2048,
            "proj_layers": 3,  # last Linear followed by BN without affine, as the paper
            "pred_hidden_dim": 512,  # bottleneck predictor: proj_dim -> 512 -> proj_dim
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="sgd", lr=0.05, weight_decay=1e-4, momentum=0.9)


def make_head(cfg, *, dtype=jnp.float32, bn_axis_name=None) -> Head:
    mlp = {"bn_axis_name": bn_axis_name, "dtype": dtype}
    return Head(projector=projector(cfg, last_bn=True, **mlp), predictor=predictor(cfg, **mlp))


def negative_cosine(p: jax.Array, z: jax.Array, axis_name=None) -> jax.Array:
    """-cos(p, stop_gradient(z)), mean over the global batch."""
    z = jax.lax.stop_gradient(z)
    cos = jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1)
    return -pmean(jnp.mean(cos), axis_name)


def loss(online, target, method_state, *, cfg, axis_name):
    del target, method_state
    v1, v2 = online["view1"], online["view2"]
    value = (
        negative_cosine(v1["p"], v2["z"], axis_name) + negative_cosine(v2["p"], v1["z"], axis_name)
    ) / 2
    metrics = {"neg_cosine": value, "z_std": embedding_std((v1["z"], v2["z"]), axis_name)}
    return value, metrics, {}


METHOD = Method(
    name="simsiam",
    make_head=make_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    paper="https://arxiv.org/abs/2011.10566",
)
