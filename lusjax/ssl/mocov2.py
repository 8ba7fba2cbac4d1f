"""MoCo v2: InfoNCE of online queries against momentum-encoder keys and a queue.

He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", 2019, https://arxiv.org/abs/1911.05722; Chen et al., "Improved
Baselines with Momentum Contrastive Learning" (v2: MLP head, blur, cosine lr),
2020, https://arxiv.org/abs/2003.04297. As in solo-learn's mocov2plus, the
loss is symmetrised over the two views and the momentum follows a cosine
schedule from `base_momentum` to `final_momentum`.

method_state: {"target": EMA variables of backbone + projector,
"queue": [2, queue_size, proj_dim] float32 L2-normalised keys, "queue_ptr": int32}.
One queue per view, as solo-learn's mocov2plus: queries of view 1 meet their
positive key from view 2 and negatives from the view-2 queue (and vice versa),
so both directions draw negatives from the same augmentation stream as their
positive and each queue holds `queue_size` past batches' worth of keys. The
queues are global: each step enqueues the keys of the whole global batch, so
every device holds the same queues.
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
    enqueue,
    gather_invariant,
    l2_normalize,
    projector,
)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "proj_hidden_dim": 2048,
            "proj_dim": 128,
            "proj_layers": 2,  # MoCo v2's head: Linear-ReLU-Linear, no BN
            "temperature": 0.2,
            "queue_size": 65536,  # negatives kept per view; >= global batch
            "base_momentum": 0.99,  # EMA momentum at step 0 (cosine to final_momentum)
            "final_momentum": 1.0,
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="sgd", lr=0.03, weight_decay=1e-4, momentum=0.9)


def make_head(cfg, *, dtype=jnp.float32, bn_axis_name=None) -> Head:
    return Head(projector=projector(cfg, use_bn=False, dtype=dtype, bn_axis_name=bn_axis_name))


def infonce(q: jax.Array, k: jax.Array, queue: jax.Array, temperature: float, axis_name=None):
    """InfoNCE of queries q [n, d] with positive keys k [n, d] and negatives `queue`
    [K, d] (already L2-normalised); mean over the global batch. No gradient
    flows into k or the queue."""
    q = l2_normalize(q)
    k = jax.lax.stop_gradient(l2_normalize(k))
    queue = jax.lax.stop_gradient(queue)
    pos = jnp.sum(q * k, axis=-1, keepdims=True)
    logits = jnp.concatenate([pos, q @ queue.T], axis=1) / temperature
    loss = jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
    return pmean(jnp.mean(loss), axis_name)


def init_state(variables, cfg) -> dict:
    # A fixed key keeps init_state a function of (variables, cfg) only, as the
    # contract wants; random unit vectors as initial negatives, as MoCo does.
    queue = jax.random.normal(jax.random.PRNGKey(0), (2, cfg.queue_size, cfg.proj_dim))
    return {
        "target": copy_target(variables),
        "queue": l2_normalize(queue),
        "queue_ptr": jnp.zeros((), jnp.int32),
    }


def loss(online, target, method_state, *, cfg, axis_name):
    q1, q2 = online["view1"]["z"], online["view2"]["z"]
    k1 = jax.lax.stop_gradient(l2_normalize(target["view1"]["z"]))
    k2 = jax.lax.stop_gradient(l2_normalize(target["view2"]["z"]))
    queue, ptr = method_state["queue"], method_state["queue_ptr"]
    value = (
        infonce(q1, k2, queue[1], cfg.temperature, axis_name)
        + infonce(q2, k1, queue[0], cfg.temperature, axis_name)
    ) / 2
    queue1, new_ptr = enqueue(queue[0], ptr, gather_invariant(k1, axis_name))
    queue2, _ = enqueue(queue[1], ptr, gather_invariant(k2, axis_name))
    new_queue = jnp.stack([queue1, queue2])
    metrics = {"infonce": value, "z_std": embedding_std((q1, q2), axis_name)}
    return value, metrics, {"queue": new_queue, "queue_ptr": new_ptr}


METHOD = Method(
    name="mocov2",
    make_head=make_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    init_state=init_state,
    update_state=ema_target_update,
    needs_target=True,
    paper="https://arxiv.org/abs/2003.04297",
)
