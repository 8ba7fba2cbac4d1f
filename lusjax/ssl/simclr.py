"""SimCLR: contrastive learning with the NT-Xent loss over the global batch.

Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", 2020. https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lusjax.sharding import all_gather, device_index, pmean
from lusjax.ssl import Method
from lusjax.ssl.heads import embedding_std, global_batch_size, l2_normalize, projector_head


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "proj_hidden_dim": 2048,  # projector hidden width
            "proj_dim": 128,  # projector output width (the loss's embedding)
            "proj_layers": 2,  # Linear layers in the projector
            "temperature": 0.1,  # NT-Xent temperature (solo-learn's 0.1; paper 0.1-0.5)
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="lars", lr=0.3, weight_decay=1e-6, momentum=0.9)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float, axis_name=None) -> jax.Array:
    """NT-Xent over the global batch of N pairs; z1, z2 are this device's [n, d].

    Each local anchor (both views) is scored against all 2N embeddings of the
    global batch except itself: one positive (the other view of its sample)
    and 2N - 2 negatives. Returns the mean over the 2N anchors.
    """
    z1, z2 = l2_normalize(z1), l2_normalize(z2)
    n, n_global = z1.shape[0], global_batch_size(z1, axis_name)
    candidates = jnp.concatenate([all_gather(z1, axis_name), all_gather(z2, axis_name)])
    anchors = jnp.concatenate([z1, z2])
    logits = anchors @ candidates.T / temperature  # [2n, 2N]
    # Global indices of the local samples: candidates are [view1 (N); view2 (N)].
    rows = device_index(axis_name) * n + jnp.arange(n)
    self_idx = jnp.concatenate([rows, rows + n_global])
    pos_idx = jnp.concatenate([rows + n_global, rows])
    is_self = jnp.arange(2 * n_global)[None, :] == self_idx[:, None]
    logits = jnp.where(is_self, -1e9, logits)
    pos = jnp.take_along_axis(logits, pos_idx[:, None], axis=1)[:, 0]
    loss = jax.nn.logsumexp(logits, axis=1) - pos
    return pmean(jnp.mean(loss), axis_name)


def loss(online, target, method_state, *, cfg, axis_name):
    del target, method_state
    z1, z2 = online["view1"]["z"], online["view2"]["z"]
    value = nt_xent(z1, z2, cfg.temperature, axis_name)
    metrics = {"nt_xent": value, "z_std": embedding_std((z1, z2), axis_name)}
    return value, metrics, {}


METHOD = Method(
    name="simclr",
    make_head=projector_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    paper="https://arxiv.org/abs/2002.05709",
)
