"""Optimisers and schedules from optax, built from `config.optim`.

    optim.name          lars | lamb | adamw | sgd
    optim.lr            base learning rate, for a batch of `optim.lr_base_batch`
    optim.lr_scaling    linear | sqrt | none: how lr grows with the global batch
    optim.warmup_steps  linear warmup, then cosine decay to `optim.end_lr_factor`
    optim.weight_decay  decoupled; never on biases or BatchNorm (ndim < 2)
    optim.momentum      SGD / LARS momentum; b1 for AdamW / LAMB
    optim.grad_accum    micro-batches per update (optax.MultiSteps)
    optim.probe_lr      Adam lr of the online linear probe (no decay)

Durations are counted in data batches (`total_steps`, `warmup_steps`); the config
has no epochs (`--config.epochs` suggests `total_steps`).
"""

from __future__ import annotations

import math

import jax
import optax

from lusjax.errors import UserError


def scaled_lr(cfg, global_batch: int) -> float:
    """The peak learning rate after batch-size scaling."""
    for key in ("lr", "probe_lr"):  # nan/inf would only show as a NaN loss, steps later
        if not (math.isfinite(cfg[key]) and cfg[key] >= 0):
            raise UserError(f"optim.{key} must be a finite number >= 0, not {cfg[key]}")
    ratio = global_batch / cfg.lr_base_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}.get(cfg.lr_scaling)
    if factor is None:
        raise UserError(f"optim.lr_scaling must be linear, sqrt or none, not {cfg.lr_scaling!r}")
    return cfg.lr * factor


def schedule(cfg, total_steps: int, global_batch: int) -> optax.Schedule:
    """Warmup + cosine schedule over optimizer updates."""
    updates = max(1, total_steps // cfg.grad_accum)
    warmup = min(cfg.warmup_steps // cfg.grad_accum, updates - 1)
    peak = scaled_lr(cfg, global_batch)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=max(warmup, 0),
        decay_steps=updates,
        end_value=peak * cfg.end_lr_factor,
    )


def decay_mask(params):
    """True for weights that get weight decay / LARS adaptation: kernels, not bias/BN."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _main_optimizer(cfg, lr) -> optax.GradientTransformation:
    name = cfg.name
    if name == "lars":
        return optax.lars(
            lr,
            weight_decay=cfg.weight_decay,
            weight_decay_mask=decay_mask,
            trust_ratio_mask=decay_mask,
            momentum=cfg.momentum,
        )
    if name == "lamb":
        return optax.lamb(lr, b1=cfg.momentum, weight_decay=cfg.weight_decay, mask=decay_mask)
    if name == "adamw":
        return optax.adamw(lr, b1=cfg.momentum, weight_decay=cfg.weight_decay, mask=decay_mask)
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(cfg.weight_decay, decay_mask),
            optax.sgd(lr, momentum=cfg.momentum),
        )
    raise UserError(f"unknown optimizer {name!r}; choose lars, lamb, adamw or sgd")


def make(cfg, total_steps: int, global_batch: int):
    """Returns (optax transformation over {"backbone","head","probe"} params, lr schedule).

    The online probe trains with its own Adam (it must not steer the encoder, and
    it sees stop-gradient features anyway).
    """
    lr = schedule(cfg, total_steps, global_batch)
    tx = optax.multi_transform(
        {"ssl": _main_optimizer(cfg, lr), "probe": optax.adam(cfg.probe_lr)},
        lambda params: {k: ("probe" if k == "probe" else "ssl") for k in params},
    )
    if cfg.grad_accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum)
    return tx, lr
