"""Full fine-tuning: the backbone plus one linear head per task, trained jointly.

One shared backbone, several heads (multi-task): the loss is the sum over tasks
of class-balanced cross-entropy on the frames whose clip has a known target
for that task. SGD (Nesterov momentum, coupled weight decay) or AdamW, warmup
+ cosine learning rate, random horizontal flips. With more than one (lr, wd)
pair in the grid, each is trained on an inner, clip/patient-grouped split of
the training clips and scored by validation cross-entropy; the best pair is
then retrained on all training clips. Started from a random-init `Encoder`
this is the supervised baseline, with exactly the same budget. Registered as
the evaluator "finetune" (settings: config.finetune).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lusjax.data import preprocess
from lusjax.eval import evaluators, linear, splits
from lusjax.eval.features import Frames


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Budget and grid (`config_of` builds it from `config.finetune`)."""

    steps: int = 200
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lrs: tuple[float, ...] = (1e-3,)
    wds: tuple[float, ...] = (1e-4,)
    warmup_frac: float = 0.1
    val_fraction: float = 0.2  # inner validation split when the grid has > 1 point
    eval_batch_size: int = 256


class MultiHeadNet(nn.Module):
    """backbone -> {task: logits}; heads = ((task, num_classes), ...)."""

    backbone: nn.Module
    heads: tuple[tuple[str, int], ...]

    @nn.compact
    def __call__(self, x, train: bool = False):
        feats = self.backbone(x, train=train)
        return {t: nn.Dense(k, name=f"head_{t}")(feats) for t, k in self.heads}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init(net, size, channels, key):
    return net.init(key, jnp.zeros((1, size, size, channels)), train=False)


def init_variables(net: MultiHeadNet, encoder, seed: int) -> dict:
    """Heads at random (seeded), backbone from the encoder's variables."""
    variables = _init(net, encoder.image_size, encoder.num_channels, jax.random.PRNGKey(seed))
    copy = functools.partial(jax.tree.map, jnp.array)  # training donates its buffers
    params = dict(variables["params"])
    params["backbone"] = copy(encoder.variables["params"])
    out = {"params": params}
    if "batch_stats" in encoder.variables:
        out["batch_stats"] = {"backbone": copy(encoder.variables["batch_stats"])}
    return out


def _sgd(learning_rate, weight_decay):
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=0.9, nesterov=True),
    )


@functools.cache
def make_optimizer(name: str) -> optax.GradientTransformation:
    """The optimizer with learning rate and weight decay as state, set every step.

    Keeping them out of the transformation's closure lets one compiled step serve
    every (lr, wd) of the grid, every fold and every seed.
    """
    factories = {"sgd": _sgd, "adamw": optax.adamw}
    if name not in factories:
        raise ValueError(f"unknown optimizer {name!r}; use {' or '.join(factories)}")
    return optax.inject_hyperparams(factories[name])(learning_rate=0.0, weight_decay=0.0)


def lr_at(step, peak, steps: int, warmup: int):
    """Linear warmup to `peak` over `warmup` steps, then cosine decay to 0 at `steps`."""
    warm = peak * (step + 1) / max(warmup, 1)
    frac = jnp.clip((step - warmup) / max(steps - warmup, 1), 0.0, 1.0)
    return jnp.where(step < warmup, warm, 0.5 * peak * (1 + jnp.cos(jnp.pi * frac)))


