"""Resuming a run: the new config against the one the run was trained with.

A checkpoint holds a state trained with `<workdir>/config.json`. Resuming it with
another model, method, batch, optimiser, data or augmentation would continue a
different experiment under the old name, so those differences are an error
(listed key by key) unless `allow_config_change=True`. Keys that only say how long,
how often or how fast (MAY_CHANGE) may differ; the changes are returned so the run
can record them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from lusjax import config as config_lib
from lusjax import files
from lusjax.errors import UserError
from lusjax.layout import CONFIG_JSON

# Keys (or whole sections) that do not change what a step computes.
MAY_CHANGE = (
    "workdir",
    "total_steps",
    "log_every",
    "ckpt_every",
    "keep_ckpts",
    "async_ckpt",
    "watchdog_s",
    "data.workers",
    "data.read_threads",
    "data.prefetch",
    "probe.eval_every",
    "carbon",
    "log_batch_hash",
    "allow_config_change",
    "metrics",
)
_ABSENT = "(absent)"


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def may_change(key: str) -> bool:
    """Whether `key` may differ between the run's segments."""
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)


def diff(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) of every leaf that differs, in key order."""
    a, b = _flat(old), _flat(new)
    return [
        (k, a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in sorted(a.keys() | b.keys())
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


def _show(changes) -> str:
    return ", ".join(f"{k}: {json.dumps(o)} -> {json.dumps(n)}" for k, o, n in changes)


def check_config(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[str]:
    """Compares `cfg` with the `config.json` of the run being resumed from `workdir`.

    Raises a UserError listing each key that changes the training (`key: old -> new`),
    unless `cfg.allow_config_change`. Returns every change, as `key: old -> new` lines
    (empty when none, or when the run has no config.json)."""
    path = files.path(workdir) / CONFIG_JSON
    if not path.exists():
        return []
    changes = diff(json.loads(path.read_text()), config_lib.to_dict(cfg))
    blocked = [c for c in changes if not may_change(c[0])]
    if blocked and not cfg.allow_config_change:
        raise UserError(
            f"{workdir} was trained with another config; resuming would change: "
            f"{_show(blocked)}. Use a new workdir, the same settings, or "
            "--config.allow_config_change=True to resume anyway"
        )
    return [_show([c]) for c in changes]
