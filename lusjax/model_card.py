"""MODEL_CARD.md for an exported encoder: what it is, what it saw, what it cost.

Everything comes from the run's own files: encoder.json (backbone, step, image
size), config.json (method, batch, data), pretrain_clips.json (the clips and
patients pretraining saw), carbon.json (energy and CO2e, all segments), and any
evaluation of it (results.md / study.md beside a results.json / study.json under
the workdir or at `--results`). What is missing is said to be missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lusjax import carbon, files
from lusjax.data import preprocess
from lusjax.layout import (
    CONFIG_JSON,
    ENCODER_JSON,
    PRETRAIN_CLIPS,
    RESULTS_JSON,
    RESULTS_MD,
    STUDY_JSON,
    STUDY_MD,
)

_EVAL_FILES = ((RESULTS_JSON, RESULTS_MD), (STUDY_JSON, STUDY_MD))
_MAX_TABLE_LINES = 40


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find_results(workdir: Path, results: str | os.PathLike | None = None) -> list[Path]:
    """Evaluation outputs (results.json / study.json) of this encoder: at `results` (a
    file or a folder, searched recursively) else under the workdir."""
    root = Path(results) if results else workdir
    if root.is_file():
        return [root]
    names = {j for j, _ in _EVAL_FILES}
    return sorted(p for p in root.rglob("*.json") if p.name in names)


def _eval_section(paths: list[Path]) -> list[str]:
    if not paths:
        return [
            (
                "No evaluation found (no results.json or study.json under the workdir; "
                "`lusjax export ... --results PATH` points to one)."
            )
        ]
    out = []
    for p in paths:
        md = p.with_name(dict(_EVAL_FILES).get(p.name, p.stem + ".md"))
        out.append(f"From `{p}`:")
        if md.is_file():
            lines = md.read_text().splitlines()
            out += ["", *lines[:_MAX_TABLE_LINES]]
            if len(lines) > _MAX_TABLE_LINES:
                out.append(f"... ({len(lines) - _MAX_TABLE_LINES} more lines in `{md}`)")
        else:
            out.append(f"(no {md.name} beside it: see the JSON)")
        out.append("")
    return out


def _data_section(workdir: Path, cfg: dict) -> list[str]:
    clips = _json(workdir / PRETRAIN_CLIPS)
    data = cfg.get("data", {})
    where = data.get("data_dir") or "the embedded synthetic dataset (data_dir empty)"
    if clips is None:
        return [f"- Dataset: {where}; {PRETRAIN_CLIPS} missing, so the clips are unknown."]
    n_clips = len(set(clips.get("video_id", [])))
    n_patients = len(set(clips.get("patient_id", [])))
    lines = [
        f"- Dataset: `{clips.get('data_dir', where)}`",
        (
            f"- Pretraining saw split `{clips.get('split')}`: {n_clips} clips of "
            f"{n_patients} patients (listed in `{PRETRAIN_CLIPS}`; lusjax's evaluation "
            "refuses to test on them unless told to). No labels are used by pretraining; "
            "the online probe's labels do not reach the backbone."
        ),
    ]
    if data.get("extra_data_dir"):
        lines.append(f"- Extra unlabelled data: `{data['extra_data_dir']}`")
    return lines


def _carbon_section(workdir: Path) -> list[str]:
    ledger = carbon.read_ledger(workdir)
    if not ledger["segments"]:
        return ["- Energy: not recorded (no carbon.json)."]
    t = ledger["totals"]["total"]
    kwh, kg = t.get("model_kwh"), t.get("model_kg_co2e")
    line = (
        f"- Energy (cumulator's model, {len(ledger['segments'])} run segment(s)): "
        f"{kwh * 1000:.3g} Wh, {kg * 1000:.3g} g CO2e"
        if kwh is not None and kg is not None
        else "- Energy: unknown for part of the run"
    )
    if t.get("measured_kwh") is not None:
        line += f"; measured {t['measured_kwh'] * 1000:.3g} Wh"
    return [line + " (carbon.json)."]


def load_snippet(
    fmt: str,
    *,
    torch_name: str | None,
    filename: str,
    channels: int,
    stem: str | None,
    stem_line: str | None,
    head: str | None,
    size: int,
) -> list[str]:
    """How to load the export, as a python block."""
    norm = f"(x - {preprocess.PIXEL_MEAN}) / {preprocess.PIXEL_STD}"
    if fmt == "torch":
        lines = [
            "import torch, torchvision",
            "from safetensors.torch import load_file",
            f"model = torchvision.models.{torch_name}()",
        ]
        if stem_line:
            lines.append(f"{stem} = {stem_line}  # {channels}-channel stem")
        lines += [
            f"model.{head} = torch.nn.Identity()  # features, not ImageNet logits",
            f'model.load_state_dict(load_file("{filename}")); model.eval()',
            f"feats = model({norm})  # x: float [B, {channels}, {size}, {size}] in [0, 1]",
        ]
    else:
        lines = [
            "import json, flax.serialization",
            "from lusjax import models",
            f'meta = json.load(open("{ENCODER_JSON}"))',
            'model = models.get(meta["model_name"], **meta["model_kwargs"])',
            f'variables = flax.serialization.msgpack_restore(open("{filename}", "rb").read())',
            (
                f"feats = model.apply(variables, {norm}, train=False)"
                f"  # x: [B, {size}, {size}, {channels}]"
            ),
        ]
    return ["```python", *lines, "```"]


def render(
    workdir: str | os.PathLike,
    meta: dict[str, Any],
    *,
    fmt: str,
    snippet: list[str],
    files_written: list[str],
    results: str | os.PathLike | None = None,
) -> str:
    """The card's markdown for the export of `workdir` (encoder.json content `meta`)."""
    workdir = files.absolute(workdir)
    cfg = _json(workdir / CONFIG_JSON) or {}
    kw = meta.get("model_kwargs", {})
    size = meta.get("image_size")
    lines = [
        f"# {meta['model_name']} pretrained with {cfg.get('method', '?')} (lusjax)",
        "",
        f"Exported from `{workdir}` as {fmt}: {', '.join(f'`{f}`' for f in files_written)}.",
        "",
        "## Model",
        "",
        f"- Method: {cfg.get('method', 'unknown (no config.json)')}, self-supervised",
        (
            f"- Backbone: {meta['model_name']} (width {kw.get('width', 1.0)}), without "
            "classifier: the output is the global-average-pooled feature vector"
        ),
        (
            f"- Steps: {meta.get('step')} at batch {cfg.get('batch_size', '?')} "
            f"(config.json has every setting)"
        ),
        f"- Input: {size}x{size} gray frames, {kw.get('num_channels', 1)} channel(s) in training",
        "",
        "## Data",
        "",
        *_data_section(workdir, cfg),
        "",
        "## Preprocessing",
        "",
        (
            "Frames are gray uint8 (ultrasound fan masked, resized keeping aspect) -> "
            f"float in [0, 1], resized bilinearly to {size}x{size}, then "
            f"`(x - {preprocess.PIXEL_MEAN}) / {preprocess.PIXEL_STD}` (not ImageNet's "
            "mean/std), the gray channel repeated when the model takes 3."
        ),
        "",
        "## Evaluation",
        "",
        *_eval_section(find_results(workdir, results)),
        "",
        "## Cost",
        "",
        *_carbon_section(workdir),
        "",
        "## Load it",
        "",
        *snippet,
        "",
    ]
    return "\n".join(lines)