def _loss(outputs, targets, class_weights):
    total = 0.0
    for t, logits in outputs.items():
        y = targets[t]
        known = y >= 0
        yc = jnp.where(known, y, 0)
        w = class_weights[t][yc] * known
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), yc)
        total = total + jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-9)
    return total


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5), donate_argnums=(6,))
def _train_step(
    net, tx, size, channels, steps, warmup, state, images, targets, class_weights, lr, wd, key
):
    x = preprocess.eval_input(images, size, channels)
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1], x)

    def loss_fn(params):
        variables = {"params": params}
        if state["batch_stats"]:
            variables["batch_stats"] = state["batch_stats"]
        outputs, new = net.apply(variables, x, train=True, mutable=["batch_stats"])
        return _loss(outputs, targets, class_weights), new.get("batch_stats", {})

    opt_state = state["opt_state"]
    opt_state.hyperparams["learning_rate"] = lr_at(state["step"], lr, steps, warmup)
    opt_state.hyperparams["weight_decay"] = wd
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, opt_state, state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": opt_state,
        "step": state["step"] + 1,
    }, loss


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _predict(net, size, channels, variables, images):
    outputs = net.apply(variables, preprocess.eval_input(images, size, channels), train=False)
    return {t: jax.nn.softmax(v.astype(jnp.float32), -1) for t, v in outputs.items()}


def train(
    encoder,
    frames: Frames,
    train_idx: np.ndarray,
    tasks: dict[str, int],
    cfg: FinetuneConfig,
    lr: float,
    wd: float,
    seed: int,
) -> tuple[MultiHeadNet, dict]:
    """Fine-tunes `encoder` + heads on the frames `train_idx`; returns (net, variables)."""
    net = MultiHeadNet(encoder.model, tuple(tasks.items()))
    variables = init_variables(net, encoder, seed)
    tx = make_optimizer(cfg.optimizer)
    targets = {t: frames.frame_targets(t)[train_idx] for t in tasks}
    weights = {}  # per class, sklearn's "balanced" over the known targets of each task
    for t, k in tasks.items():
        y = targets[t][targets[t] >= 0]
        w = np.zeros(k, np.float32)
        w[y] = linear.balanced_weights(y, k) if len(y) else 0.0
        weights[t] = jnp.asarray(w)
    state = {
        "params": variables["params"],
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": tx.init(variables["params"]),
        "step": jnp.int32(0),
    }
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    size, ch = encoder.image_size, encoder.num_channels
    warmup = int(cfg.warmup_frac * cfg.steps)
    for _ in range(cfg.steps):  # batches drawn with replacement: one shape whatever the size
        pick = rng.integers(0, len(train_idx), cfg.batch_size)
        key, sub = jax.random.split(key)
        state, loss = _train_step(
            net,
            tx,
            size,
            ch,
            cfg.steps,
            warmup,
            state,
            frames.images[train_idx[pick]],
            {t: jnp.asarray(v[pick]) for t, v in targets.items()},
            weights,
            jnp.float32(lr),
            jnp.float32(wd),
            sub,
        )
    if not math.isfinite(float(loss)):
        raise FloatingPointError(f"fine-tuning diverged (loss {float(loss)}) at lr={lr}, wd={wd}")
    out = {"params": state["params"]}
    if state["batch_stats"]:
        out["batch_stats"] = state["batch_stats"]
    return net, out


