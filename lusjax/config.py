"""The one config system: ml-collections `get_config(arg)` files + CLI overrides.

    lusjax train --config configs/simclr_resnet.py:r18 --config.batch_size=512 \
        --config.optim.lr 0.3 --config.workdir=/tmp/run

`load(spec, overrides)` imports the file, calls `get_config(arg)`, applies each
`--config.a.b=value` override (typed by the existing field: bool, int, float,
str, tuple/list via Python literals), and locks the config so a mistyped key
is an error rather than a silently ignored setting. `--config.method=NAME`
also replaces the `ssl` section with that method's defaults (the optimiser is
kept: set `--config.optim.*` too, or use the method's own config file).
`lusjax config show FILE[:arg] [--config.k=v ...]` prints the result (`dumps`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from lusjax import files
from lusjax.errors import UserError
from lusjax.layout import CONFIG_JSON

PREFIX = "--config."


def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"_lusjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Config files may import their siblings (e.g. `from configs import common`).
    root = str(path.resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec.loader.exec_module(module)
    return module


def resolve_path(spec: str) -> tuple[Path, str | None]:
    """'configs/x.py:arg' -> (path, 'arg'). Bare names look in the packaged configs/."""
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.exists():
        packaged = Path(__file__).resolve().parent.parent / "configs" / path.name
        if not path.suffix:
            packaged = packaged.with_suffix(".py")
        if packaged.exists():
            path = packaged
        else:
            raise UserError(f"config file not found: {path_str}")
    return path, (arg or None)


def _parse_value(text: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UserError(f"--config.{key} expects true/false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            try:  # allow 1e3 style for ints when exact
                value = float(text)
                if value.is_integer():
                    return int(value)
            except ValueError:
                pass
            raise UserError(f"--config.{key} expects an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--config.{key} expects a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    # None or other: best effort literal, else the string.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        out.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            out.extend(_keys(v, prefix + k + "."))
    return out


# Names people type for a key that has another name here: a whole key, or its last part.
ALIASES = {
    "ssl.name": "method",
    "ssl.method": "method",
    "method.name": "method",
    "learning_rate": "lr",
    "base_lr": "lr",
    "wd": "weight_decay",
    "optimizer": "name",
    "epochs": "total_steps",
    "num_epochs": "total_steps",
    "total_epochs": "total_steps",
    "steps": "total_steps",
    "num_steps": "total_steps",
    "max_steps": "total_steps",
    "bs": "batch_size",
    "batch": "batch_size",
    "global_batch_size": "batch_size",
    "backbone": "model.name",
    "arch": "model.name",
    "data_path": "data_dir",
    "dataset": "data_dir",
    "output_dir": "workdir",
    "out": "out_dir",
    "output": "out_dir",
    "size": "image_size",
    "resolution": "image_size",
}


def suggest(key: str, keys: Sequence[str], n: int = 3) -> list[str]:
    """Existing keys close to the unknown `key`: known aliases first (whole key or its
    last part, e.g. optim.learning_rate -> optim.lr, ssl.name -> method), then keys
    with the same last part elsewhere (lr -> optim.lr), then edit distance over the
    last part and over the whole key."""
    parent, _, last = key.rpartition(".")
    found: list[str] = []

    def add(candidates):
        found.extend(c for c in candidates if c in keys and c not in found)

    def ending(name):  # keys ending in `name`; those under the same parent first
        hits = [k for k in keys if k == name or k.endswith("." + name)]
        return sorted(hits, key=lambda k: (k.rpartition(".")[0] != parent, k.count("."), k))

    if key in ALIASES:
        add([ALIASES[key]])
    if last in ALIASES:
        alias = ALIASES[last]
        add([f"{parent}.{alias}" if parent else alias, alias] + ending(alias))
    if found:  # an alias says what was meant
        return found[:n]
    add(ending(last))
    lasts = sorted({k.rpartition(".")[2] for k in keys})
    for close in difflib.get_close_matches(last, lasts, n=n, cutoff=0.7):
        add(ending(close))
    if not found:
        add(difflib.get_close_matches(key, keys, n=n))
    return found[:n]


def apply_override(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets `cfg.<key>` from its command-line text, typed by the current value."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            close = suggest(key, _keys(cfg))
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"unknown config key {key!r}{hint}")
        if i < len(parts) - 1:
            node = node[part]
    last = parts[-1]
    current = node[last]
    if isinstance(current, ml_collections.ConfigDict):
        raise UserError(f"--config.{key} is a group of settings; set one of its keys")
    value = _parse_value(text, current, key)
    with node.unlocked():
        node[last] = value


def split_overrides(argv: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Separates `--config.k=v` / `--config.k v` pairs from the other arguments."""
    overrides, rest = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith(PREFIX):
            body = a[len(PREFIX) :]
            if "=" in body:
                k, v = body.split("=", 1)
            elif i + 1 < len(argv):
                k, v = body, argv[i + 1]
                i += 1
            else:
                raise UserError(f"{a} needs a value")
            overrides.append((k, v))
        else:
            rest.append(a)
        i += 1
    return overrides, rest


def load(spec: str, overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """Loads `path[:arg]`, applies overrides, returns a locked ConfigDict."""
    path, arg = resolve_path(spec)
    module = _import_file(path)
    if not hasattr(module, "get_config"):
        raise UserError(f"{path} has no get_config()")
    cfg = module.get_config(arg) if arg is not None else module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(cfg)
    # `method` first: changing it brings the new method's own `ssl` section (its
    # defaults), on which any --config.ssl.* override then applies.
    # The same for a nested recipe (`lusjax study`'s --config.train.method=byol).
    for k, v in sorted(overrides, key=lambda kv: kv[0].rpartition(".")[2] != "method"):
        apply_override(cfg, k, v)
        parent = cfg
        for part in k.split(".")[:-1]:
            parent = parent[part]
        if k.rpartition(".")[2] == "method" and isinstance(
            parent.get("ssl"), ml_collections.ConfigDict
        ):
            _reset_ssl(parent)
    cfg.lock()
    return cfg


def _reset_ssl(cfg: ml_collections.ConfigDict) -> None:
    from lusjax import ssl

    method = ssl.get(cfg.method)  # a clear error for an unknown method
    with cfg.unlocked():
        cfg.ssl = method.default_config()


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """A JSON-able plain dict of the config."""
    return json.loads(cfg.to_json_best_effort())


def save(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
    """Writes the resolved config to `<workdir>/config.json`."""
    return files.write_text_atomic(
        files.path(workdir) / CONFIG_JSON, json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n"
    )


def load_saved(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """Reads a run's resolved config back from `<workdir>/config.json`."""
    path = files.path(workdir) / CONFIG_JSON
    if not path.exists():
        if not files.path(workdir).exists():
            raise UserError(f"{workdir} does not exist: give the workdir of a `lusjax train` run")
        raise UserError(f"no {CONFIG_JSON} in {workdir}: not a lusjax run directory")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def dumps(cfg: ml_collections.ConfigDict, fmt: str = "yaml") -> str:
    """The resolved config as text: "json" (what config.json holds), or "yaml": one
    `key: value` line per setting, nested by indentation, values in JSON notation
    (which YAML reads too)."""
    d = to_dict(cfg)
    if fmt == "json":
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def lines(node: dict, indent: str) -> list[str]:
        out = []
        for k in sorted(node):
            v = node[k]
            if isinstance(v, dict) and v:
                out += [f"{indent}{k}:"] + lines(v, indent + "  ")
            else:
                out.append(f"{indent}{k}: {json.dumps(v)}")
        return out

    return "\n".join(lines(d, "")) + "\n"
