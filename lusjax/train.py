"""The one SSL pretraining loop, for every method and backbone.

Reads top to bottom: config -> mesh -> data -> model -> state -> restore ->
loop {step, log, eval, checkpoint} -> export. The per-device step runs under
`shard_map` over the mesh's data axis (`lusjax.sharding.AXIS`): the method
plug-in (`lusjax.ssl.get(name)`) computes global-batch quantities with that
axis name, BatchNorm syncs over it when `model.sync_bn`, and gradients are
averaged over it. Augmentation happens here, on the device, from uint8 views.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import signal
import socket
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from lusjax import (
    carbon,
    checkpoint,
    distributed,
    files,
    models,
    optim,
    preemption,
    resume,
    sharding,
    ssl,
    tb_events,
    watchdog,
    workdir_lock,
)
from lusjax import config as config_lib
from lusjax.app.default_data import ensure_data
from lusjax.data import augment, pipeline, preprocess
from lusjax.errors import Preempted, UserError
from lusjax.eval import online
from lusjax.layout import METRICS_DISCARDED, PRETRAIN_CLIPS, TB_DISCARDED_DIR
from lusjax.metrics import MetricsWriter, console_line, discard_after


def _write_json(path, obj) -> None:
    files.write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


# ----------------------------------------------------------------------------
# Model: backbone + method head, and the online probe.
# ----------------------------------------------------------------------------


class Network(nn.Module):
    """Backbone features and the method's head outputs for a batch of images."""

    backbone: nn.Module
    head: nn.Module

    def __call__(self, x, train: bool):
        feats = self.backbone(x, train=train)
        return feats, self.head(feats, train=train)


def build_network(cfg: ml_collections.ConfigDict, method: ssl.Method) -> Network:
    axis = sharding.AXIS if cfg.model.sync_bn else None
    backbone = models.get(
        cfg.model.name,
        num_channels=cfg.model.num_channels,
        dtype=cfg.model.dtype,
        width=cfg.model.width,
        bn_axis_name=axis,
    )
    head = method.make_head(cfg.ssl, dtype=jnp.dtype(cfg.model.dtype), bn_axis_name=axis)
    return Network(backbone=backbone, head=head)


def init_state(cfg, net: Network, method: ssl.Method, probe: nn.Module, tx, rng) -> dict:
    """The whole train state as one pytree: what orbax saves."""
    r_net, r_probe, r_train = jax.random.split(rng, 3)
    x = jnp.zeros((2, cfg.image_size, cfg.image_size, cfg.model.num_channels), jnp.float32)
    variables = net.init(r_net, x, train=False)
    feats = jnp.zeros((2, net.backbone.num_features), jnp.float32)
    params = {**variables["params"], "probe": probe.init(r_probe, feats)["params"]}
    online = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    return {
        "params": params,
        "batch_stats": online["batch_stats"],
        "opt_state": tx.init(params),
        "method_state": method.init_state(online, cfg.ssl),
        "step": jnp.zeros((), jnp.int32),
        "rng": r_train,
    }


# ----------------------------------------------------------------------------
# The train step (per device, under shard_map).
# ----------------------------------------------------------------------------


