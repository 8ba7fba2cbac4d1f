"""Run and dataset files: local or on an object store (gs://, s3://), never half-written.

A workdir on a TPU pod must be shared by all hosts, hence a bucket. `path()` gives
a `pathlib.Path` for local paths and an `etils.epath.Path` (the path type orbax
takes) for URLs, so the code that writes a run's files is the same for both.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from lusjax.errors import UserError

URL_SCHEMES = ("gs", "s3", "az")


def is_remote(p: str | os.PathLike) -> bool:
    """Whether `p` is an object-store URL (gs://, s3://, az://)."""
    return any(os.fspath(p).startswith(f"{s}://") for s in URL_SCHEMES)


def path(p: str | os.PathLike):
    """A path object for `p`: `pathlib.Path` if local, `etils.epath.Path` if a URL.

    A URL whose filesystem is not installed (gcsfs for gs:// without TensorFlow)
    is a UserError naming the package.
    """
    if isinstance(p, Path) or not is_remote(p):
        return Path(p)
    from etils import epath

    scheme = os.fspath(p).split("://", 1)[0]
    try:
        import fsspec

        # epath uses tf.io.gfile when TensorFlow is installed, else fsspec.
        if importlib.util.find_spec("tensorflow") is None:
            fsspec.get_filesystem_class("gcs" if scheme == "gs" else scheme)
    except ImportError as e:
        package = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs"}[scheme]
        raise UserError(
            f"{p}: {scheme}:// paths need {package} (pip install "
            f"'etils[epath-{'gcs' if scheme == 'gs' else scheme}]')"
        ) from e
    return epath.Path(p)


def absolute(p: str | os.PathLike):
    """`path(p)`, made absolute if local (URLs already are)."""
    q = path(p)
    return q.resolve() if isinstance(q, Path) else q


@contextlib.contextmanager
def writing(p):
    """Turns an OSError while writing `p` (read-only folder, full disk, quota, a file where
    a folder should be) into a UserError naming `p`: one line for the user, no traceback."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise UserError(f"cannot write {p}: {reason}") from e


def makedirs(p: str | os.PathLike):
    """`mkdir -p p`; a UserError naming `p` if it cannot be created."""
    p = path(p)
    with writing(p):
        p.mkdir(parents=True, exist_ok=True)
    return p


def write_text_atomic(p: str | os.PathLike, text: str):
    """Writes `text` so that a reader, or the next run, sees the old file or the new one:
    locally through a temporary file beside it and a rename (atomic on one
    filesystem); on an object store by one write (objects are replaced whole).
    A failed write is a UserError naming `p`, and leaves the old file."""
    return write_atomic(p, lambda f: f.write_text(text))


def write_atomic(p: str | os.PathLike, write):
    """`write_text_atomic` for any content: `write(path)` writes the whole file at `path`
    (e.g. `lambda f: f.write_bytes(data)`, or a library's save_file)."""
    p = path(p)
    makedirs(p.parent)
    with writing(p):
        if not isinstance(p, Path):
            write(p)
            return p
        tmp = p.with_name(f".{p.name}.tmp")
        try:
            write(tmp)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves no temporary file
    return p


def append_text(p: str | os.PathLike, text: str) -> None:
    """Appends `text` to a file; objects cannot be appended to, so on an object store the
    object is rewritten with `text` added (fine for a run's small JSONL files).
    A failed write is a UserError naming `p`."""
    p = path(p)
    with writing(p):
        if isinstance(p, Path):
            with open(p, "a") as f:
                f.write(text)
            return
        old = p.read_text() if p.exists() else ""
        p.write_text(old + text)


def save_figure(fig, p: str | os.PathLike, **kwargs):
    """`fig.savefig` to a local path or an object-store URL (format from the suffix)."""
    p = path(p)
    if isinstance(p, Path):
        fig.savefig(p, **kwargs)
    else:
        with p.open("wb") as f:
            fig.savefig(f, format=p.suffix.lstrip(".") or "png", **kwargs)
    return p