def predict(
    net: MultiHeadNet, variables: dict, encoder, images: np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """{task: [N, K] probabilities} for uint8 frames (eval mode)."""
    outs = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        res = _predict(
            net,
            encoder.image_size,
            encoder.num_channels,
            variables,
            linear.pad_rows(chunk, linear.bucket(len(chunk), batch_size)),
        )
        outs.append({t: np.asarray(v)[: len(chunk)] for t, v in res.items()})
    return {t: np.concatenate([o[t] for o in outs]) for t in dict(net.heads)}


@dataclasses.dataclass
class Tuned:
    """A fine-tuned network: what `fit` returns and `score` runs."""

    net: MultiHeadNet
    variables: dict
    encoder: Any  # the starting `Encoder`: image size and channels of the input
    eval_batch_size: int
    info: dict  # {"lr", "wd", "grid": [...]}: the chosen grid point


def fit(
    encoder,
    frames: Frames,
    train_idx: np.ndarray,
    tasks: dict[str, int],
    cfg: FinetuneConfig,
    seed: int = 0,
    stratify_task: str = "label",
) -> Tuned:
    """Grid-searches (lr, wd) on an inner split, retrains the best on all of `train_idx`."""
    grid = list(itertools.product(cfg.lrs, cfg.wds))
    info: dict = {"grid": []}
    if len(grid) > 1:
        lr, wd = _choose(encoder, frames, train_idx, tasks, cfg, seed, stratify_task, grid, info)
    else:
        lr, wd = grid[0]
    net, variables = train(encoder, frames, train_idx, tasks, cfg, lr, wd, seed)
    info.update(lr=lr, wd=wd)
    return Tuned(net, variables, encoder, cfg.eval_batch_size, info)


def config_of(cfg) -> FinetuneConfig:
    """The budget and grid of `cfg.finetune` (eval and study configs)."""
    ft = cfg.finetune
    return FinetuneConfig(
        steps=ft.steps,
        batch_size=ft.batch_size,
        optimizer=ft.optimizer,
        lrs=tuple(float(v) for v in ft.lrs),
        wds=tuple(float(v) for v in ft.wds),
        warmup_frac=ft.warmup_frac,
        val_fraction=ft.val_fraction,
        eval_batch_size=cfg.batch_size,
    )


def _fit(train_set: evaluators.Inputs, cfg, seed: int) -> Tuned:
    tasks = train_set.tasks
    return fit(
        train_set.encoder,
        train_set.data,
        train_set.frames,
        tasks,
        config_of(cfg),
        seed,
        stratify_task=next(iter(tasks)),
    )


def _score(tuned: Tuned, test: evaluators.Inputs) -> dict[str, np.ndarray]:
    images = test.data.images[test.frames]
    probs = predict(tuned.net, tuned.variables, tuned.encoder, images, tuned.eval_batch_size)
    out = {}
    for task in test.tasks:
        known = test.data.frame_targets(task)[test.frames] >= 0
        out[task] = probs[task][known]
    return out


EVALUATOR = evaluators.Evaluator(
    "finetune",
    _fit,
    _score,
    reads="encoder",
    joint=True,
    info=lambda tuned: {"chosen": tuned.info},
)


def _choose(encoder, frames, train_idx, tasks, cfg, seed, stratify_task, grid, info):
    clips = np.unique(frames.frame_clip[train_idx])
    labels = frames.clips.targets(stratify_task if stratify_task in tasks else next(iter(tasks)))[0]
    groups = splits.groups_of(frames.clips.video_id, frames.clips.patient_id)
    if len(np.unique(groups[clips])) < 2:
        info["note"] = "too few training clips for an inner split: first grid point used"
        return grid[0]
    inner = splits.inner_split(clips, labels, groups, cfg.val_fraction, seed)
    fit_idx = train_idx[np.isin(frames.frame_clip[train_idx], inner.train)]
    val_idx = train_idx[np.isin(frames.frame_clip[train_idx], inner.test)]
    best, best_loss = grid[0], math.inf
    for lr, wd in grid:
        try:
            net, variables = train(encoder, frames, fit_idx, tasks, cfg, lr, wd, seed)
            probs = predict(net, variables, encoder, frames.images[val_idx], cfg.eval_batch_size)
            loss = _val_loss(probs, {t: frames.frame_targets(t)[val_idx] for t in tasks})
        except FloatingPointError:
            loss = math.inf
        info["grid"].append({"lr": lr, "wd": wd, "val_loss": loss})
        if loss < best_loss:
            best, best_loss = (lr, wd), loss
    return best


def _val_loss(probs: dict, targets: dict) -> float:
    """Mean over tasks of the class-balanced validation cross-entropy."""
    losses = []
    for t, p in probs.items():
        y = targets[t]
        known = y >= 0
        if known.any():
            w = linear.balanced_weights(y[known], p.shape[1])
            ce = -np.log(np.clip(p[known, y[known]], 1e-12, 1.0))
            losses.append(float(np.sum(w * ce) / np.sum(w)))
    return float(np.mean(losses)) if losses else math.inf
