"""The one checkpoint manager: orbax `CheckpointManager` over the train state
plus the input iterator's state, and the backbone export for evaluation.

Layout of a workdir:
    checkpoints/<step>/state      the train state pytree (orbax StandardSave)
    checkpoints/<step>/data_iter  the grain iterator state (JSON)
    encoder/                      backbone params + batch_stats (export)
    encoder.json                  backbone name, kwargs, image size, step

Orbax writes each step into a temporary directory (`<step>.orbax-checkpoint-tmp`)
and renames it when the save commits; older steps beyond `keep` are deleted only
after that. A run killed mid-save therefore restores the previous committed step,
and never finds itself without one. Temporary directories left by a killed run
are removed when the next `Checkpointer` opens the workdir, before anything is
restored (tests/reliability/test_kill_safety.py SIGKILLs the trainer to check all
of this). A save that fails (full disk, quota, permissions) raises
`CheckpointWriteError` at that save, at the next one or at `close()`, naming the
step and the last committed one, which is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lusjax import files
from lusjax.encoder import Encoder
from lusjax.errors import UserError
from lusjax.layout import CHECKPOINTS_DIR, ENCODER_DIR, ENCODER_JSON

TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix for a step that has not committed


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (full disk, quota, permissions...).

    A UserError (the CLI prints one line, exit 2) and an OSError (what it is)."""


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _first_line(e: BaseException, head: int = 120, tail: int = 160) -> str:
    """`Type: message` on one line, shortened in the middle: tensorstore puts the OS
    reason ("No space left on device") at the end of a long message."""
    text = " ".join(str(e).split())
    if len(text) > head + tail + 5:
        text = f"{text[:head]} ... {text[-tail:]}"
    return f"{type(e).__name__}: {text}"


def remove_unfinished(directory: str | os.PathLike) -> list[str]:
    """Deletes the temporary directories of saves that never committed (a killed run).

    Only process 0 deletes (one shared directory); returns the names removed.
    """
    directory = files.path(directory)
    if jax.process_index() != 0 or not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if TMP_MARK in path.name:
            if isinstance(path, Path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.rmtree()
            removed.append(path.name)
    return removed


class Checkpointer:
    """Saves every `every` steps (async), keeps the newest `keep`, restores the latest."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        every: int,
        keep: int,
        async_save: bool = True,
        read_only: bool = False,
    ):
        """`read_only`: only restore, and leave the folder as it is (a reader beside a
        live run must not remove the save it is writing)."""
        if keep < 1:  # orbax's max_to_keep=0 deletes every checkpoint once it commits
            raise UserError(
                f"keep_ckpts must be at least 1 (got {keep}): the newest "
                "checkpoint is what a restarted run resumes from"
            )
        self.every = every
        self.directory = files.absolute(workdir) / CHECKPOINTS_DIR
        # Synchronously, before orbax lists the steps: a killed run's half-written step
        # is never restored, and is gone once the next run has started.
        self.removed = [] if read_only else remove_unfinished(self.directory)
        for name in self.removed:
            print(
                f"removed unfinished checkpoint {self.directory / name} (the run stopped "
                "while writing it)",
                file=sys.stderr,
                flush=True,
            )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            save_interval_steps=0 if read_only else 1,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data_iter")
        )
        self._writing: int | None = None  # the step of the async save in flight

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def committed_step(self) -> int | None:
        """The newest committed step on disk. After a failed save the manager's own list
        can be stale (it drops the steps it meant to delete before the write commits)."""
        self.manager.reload()
        return self.manager.latest_step()

    def _write_error(self, step: int | None, e: Exception) -> CheckpointWriteError:
        try:
            kept = self.committed_step()
        except Exception:
            kept = None
        where = "nothing earlier" if kept is None else f"step {kept}"
        return CheckpointWriteError(
            f"could not write the checkpoint of step {step} to {self.directory} "
            f"({_first_line(e)}); the last committed checkpoint ({where}) is kept: fix the "
            "cause (free disk space?) and rerun to resume from it"
        )

    def due(self, step: int) -> bool:
        """Whether `step` is a regular checkpoint step."""
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state, data_state: dict | None, *, force: bool = False) -> bool:
        """Starts a save of `state` (+ iterator state) at `step`; returns whether it did."""
        if not force and not self.due(step):
            return False
        self.wait()  # a failed previous save raises here, naming its own step
        items = {"state": ocp.args.StandardSave(state)}
        items["data_iter"] = ocp.args.JsonSave(data_state if data_state is not None else {})
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        except Exception as e:  # the blocking part of the write failed
            raise self._write_error(step, e) from e
        self._writing = step if saved else None
        return saved

    def restore(self, step: int, state_like) -> tuple[object, dict]:
        """Restores `step` into the structure (and shardings) of `state_like`."""
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(state_like)),
                    data_iter=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:
            raise UserError(
                f"cannot restore checkpoint step {step} from {self.directory} "
                f"({_first_line(e)}): was it written with another config, or damaged? Move "
                "that step's folder away to resume from the one before, or use a new "
                "workdir"
            ) from e
        return restored["state"], dict(restored["data_iter"] or {})

    def wait(self) -> None:
        """Blocks until async saves have committed (raises if one failed)."""
        step, self._writing = self._writing, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._write_error(step, e) from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def export_encoder(
    workdir: str | os.PathLike,
    variables,
    *,
    model_name: str,
    model_kwargs: dict,
    image_size: int,
    step: int,
) -> Path:
    """Writes the backbone alone (params + batch_stats) for probing / fine-tuning.

    Call it on every process of a multi-host run: orbax synchronises them and the
    primary host writes.
    """
    workdir = files.absolute(workdir)
    target = workdir / ENCODER_DIR
    variables = jax.tree.map(np.asarray, variables)  # replicated: the local copy is whole
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, variables, force=True)
    if jax.process_index() == 0:
        files.write_text_atomic(
            workdir / ENCODER_JSON,
            json.dumps(
                {
                    "model_name": model_name,
                    "model_kwargs": model_kwargs,
                    "image_size": image_size,
                    "step": int(step),
                },
                indent=2,
            )
            + "\n",
        )
    return target


def load_encoder(workdir: str | os.PathLike) -> Encoder:
    """The pretrained backbone of a run (its `encoder/` export)."""
    workdir = files.absolute(workdir)
    meta_path = workdir / ENCODER_JSON
    if not meta_path.exists():
        if not workdir.exists():
            raise UserError(f"{workdir} does not exist: give the workdir of a `lusjax train` run")
        raise UserError(
            f"{workdir} exists but has no exported encoder ({ENCODER_JSON}): "
            "train until the end, or point to a finished run"
        )
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
