"""The embedded default dataset: synthetic LUS clips, generated once and cached.

When `config.data.data_dir` is empty, training and evaluation use a synthetic
dataset described by `config.data.synthetic`, written on first use under
`$LUSJAX_CACHE` (default `~/.cache/lusjax`) in a folder named by its settings,
so every later run with the same settings (and generator version) reuses it.

Several processes may start on an empty cache at once (the hosts of a
multi-host job, parallel tests): each writes into its own temporary folder
next to the target and renames it into place, so a reader only ever sees a
complete dataset; the process that loses the race throws its copy away.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from lusjax.errors import UserError
from lusjax.layout import DATASET_JSON

_TMP_TAG = ".tmp-"


def cache_root() -> Path:
    return Path(os.environ.get("LUSJAX_CACHE", Path.home() / ".cache" / "lusjax"))


def ensure_data(data_cfg) -> str:
    """Returns the dataset directory for `config.data`, generating the default if needed."""
    if data_cfg.data_dir:
        path = Path(data_cfg.data_dir).expanduser()
        if not (path / DATASET_JSON).exists():
            raise UserError(
                f"{path} is not a lusjax dataset (no {DATASET_JSON}); create one with `lusjax prep`"
            )
        return str(path)
    from data_prep import synthetic

    syn = {k: data_cfg.synthetic[k] for k in sorted(data_cfg.synthetic.keys())}
    # The generator's version is part of the name: a changed generator never reuses
    # a cache written by an older one.
    key = json.dumps({**syn, "generator_version": synthetic.VERSION}, sort_keys=True)
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = cache_root() / f"synthetic-{tag}"
    if not (path / DATASET_JSON).exists():

        def write(tmp: Path) -> None:
            from data_prep.write import write_synthetic  # heavy (tfds): only when needed

            write_synthetic(str(tmp), **syn)

        write_atomically(path, write)
    return str(path)


def write_atomically(path: Path, write: Callable[[Path], None]) -> bool:
    """Makes the dataset folder `path` with `write(tmp)` into a private temporary folder
    beside it, then renames that into place (atomic on one filesystem).

    Returns True if this call's copy is the one in place, False if another process
    finished first (this copy is discarded). A folder at `path` without a
    dataset.json (left by an interrupted writer of an older lusjax) is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(path)
    # mkdir, not mkdtemp: the folder keeps the umask's permissions (a shared cache).
    tmp = path.parent / f".{path.name}{_TMP_TAG}{_owner()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        meta = tmp / DATASET_JSON
        if not meta.exists():
            raise RuntimeError(f"writing the dataset into {tmp} left no {DATASET_JSON}")
        meta.write_text(meta.read_text().replace(str(tmp), str(path)))  # its summary line
        for _ in range(3):
            if (path / DATASET_JSON).exists():
                return False  # another process won the race: use its copy
            try:
                os.rename(tmp, path)  # fails if `path` exists and is not empty
                return True
            except OSError:
                if path.exists() and not (path / DATASET_JSON).exists():
                    _set_aside(path)  # an incomplete folder (old writer): move it away
        if (path / DATASET_JSON).exists():
            return False
        raise UserError(f"could not move the generated dataset {tmp} to {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _set_aside(path: Path) -> None:
    junk = path.parent / f".{path.name}{_TMP_TAG}{_owner()}-stale"
    try:
        os.rename(path, junk)
    except OSError:
        return  # someone else moved it (or it just became complete): the caller re-checks
    shutil.rmtree(junk, ignore_errors=True)


def _clean_stale_tmp(path: Path) -> None:
    """Removes temporary folders of `path` left by dead writers on this host."""
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{path.name}{_TMP_TAG}{host}-*"):
        try:
            pid = int(tmp.name[len(f".{path.name}{_TMP_TAG}{host}-") :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
