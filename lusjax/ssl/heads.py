"""Pieces shared by the SSL methods: MLP heads and the few helpers several use.

- `MLPHead`: projector/predictor MLP; `Head`: projector [+ predictor]
  [+ prototypes], returning the dict a method's loss reads.
- Global-batch statistics over the data axis (`global_mean`, `embedding_std`,
  `gather_invariant`), for losses that run on the per-device shard.
- Queues (`enqueue`) for MoCo v2 and SwAV; EMA targets (`ema_momentum`,
  `ema_update`, `copy_target`) for MoCo v2 and BYOL.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lusjax.sharding import device_index, num_devices, pmean, psum

# ----------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------


class MLPHead(nn.Module):
    """Linear-BN-ReLU x (num_layers - 1), then Linear, optionally a final BN.

    Attributes:
      hidden_dim: width of the hidden layers.
      out_dim: output width.
      num_layers: number of Linear layers (>= 1).
      use_bn: BN after the hidden Linear layers (MoCo v2's head has none).
      last_bn: a BN without scale/shift after the last Linear (SimSiam's
        projector).
      bn_axis_name: mesh axis over which BN statistics are averaged (synced BN
        inside shard_map); None for per-device statistics.
      dtype: compute dtype; parameters are float32 and the output is float32.
    """

    hidden_dim: int
    out_dim: int
    num_layers: int = 2
    use_bn: bool = True
    last_bn: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # PyTorch's BN defaults (momentum 0.1 there is 0.9 here), as the papers use.
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
        )
        for _ in range(self.num_layers - 1):
            # A bias right before BN is cancelled by it, so drop it.
            x = nn.Dense(self.hidden_dim, use_bias=not self.use_bn, dtype=self.dtype)(x)
            if self.use_bn:
                x = norm()(x)
            x = nn.relu(x)
        x = nn.Dense(self.out_dim, use_bias=not self.last_bn, dtype=self.dtype)(x)
        if self.last_bn:
            x = norm(use_scale=False, use_bias=False)(x)
        return x.astype(jnp.float32)


class Head(nn.Module):
    """Projector, optional predictor on its output, optional prototypes.

    `__call__(feats, train)` returns {"z": projection} plus "p" (prediction)
    with a predictor and "scores" (cosine similarity of the L2-normalised z to
    each prototype, [B, num_prototypes]) with prototypes. The prototype
    weights are L2-normalised in the forward pass, so no projection step is
    needed after the optimizer update. With `output_prototypes`, also
    "prototypes": the normalised [dim, num_prototypes] matrix (SwAV's queue
    needs it to score queued embeddings).
    """

    projector: MLPHead
    predictor: MLPHead | None = None
    num_prototypes: int = 0
    output_prototypes: bool = False

    @nn.compact
    def __call__(self, feats: jax.Array, train: bool) -> dict[str, jax.Array]:
        z = self.projector(feats, train)
        out = {"z": z}
        if self.predictor is not None:
            out["p"] = self.predictor(z, train)
        if self.num_prototypes:
            w = self.param(
                "prototypes", nn.initializers.lecun_normal(), (z.shape[-1], self.num_prototypes)
            )
            w = l2_normalize(w, axis=0)
            out["scores"] = l2_normalize(z) @ w
            if self.output_prototypes:
                out["prototypes"] = w
        return out


def projector(cfg, *, dtype=jnp.float32, bn_axis_name=None, **kwargs) -> MLPHead:
    """The projector MLP of a method's `ssl` config (proj_hidden_dim, proj_dim,
    proj_layers); `kwargs` go to MLPHead (use_bn, last_bn)."""
    return MLPHead(
        cfg.proj_hidden_dim,
        cfg.proj_dim,
        cfg.proj_layers,
        bn_axis_name=bn_axis_name,
        dtype=dtype,
        **kwargs,
    )


def predictor(cfg, *, dtype=jnp.float32, bn_axis_name=None) -> MLPHead:
    """BYOL's / SimSiam's 2-layer predictor: pred_hidden_dim -> proj_dim."""
    return MLPHead(cfg.pred_hidden_dim, cfg.proj_dim, 2, bn_axis_name=bn_axis_name, dtype=dtype)


def projector_head(cfg, *, dtype=jnp.float32, bn_axis_name=None) -> Head:
    """`Method.make_head` of the methods whose head is the projector alone."""
    return Head(projector=projector(cfg, dtype=dtype, bn_axis_name=bn_axis_name))


# ----------------------------------------------------------------------------
# Global-batch statistics (per-device shard in, global quantity out)
# ----------------------------------------------------------------------------


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps), as torch's F.normalize; safe gradient at zero."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def global_batch_size(x: jax.Array, axis_name: str | None) -> int:
    """Rows of the global batch of which `x` is this device's (equal) shard."""
    return x.shape[0] * num_devices(axis_name)


