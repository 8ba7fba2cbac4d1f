"""The embedded default dataset: synthetic LUS clips, generated once and cached.

When `config.data.data_dir` is empty, training and evaluation use a synthetic
dataset described by `config.data.synthetic`, written on first use under
`$LUSJAX_CACHE` (default `~/.cache/lusjax`) in a folder named by its settings,
so every later run with the same settings (and generator version) reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lusjax.data.format import DATASET_JSON
from lusjax.errors import UserError


def cache_root() -> Path:
    return Path(os.environ.get("LUSJAX_CACHE", Path.home() / ".cache" / "lusjax"))


def ensure_data(data_cfg) -> str:
    """Returns the dataset directory for `config.data`, generating the default if needed."""
    if data_cfg.data_dir:
        path = Path(data_cfg.data_dir).expanduser()
        if not (path / DATASET_JSON).exists():
            raise UserError(f"{path} is not a lusjax dataset (no {DATASET_JSON}); "
                            "create one with `lusjax prep`")
        return str(path)
    from data_prep import synthetic

    syn = {k: data_cfg.synthetic[k] for k in sorted(data_cfg.synthetic.keys())}
    # The generator's version is part of the name: a changed generator never reuses
    # a cache written by an older one.
    key = json.dumps({**syn, "generator_version": synthetic.VERSION}, sort_keys=True)
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = cache_root() / f"synthetic-{tag}"
    if not (path / DATASET_JSON).exists():
        from data_prep.write import write_synthetic  # heavy (tfds): only when needed

        write_synthetic(str(path), **syn)
    return str(path)
