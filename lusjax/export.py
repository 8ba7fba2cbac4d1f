"""`lusjax export`: a run's pretrained backbone as files other code loads.

    torch  <torchvision name>.safetensors: a torchvision state_dict (lusjax.export_torch)
    flax   encoder.msgpack (flax.serialization of {"params", "batch_stats"}) + encoder.json

Both go with MODEL_CARD.md (lusjax.model_card) into `--out` (default
WORKDIR/export/FORMAT). Writing needs numpy and safetensors only, never torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lusjax import checkpoint, export_torch, files, model_card
from lusjax.errors import UserError
from lusjax.layout import ENCODER_JSON, EXPORT_DIR, FLAX_ENCODER, MODEL_CARD

FORMATS = ("torch", "flax")


def _torch(enc, meta: dict, out: Path, channels: int) -> tuple[list[str], list[str]]:
    from safetensors.numpy import save_file

    tv_name = export_torch.check_exportable(enc.model_name, enc.model_kwargs)
    sd = export_torch.state_dict(
        enc.model_name,
        enc.model_kwargs,
        enc.variables,
        channels=channels,
        step=int(meta.get("step", 0)),
    )
    name = f"{tv_name}.safetensors"
    # "format": "pt" is what safetensors' torch loaders and the HF hub expect.
    info = {
        "format": "pt",
        "torchvision_model": tv_name,
        "lusjax_model": enc.model_name,
        "in_channels": str(channels),
        "image_size": str(enc.image_size),
        "step": str(meta.get("step")),
    }
    files.write_atomic(out / name, lambda p: save_file(sd, str(p), metadata=info))
    fam = export_torch.family(enc.model_name)
    stem = export_torch.STEM[fam]
    w = sd[f"{stem}.weight"]
    stem_attr = "model.conv1" if fam == "resnet" else "model.features[0][0]"
    stem_line = (
        None
        if channels == 3
        else f"torch.nn.Conv2d({channels}, {w.shape[0]}, {w.shape[2]}, 2, "
        f"{(w.shape[2] - 1) // 2}, bias=False)"
    )
    snippet = model_card.load_snippet(
        "torch",
        torch_name=tv_name,
        filename=name,
        channels=channels,
        stem=stem_attr,
        stem_line=stem_line,
        head=export_torch.HEAD[fam],
        size=enc.image_size,
    )
    return [name], snippet


def _flax(enc, meta: dict, out: Path, channels: int) -> tuple[list[str], list[str]]:
    import flax.serialization
    import jax

    if channels != enc.num_channels:
        raise UserError(
            f"--channels {channels}: the flax export keeps the model's own "
            f"{enc.num_channels} channel(s); --channels is for --format torch"
        )
    variables = jax.tree.map(np.asarray, dict(enc.variables))
    data = flax.serialization.msgpack_serialize(variables)
    files.write_atomic(out / FLAX_ENCODER, lambda p: p.write_bytes(data))
    files.write_text_atomic(out / ENCODER_JSON, json.dumps(meta, indent=2) + "\n")
    snippet = model_card.load_snippet(
        "flax",
        torch_name=None,
        filename=FLAX_ENCODER,
        channels=channels,
        stem=None,
        stem_line=None,
        head=None,
        size=enc.image_size,
    )
    return [FLAX_ENCODER, ENCODER_JSON], snippet


def export(
    workdir: str | os.PathLike,
    fmt: str,
    *,
    out: str | os.PathLike | None = None,
    channels: int | None = None,
    results: str | os.PathLike | None = None,
) -> list[Path]:
    """Writes the encoder of `workdir` as `fmt` plus MODEL_CARD.md; returns the paths."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, not {channels}")
    if results is not None and not Path(results).exists():
        raise UserError(f"--results {results} does not exist")
    workdir = files.absolute(workdir)
    enc = checkpoint.load_encoder(workdir)  # UserError without a finished run's encoder
    if fmt == "torch":  # before any file is written
        export_torch.check_exportable(enc.model_name, enc.model_kwargs)
    meta = json.loads((workdir / ENCODER_JSON).read_text())
    out = Path(out) if out else workdir / EXPORT_DIR / fmt
    files.makedirs(out)
    write = _torch if fmt == "torch" else _flax
    written, snippet = write(enc, meta, out, channels or enc.num_channels)
    card = model_card.render(
        workdir, meta, fmt=fmt, snippet=snippet, files_written=written, results=results
    )
    files.write_text_atomic(out / MODEL_CARD, card)
    return [out / name for name in written] + [out / MODEL_CARD]