def global_mean(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Mean over the rows of the global batch (shards have equal size)."""
    return pmean(jnp.mean(x, axis=0), axis_name)


def embedding_std(zs, axis_name: str | None) -> jax.Array:
    """Collapse signal as solo-learn logs it: std over the global batch of the
    L2-normalised embeddings, averaged over dimensions and views. About
    1/sqrt(dim) for well-spread embeddings, 0 when they collapse to a point."""
    stds = []
    for z in zs:
        z = l2_normalize(jax.lax.stop_gradient(z))
        mu = global_mean(z, axis_name)
        n = global_batch_size(z, axis_name)
        var = psum(jnp.sum(jnp.square(z - mu), axis=0), axis_name) / max(n - 1, 1)
        stds.append(jnp.mean(jnp.sqrt(var)))
    return jnp.mean(jnp.stack(stds))


def gather_invariant(x: jax.Array, axis_name: str | None) -> jax.Array:
    """All-gather along axis 0 whose result is typed as replicated.

    `lax.all_gather` yields a device-varying value, which shard_map refuses
    for an `out_specs=P()` output; a psum of zero-padded shards gives the same
    numbers, typed replicated. For state that leaves the step (queues), not
    for gradients.
    """
    if axis_name is None:
        return x
    n = x.shape[0]
    full = jnp.zeros((n * num_devices(axis_name),) + x.shape[1:], x.dtype)
    full = jax.lax.dynamic_update_slice_in_dim(full, x, device_index(axis_name) * n, axis=0)
    return psum(full, axis_name)


# ----------------------------------------------------------------------------
# Queues
# ----------------------------------------------------------------------------


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes `keys` [n, d] into the ring buffer `queue` [K, d] from `ptr`.

    Returns (queue, ptr) with ptr advanced by n modulo K; if n > K only the
    last K keys are kept (as if written one after the other).
    """
    k, n = queue.shape[0], keys.shape[0]
    ptr = jnp.asarray(ptr, jnp.int32)
    if n > k:
        keys, ptr, n = keys[n - k :], (ptr + n - k) % k, k
    idx = (ptr + jnp.arange(n, dtype=jnp.int32)) % k
    return queue.at[idx].set(keys.astype(queue.dtype)), (ptr + n) % k


# ----------------------------------------------------------------------------
# EMA target network
# ----------------------------------------------------------------------------

TARGET_MODULES = ("backbone", "head")


def copy_target(variables: Mapping) -> dict:
    """A copy of the online variables that the target network uses.

    `variables` is {"params": {"backbone", "head", ...}, "batch_stats":
    {"backbone", "head"}} (either batch_stats entry may be absent); the copy
    keeps only the backbone and head of each collection, in the same
    structure, so the target forward is the online one with these variables.
    """
    return {
        col: {m: jax.tree.map(jnp.copy, tree[m]) for m in TARGET_MODULES if m in tree}
        for col, tree in variables.items()
        if col in ("params", "batch_stats")
    }


def ema_momentum(step, total_steps: int, base: float, final: float = 1.0) -> jax.Array:
    """Cosine schedule from `base` at step 0 to `final` at `total_steps` (BYOL)."""
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(total_steps), 1), 0.0, 1.0)
    return final - (final - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0


def _like(tree, ref):
    """The subtree of `tree` with the dict keys of `ref` (drops e.g. a probe)."""
    if isinstance(ref, Mapping):
        return {k: _like(tree[k], v) for k, v in ref.items()}
    return tree


def ema_update(target, online, momentum) -> Any:
    """target <- momentum * target + (1 - momentum) * online, leaf by leaf."""
    return jax.tree.map(
        lambda t, o: (momentum * t + (1.0 - momentum) * o).astype(t.dtype),
        target,
        _like(online, target),
    )


def ema_target_update(method_state, variables, step, total_steps, cfg) -> dict:
    """`Method.update_state` of the methods with an EMA target network (BYOL, MoCo v2):
    method_state["target"] follows the online variables with `ema_momentum` between
    cfg.base_momentum and cfg.final_momentum."""
    tau = ema_momentum(step, total_steps, cfg.base_momentum, cfg.final_momentum)
    return {**method_state, "target": ema_update(method_state["target"], variables, tau)}
