"""The one checkpoint manager: orbax `CheckpointManager` over the train state
plus the input iterator's state, and the backbone export for evaluation.

Layout of a workdir:
    checkpoints/<step>/state      the train state pytree (orbax StandardSave)
    checkpoints/<step>/data_iter  the grain iterator state (JSON)
    encoder/                      backbone params + batch_stats (export)
    encoder.json                  backbone name, kwargs, image size, step

Orbax writes each step into a temporary directory and renames it when the
save commits, so a run killed mid-save restores the previous committed step;
leftover temporary directories are removed when the manager is created.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lusjax.encoder import Encoder
from lusjax.errors import UserError

ENCODER_DIR = "encoder"
ENCODER_JSON = "encoder.json"


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """Saves every `every` steps (async), keeps the newest `keep`, restores the latest."""

    def __init__(self, workdir: str | os.PathLike, *, every: int, keep: int,
                 async_save: bool = True):
        self.every = every
        self.directory = Path(workdir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data_iter"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        """Whether `step` is a regular checkpoint step."""
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state, data_state: dict | None, *, force: bool = False) -> bool:
        """Starts a save of `state` (+ iterator state) at `step`; returns whether it did."""
        if not force and not self.due(step):
            return False
        items = {"state": ocp.args.StandardSave(state)}
        items["data_iter"] = ocp.args.JsonSave(data_state if data_state is not None else {})
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, state_like) -> tuple[object, dict]:
        """Restores `step` into the structure (and shardings) of `state_like`."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(state_like)),
            data_iter=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["data_iter"] or {})

    def wait(self) -> None:
        """Blocks until async saves have committed (raises if one failed)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def export_encoder(workdir: str | os.PathLike, variables, *, model_name: str,
                   model_kwargs: dict, image_size: int, step: int) -> Path:
    """Writes the backbone alone (params + batch_stats) for probing / fine-tuning.

    Call it on every process of a multi-host run: orbax synchronises them and the
    primary host writes.
    """
    workdir = Path(workdir).resolve()
    target = workdir / ENCODER_DIR
    variables = jax.tree.map(np.asarray, variables)  # replicated: the local copy is whole
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, variables, force=True)
    if jax.process_index() == 0:
        (workdir / ENCODER_JSON).write_text(json.dumps({
            "model_name": model_name, "model_kwargs": model_kwargs,
            "image_size": image_size, "step": int(step)}, indent=2) + "\n")
    return target


def load_encoder(workdir: str | os.PathLike) -> Encoder:
    """The pretrained backbone of a run (its `encoder/` export)."""
    workdir = Path(workdir).resolve()
    meta_path = workdir / ENCODER_JSON
    if not meta_path.exists():
        raise UserError(f"no exported encoder in {workdir} (missing {ENCODER_JSON}); "
                        "train until the end, or point to a finished run")
    meta = json.loads(meta_path.read_text())
    enc = Encoder.random_init(meta["model_name"], meta["model_kwargs"], meta["image_size"])
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(workdir / ENCODER_DIR, _abstract(enc.variables))
    except (ValueError, KeyError) as e:
        raise UserError(
            f"the encoder in {workdir} does not match {meta['model_name']} as this lusjax "
            f"builds it (exported by another version?): {str(e).splitlines()[0][:200]}"
        ) from None
    enc.variables = variables
    return enc
