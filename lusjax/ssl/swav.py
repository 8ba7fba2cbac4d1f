"""SwAV: swapped prediction of Sinkhorn-Knopp prototype assignments.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", 2020. https://arxiv.org/abs/2006.09882

Two views, no multi-crop. The Sinkhorn equal-partition constraint is over the
global batch (sums via psum) plus, optionally, a queue of recent embeddings
from past global batches (`queue_size` > 0; entries count once filled).

method_state: {} without queue; else {"queue": [queue_size, proj_dim] float32
L2-normalised embeddings, "queue_ptr": int32, "queue_count": int32}. With the
queue, the head also outputs its normalised "prototypes" [proj_dim, K] so the
loss can score the queue with the current prototypes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lusjax.sharding import pmean, psum
from lusjax.ssl import Method
from lusjax.ssl.heads import (
    Head,
    embedding_std,
    enqueue,
    gather_invariant,
    global_batch_size,
    l2_normalize,
    projector,
)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "proj_hidden_dim": 2048,
            "proj_dim": 128,
            "proj_layers": 2,
            "num_prototypes": 3000,
            "temperature": 0.1,  # of the softmax over prototype scores
            "sinkhorn_iters": 3,
            "epsilon": 0.05,  # Sinkhorn entropic regularisation
            "queue_size": 0,  # 0: no queue; else recent embeddings kept (>= 2 x global batch)
            # Prototypes stay at their init for the first steps (the paper: its first
            # epoch, 313 steps of batch 4096 on ImageNet); 0 = never frozen.
            "freeze_prototypes_steps": 313,
        }
    )


def default_optim() -> dict:
    """The optimiser of the paper / solo-learn; lr per 256 images."""
    return dict(name="lars", lr=0.6, weight_decay=1e-6, momentum=0.9)


def make_head(cfg, *, dtype=jnp.float32, bn_axis_name=None) -> Head:
    return Head(
        projector=projector(cfg, dtype=dtype, bn_axis_name=bn_axis_name),
        num_prototypes=cfg.num_prototypes,
        output_prototypes=cfg.queue_size > 0,
    )


def sinkhorn(
    scores: jax.Array,
    iters: int = 3,
    epsilon: float = 0.05,
    axis_name=None,
    extra_scores: jax.Array | None = None,
    extra_valid: jax.Array | None = None,
) -> jax.Array:
    """Sinkhorn-Knopp soft assignments of samples to prototypes.

    Args:
      scores: this device's [n, K] cosine scores (in [-1, 1]).
      iters: alternating normalisations (the paper's 3).
      epsilon: entropic regularisation; Q = exp(scores / epsilon).
      axis_name: mesh axis of the batch; sums run over the global batch.
      extra_scores: optional [m, K] scores of rows shared by all devices (a
        queue), counted once in the global sums.
      extra_valid: optional [m] bool, which extra rows take part.

    Returns:
      [n, K] assignments of the local rows: each row sums to 1 and, over the
      global batch (+ extra rows), each prototype receives about B / K.
    """
    scores = jax.lax.stop_gradient(scores.astype(jnp.float32))
    k = scores.shape[1]
    # Shifting by the scores' upper bound (1) avoids overflow; it cancels out.
    q = jnp.exp((scores - 1.0) / epsilon)
    b = global_batch_size(scores, axis_name)
    if extra_scores is None:
        extra = jnp.zeros((0, k), jnp.float32)
        valid = jnp.zeros((0,), bool)
    else:
        extra = jnp.exp((jax.lax.stop_gradient(extra_scores.astype(jnp.float32)) - 1.0) / epsilon)
        valid = jnp.ones(extra.shape[0], bool) if extra_valid is None else extra_valid
        extra = jnp.where(valid[:, None], extra, 0.0)
        b = b + jnp.sum(valid)

    def total(x, e, axis=None):  # global-batch sum (psum) + the shared rows once
        return psum(jnp.sum(x, axis=axis), axis_name) + jnp.sum(e, axis=axis)

    def iteration(_, qs):
        q, extra = qs
        per_prototype = total(q, extra, axis=0)  # [K]: each prototype gets 1/K
        q, extra = q / per_prototype / k, extra / per_prototype / k
        q = q / jnp.sum(q, axis=1, keepdims=True) / b  # each sample gets 1/B
        extra_rows = jnp.where(valid[:, None], jnp.sum(extra, axis=1, keepdims=True), 1.0)
        return q, jnp.where(valid[:, None], extra / extra_rows, 0.0) / b

    mass = total(q, extra)
    q, _ = jax.lax.fori_loop(0, iters, iteration, (q / mass, extra / mass))
    return q * b


def swapped_prediction(assign: jax.Array, scores: jax.Array, temperature: float, axis_name=None):
    """Cross-entropy of assignments [n, K] (targets) with softmax(scores / T),
    mean over the global batch."""
    logp = jax.nn.log_softmax(scores / temperature, axis=1)
    return -pmean(jnp.mean(jnp.sum(jax.lax.stop_gradient(assign) * logp, axis=1)), axis_name)


def init_state(variables, cfg) -> dict:
    if not cfg.queue_size:
        return {}
    return {
        "queue": jnp.zeros((cfg.queue_size, cfg.proj_dim), jnp.float32),
        "queue_ptr": jnp.zeros((), jnp.int32),
        "queue_count": jnp.zeros((), jnp.int32),
    }


def loss(online, target, method_state, *, cfg, axis_name):
    del target
    v1, v2 = online["view1"], online["view2"]
    sk = {"iters": cfg.sinkhorn_iters, "epsilon": cfg.epsilon, "axis_name": axis_name}
    updates = {}
    if "queue" in method_state:
        queue = method_state["queue"]
        valid = jnp.arange(queue.shape[0]) < method_state["queue_count"]
        protos = jax.lax.stop_gradient(v1["prototypes"])
        sk.update(extra_scores=queue @ protos, extra_valid=valid)
        keys = jnp.concatenate(
            [gather_invariant(l2_normalize(v["z"]), axis_name) for v in (v1, v2)]
        )
        new_queue, new_ptr = enqueue(queue, method_state["queue_ptr"], keys)
        count = jnp.minimum(method_state["queue_count"] + keys.shape[0], queue.shape[0])
        updates = {"queue": jax.lax.stop_gradient(new_queue), "queue_ptr": new_ptr}
        updates["queue_count"] = count.astype(jnp.int32)
    a1 = sinkhorn(v1["scores"], **sk)
    a2 = sinkhorn(v2["scores"], **sk)
    value = (
        swapped_prediction(a1, v2["scores"], cfg.temperature, axis_name)
        + swapped_prediction(a2, v1["scores"], cfg.temperature, axis_name)
    ) / 2
    metrics = {"swav": value, "z_std": embedding_std((v1["z"], v2["z"]), axis_name)}
    return value, metrics, updates


def freeze(tree, step, cfg):
    """Zeroes the prototypes' entry of a params-shaped tree while step < the freeze."""
    if not cfg.get("freeze_prototypes_steps", 0):
        return tree
    protos = tree["head"]["prototypes"]
    protos = jnp.where(step >= cfg.freeze_prototypes_steps, protos, jnp.zeros_like(protos))
    return {**tree, "head": {**tree["head"], "prototypes": protos}}


METHOD = Method(
    name="swav",
    make_head=make_head,
    loss=loss,
    default_config=default_config,
    default_optim=default_optim,
    init_state=init_state,
    freeze=freeze,
    global_outputs=("prototypes",),
    paper="https://arxiv.org/abs/2006.09882",
)