def _masked_probe_loss(logits, labels, axis):
    """Cross-entropy and accuracy of the online probe over the labelled examples of the
    global batch (the same value on every device)."""
    valid = labels >= 0
    safe = jnp.where(valid, labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    n = sharding.psum(valid.sum(), axis)
    denom = jnp.maximum(n, 1)
    loss = sharding.psum(jnp.where(valid, ce, 0.0).sum(), axis) / denom
    correct = sharding.psum(jnp.where(valid, logits.argmax(-1) == safe, False).sum(), axis)
    return loss, correct / denom, n


def _global_norm(tree):
    return optax.tree.norm(tree)


def batch_hash(index, rng, step: int) -> str:
    """Fingerprint of one step's input: this host's sample ids and the step's augmentation
    key (`step_fn` derives its keys from fold_in(rng, step)). The same hash means the same
    examples, augmented the same way (config.log_batch_hash; resume tests)."""
    key = jax.random.fold_in(rng, step)  # replicated: this host's copy is the whole key
    h = hashlib.sha256(np.asarray(index, np.int64).tobytes())
    h.update(np.asarray(key.addressable_data(0)).tobytes())
    return h.hexdigest()[:16]


def augment_preview(cfg, batch: dict, rng, step: int, n: int = 4) -> np.ndarray:
    """The first `n` examples of this host's batch augmented as `step_fn` augments the
    global batch's first `n` at `step` (same keys, same example ids; on one host they are
    those examples), view1 above view2, for TensorBoard: uint8 [2S, nS, 1]. Computed
    from the host's copy of the key, outside the step, whose views stay on device."""
    key = jax.random.fold_in(np.asarray(rng.addressable_data(0)), step)
    r1, r2 = jax.random.split(key)
    n = min(n, len(batch["view1"]))
    aug = jax.jit(lambda k, x: augment.augment_batch(k, x, jnp.arange(n), cfg.aug))
    rows = [
        np.concatenate(list(np.asarray(aug(k, batch[v][:n]))[..., :1]), axis=1)
        for k, v in ((r1, "view1"), (r2, "view2"))
    ]
    return (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)


def make_train_step(
    cfg, net: Network, method: ssl.Method, probe: nn.Module, tx, total_steps: int, axis: str | None
):
    """The per-device step: (state, batch) -> (state, metrics). Pure; jit/shard_map it."""
    ch = cfg.model.num_channels

    def step_fn(state, batch):
        step = state["step"]
        r1, r2 = jax.random.split(jax.random.fold_in(state["rng"], step))
        b = batch["view1"].shape[0]
        # Augmentation keys follow the example's position in the *global* batch, so
        # the result does not depend on how the batch is split over devices.
        ids = sharding.device_index(axis) * b + jnp.arange(b)
        x1 = preprocess.normalize(augment.augment_batch(r1, batch["view1"], ids, cfg.aug), ch)
        x2 = preprocess.normalize(augment.augment_batch(r2, batch["view2"], ids, cfg.aug), ch)
        x = jnp.concatenate([x1, x2])

        def halves(out):
            # Both views went through the network as one batch: split them again.
            # Outputs that are not per example (method.global_outputs) go to both whole.
            def half(sl):
                return {k: v if k in method.global_outputs else v[sl] for k, v in out.items()}

            return {"view1": half(slice(None, b)), "view2": half(slice(b, None))}

        target = None
        if method.needs_target:
            (_, t_out), _ = net.apply(
                state["method_state"]["target"], x, train=True, mutable=["batch_stats"]
            )
            target = jax.lax.stop_gradient(halves(t_out))

        def loss_fn(params):
            variables = {
                "params": {"backbone": params["backbone"], "head": params["head"]},
                "batch_stats": state["batch_stats"],
            }
            (feats, out), mutated = net.apply(variables, x, train=True, mutable=["batch_stats"])
            loss, metrics, updates = method.loss(
                halves(out), target, state["method_state"], cfg=cfg.ssl, axis_name=axis
            )
            logits = probe.apply({"params": params["probe"]}, jax.lax.stop_gradient(feats[:b]))
            p_loss, p_acc, p_n = _masked_probe_loss(logits, batch["label"], axis)
            aux = (metrics, updates, mutated["batch_stats"], p_loss, p_acc, p_n)
            return loss + p_loss, (loss, aux)

        grads, (loss, aux) = jax.grad(loss_fn, has_aux=True)(state["params"])
        metrics, updates, batch_stats, p_loss, p_acc, p_n = aux
        # Params are replicated (unvarying over the axis): under shard_map's vma typing
        # their gradient is already the global one, and pmean of it is a no-op. Kept
        # so the step stays right if the params' typing ever changes.
        grads = sharding.pmean(grads, axis)
        # Frozen parameters (SwAV's prototypes early on) get neither gradient nor update
        # (no momentum, no weight decay), as when PyTorch skips a param without .grad.
        grads = method.freeze(grads, step, cfg.ssl)
        upd, opt_state = tx.update(grads, state["opt_state"], state["params"])
        upd = method.freeze(upd, step, cfg.ssl)
        params = optax.apply_updates(state["params"], upd)
        # Without synced BN each replica has its own statistics: average the running
        # statistics so the replicated state stays identical everywhere.
        batch_stats = sharding.pmean(batch_stats, axis)
        method_state = {**state["method_state"], **updates}
        online = {
            "params": {"backbone": params["backbone"], "head": params["head"]},
            "batch_stats": batch_stats,
        }
        method_state = method.update_state(method_state, online, step, total_steps, cfg.ssl)
        new_state = {
            **state,
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
            "method_state": method_state,
            "step": step + 1,
        }
        out = {"loss": loss, **metrics}
        out = jax.tree.map(lambda v: sharding.pmean(jnp.asarray(v, jnp.float32), axis), out)
        out.update(
            probe_loss=p_loss,
            probe_acc=p_acc,
            probe_labelled=p_n,
            grad_norm=_global_norm(grads),
            param_norm=_global_norm(params),
            update_norm=_global_norm(upd),
        )
        return new_state, out

    return step_fn


def compile_step(step_fn, mesh):
    """jit(shard_map(step)) with the state replicated and the batch split on the data axis."""
    f = jax.shard_map(
        step_fn, mesh=mesh, in_specs=(P(), P(sharding.AXIS)), out_specs=(P(), P()), check_vma=True
    )
    return jax.jit(f, donate_argnums=(0,))


# ----------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Parts:
    """What the loop is made of, built once from the config (see `build`)."""

    net: Network
    method: ssl.Method
    probe: nn.Module
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    init_state: Any  # rng -> replicated train state
    step: Any  # jitted (state, global batch) -> (state, metrics)


def build(cfg: ml_collections.ConfigDict, num_classes: int, mesh) -> Parts:
    """Network, method, optimizer, state initialiser and the compiled step for `mesh`."""
    method = ssl.get(cfg.method)
    net = build_network(cfg, method)
    probe = nn.Dense(num_classes, name="probe")
    tx, lr_schedule = optim.make(cfg.optim, cfg.total_steps, cfg.batch_size)
    init = jax.jit(
        functools.partial(init_state, cfg, net, method, probe, tx),
        out_shardings=sharding.replicated(mesh),
    )
    step_fn = make_train_step(cfg, net, method, probe, tx, cfg.total_steps, sharding.AXIS)
    return Parts(net, method, probe, tx, lr_schedule, init, compile_step(step_fn, mesh))


def train(cfg: ml_collections.ConfigDict, *, progress: bool = True) -> dict:
    """Pretrains per `cfg` in `cfg.workdir`, resuming if it holds a checkpoint.

    Returns a summary dict (final step and metrics, throughput, carbon). One trainer
    at a time per workdir (`workdir_lock`). SIGTERM or SIGINT: the current step is saved
    and committed, then `Preempted` is raised (the CLI exits with status 3); the
    previous signal handlers are back when this returns or raises.
    """
    if not cfg.workdir:
        raise UserError("config.workdir is empty: say where the run goes (--config.workdir=DIR)")
    distributed.initialize()  # multi-host (SLURM, TPU pod, explicit env); no-op otherwise
    is_main = jax.process_index() == 0
    with workdir_lock.hold(cfg.workdir, enabled=is_main), preemption.StopSignals() as stop:
        return _train(cfg, stop, is_main=is_main, progress=progress)


def _agree(sig: str | None) -> str | None:
    """The signal that any process got (a collective when there are several: every
    process must save and stop at the same step)."""
    if jax.process_count() == 1:
        return sig
    from jax.experimental import multihost_utils

    code = int(
        np.max(multihost_utils.process_allgather(np.int32(signal.Signals[sig].value if sig else 0)))
    )
    return signal.Signals(code).name if code else None


def _train(cfg, stop: preemption.StopSignals, *, is_main: bool, progress: bool) -> dict:
    workdir, started = cfg.workdir, carbon.utc_now()
    tracker = carbon.Tracker(country=cfg.carbon.country, measure=cfg.carbon.measure)
    ckpt = it = writer = None
    try:
        # --- Mesh -------------------------------------------------------------
        mesh = sharding.make_mesh()
        n_dev = mesh.size
        if cfg.batch_size % n_dev:
            raise UserError(f"batch_size {cfg.batch_size} is not divisible by {n_dev} devices")

        # --- Input ------------------------------------------------------------
        data_dir = ensure_data(cfg.data)
        train_src = pipeline.open_train_source(data_dir, cfg.data)  # + data.extra_data_dir
        num_classes = max(1, len(train_src.class_names))
        seen = pipeline.train_clips(train_src, cfg.data)  # data.clips_file may narrow it
        total_steps = cfg.total_steps
        it = pipeline.train_iterator(
            train_src,
            cfg.data.train_split,
            cfg.data,
            global_batch_size=cfg.batch_size,
            seed=cfg.seed,
            aug_cfg=cfg.aug,
        )
        stop.point("setup")

        # --- Model, optimizer, state ------------------------------------------
        parts = build(cfg, num_classes, mesh)
        state = parts.init_state(jax.random.PRNGKey(cfg.seed))
        n_params = sum(x.size for x in jax.tree.leaves(state["params"]["backbone"]))

        # --- Restore, once the config matches the one its state was trained with
        ckpt = checkpoint.Checkpointer(
            workdir, every=cfg.ckpt_every, keep=cfg.keep_ckpts, async_save=cfg.async_ckpt
        )
        resumed = ckpt.latest_step()
        changes = resume.check_config(cfg, workdir) if resumed is not None else []
        if resumed is not None:
            state, data_state = ckpt.restore(resumed, state)
            if data_state:
                it.set_state(data_state)
            print(f"resumed from step {resumed} in {workdir}", flush=True)
        start = int(state["step"])
        sig = _agree(stop.signal)
        if sig and start < total_steps:  # no step of this run done: nothing new to save
            raise Preempted(sig, resumed, str(ckpt.directory))

        # --- Run files, written once every check passed -----------------------
        if is_main and cfg.metrics.tensorboard and not tb_events.available():
            raise UserError(
                "metrics.tensorboard=True needs tensorboardX: pip install "
                "'lusjax[tb]', or --config.metrics.tensorboard=False"
            )
        if is_main:
            config_lib.save(cfg, workdir)
            _write_json(
                files.path(workdir) / PRETRAIN_CLIPS,
                {  # evaluation refuses these
                    "data_dir": str(files.absolute(data_dir)),
                    "split": cfg.data.train_split,
                    "video_id": list(seen.video_id),
                    "patient_id": list(seen.patient_id),
                },
            )
            if moved := discard_after(workdir, start):
                print(
                    f"moved {moved} metrics lines of steps after {start} (redone now) to "
                    f"{METRICS_DISCARDED}",
                    flush=True,
                )
            if tb_events.available() and (moved := tb_events.discard_after(workdir, start)):
                print(
                    f"moved {moved} TensorBoard events of steps after {start} (redone now) "
                    f"to {TB_DISCARDED_DIR}/",
                    flush=True,
                )
            for line in changes:
                print(f"config changed since the last run segment: {line}", flush=True)
        writer = MetricsWriter(workdir, enabled=is_main, tensorboard=cfg.metrics.tensorboard)

        step_fn, lr_schedule = parts.step, parts.lr_schedule
        # The online probe (the evaluator "online"), scored on held-out frames.
        probe_of = functools.partial(
            online.OnlineProbe,
            parts.net.backbone,
            parts.probe,
            cfg.image_size,
            cfg.model.num_channels,
        )
        eval_frames = (
            online.held_out(data_dir, cfg.data.val_split, cfg.probe.eval_frames)
            if cfg.probe.eval_every > 0
            else None
        )
        batch_sharding = sharding.batch_sharding(mesh)

        # --- Loop -------------------------------------------------------------
        bar = None
        if progress and is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=total_steps,
                initial=start,
                desc=f"{cfg.method}/{cfg.model.name}",
                unit="step",
                dynamic_ncols=True,
            )
        last, stopped, saved, preview = {}, None, None, None
        t_log, steps_since_log, compile_s = time.time(), 0, None
        # Multi-host: no progress for cfg.watchdog_s -> an error naming the stuck process.
        # Left running if the loop raises, so that a hang on the way out still ends.
        dog = watchdog.start(cfg.watchdog_s)
        try:
            with tracker.phase("pretrain"):
                for step in range(start, total_steps):
                    dog.pet(step + 1, "data")
                    batch = next(it)
                    dog.pet(step + 1, "step")
                    # Before the step: it donates the state's buffers.
                    bhash = (
                        batch_hash(batch["index"], state["rng"], step)
                        if cfg.log_batch_hash
                        else None
                    )
                    if preview is None and writer.tensorboard:  # once per run segment
                        preview = augment_preview(cfg, batch, state["rng"], step)
                    batch = jax.make_array_from_process_local_data(batch_sharding, batch)
                    t0 = time.time()
                    stop.point("compile" if compile_s is None else "step", step + 1)
                    state, metrics = step_fn(state, batch)
                    if compile_s is None:
                        jax.block_until_ready(metrics["loss"])
                        compile_s = time.time() - t0
                        t_log = time.time()
                    else:
                        steps_since_log += 1
                    done = step + 1
                    if bar is not None:
                        bar.update(1)
                    # The signal flag is read once per step, here: logging, saving and
                    # stopping all follow from this one reading (a signal arriving later
                    # counts at the next step). Multi-host: the processes agree at log and
                    # checkpoint steps, where they wait for each other anyway.
                    sync = jax.process_count() == 1 or done % cfg.log_every == 0 or ckpt.due(done)
                    stopped = _agree(stop.signal) if sync and done < total_steps else None
                    final = done == total_steps or stopped is not None
                    log_now = done % cfg.log_every == 0 or final
                    save_now = final or ckpt.due(done)
                    if log_now or save_now:
                        # Never log or checkpoint a state that went non-finite.
                        metrics = jax.device_get(metrics)
                        _check_finite(metrics, done, ckpt, workdir)
                    if log_now:
                        stop.point("log", done)
                        elapsed = time.time() - t_log
                        ips = (
                            2 * cfg.batch_size * steps_since_log / elapsed
                            if steps_since_log
                            else 0.0
                        )
                        rec = {k: float(v) for k, v in metrics.items()}
                        rec.update(
                            lr=float(lr_schedule(done // cfg.optim.grad_accum)),
                            images_per_s=ips,
                            compile_s=compile_s,
                            **tracker.snapshot(),
                        )
                        if bhash is not None:
                            rec["batch_hash"] = bhash
                        if eval_frames is not None and (done % cfg.probe.eval_every == 0 or final):
                            probe = probe_of(state["params"], state["batch_stats"])
                            rec["probe_val_acc"] = online.accuracy(probe, eval_frames)
                        last = writer.write(done, rec)
                        if isinstance(preview, np.ndarray):  # at the first log step
                            writer.write_images(done, {"augmented/view1_view2": preview})
                            preview = False
                        if bar is not None:
                            bar.set_postfix_str(
                                console_line(last, ("loss", "probe_acc", "images_per_s"))
                            )
                        t_log, steps_since_log = time.time(), 0
                    if save_now:
                        dog.pet(done, "save")
                        ckpt.save(done, state, it.get_state(), force=True)
                        stop.point("save", done)
                    if stopped:
                        ckpt.wait()  # committed on disk before anyone is told so
                        saved = ckpt.committed_step()
                        break
        finally:
            if bar is not None:
                bar.close()
            dog.pet(dog.step, "close")
    finally:
        if writer is not None:
            writer.close()
        if ckpt is not None:
            ckpt.close()  # waits for the async save in flight: it commits or raises here
        if hasattr(it, "close"):
            it.close()  # grain worker processes

    done = int(state["step"])
    stop.point("end", done)
    if done >= total_steps:  # every process: orbax's save synchronises all of them
        dog.pet(done, "export")
        enc_vars = {
            "params": state["params"]["backbone"],
            "batch_stats": state["batch_stats"].get("backbone", {}),
        }
        checkpoint.export_encoder(
            workdir,
            enc_vars,
            model_name=cfg.model.name,
            model_kwargs=encoder_kwargs(cfg),
            image_size=cfg.image_size,
            step=done,
        )
    dog.stop()
    summary = {
        "step": done,
        "backbone_params": int(n_params),
        "devices": n_dev,
        "final": last,
        "carbon": tracker.summary(),
    }
    tracker.close()
    if is_main:  # per-phase energy and CO2e of this segment, added up in carbon.json
        carbon.record_segment(
            workdir,
            summary["carbon"],
            start=started,
            end=carbon.utc_now(),
            host=socket.gethostname(),
            processes=jax.process_count(),
            devices=n_dev,
            steps=[start, done],
            exit=f"preempted ({stopped})" if stopped else "finished",
            config_changes=changes,
        )
    if stopped:
        raise Preempted(stopped, saved, str(ckpt.directory))
    return summary


def _check_finite(metrics, step: int, ckpt: checkpoint.Checkpointer, workdir: str) -> None:
    # The loss was computed before this step's update, param_norm after it: the state
    # about to be saved is good only if both are finite.
    loss, param_norm = float(metrics["loss"]), float(metrics["param_norm"])
    if np.isfinite(loss) and np.isfinite(param_norm):
        return
    ckpt.wait()
    what = (
        f"loss became {loss}"
        if not np.isfinite(loss)
        else f"the parameters became non-finite (norm {param_norm}; loss was {loss:.4g})"
    )
    raise UserError(
        f"{what} at step {step}; stopped. The last good checkpoint "
        f"(step {ckpt.committed_step()}) is kept in {workdir}. Lower optim.lr?"
    )


def encoder_kwargs(cfg) -> dict[str, Any]:
    """Backbone kwargs for evaluation: same architecture, float32, no BN axis."""
    return {"num_channels": cfg.model.num_channels, "width": cfg.model.width, "dtype": "float32"}
