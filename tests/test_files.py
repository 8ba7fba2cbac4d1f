"""Run files on an object store: gs:// workdirs, with an in-memory filesystem as the bucket.

orbax (checkpoints, encoder export) writes gs:// through tensorstore's own GCS
driver, which this fake does not reach; everything lusjax writes itself is here.
"""

import importlib
import importlib.util
import json

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from lusjax import checkpoint, files, layout, metrics, report
from lusjax import config as config_lib
from lusjax.errors import UserError


@pytest.fixture
def bucket():
    """gs:// served from memory for the duration of a test."""
    from etils.epath import backend

    registry = importlib.import_module("fsspec.registry")._registry  # the module, not the proxy
    saved = {k: registry.get(k) for k in ("gs", "gcs")}
    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, MemoryFileSystem, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs.clear()
    MemoryFileSystem.pseudo_dirs.append("")
    yield "gs://bucket/runs/r1"
    for name, cls in saved.items():
        if cls is None:
            registry.pop(name, None)
        else:
            registry[name] = cls
    backend.fsspec_backend._get_filesystem.cache_clear()
    MemoryFileSystem.store.clear()


def test_local_paths_stay_pathlib(tmp_path):
    from pathlib import Path

    assert isinstance(files.path(tmp_path / "a"), Path) and not files.is_remote(tmp_path)
    assert files.absolute("rel").is_absolute()
    files.write_text_atomic(tmp_path / "x.json", "{}")
    files.append_text(tmp_path / "x.json", "\n1")
    assert (tmp_path / "x.json").read_text() == "{}\n1"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_remote_text_files_and_metrics(bucket):
    p = files.write_text_atomic(f"{bucket}/config.json", '{"a": 1}\n')
    assert files.is_remote(p) and str(p) == f"{bucket}/config.json"
    assert json.loads(files.path(p).read_text()) == {"a": 1}
    w = metrics.MetricsWriter(bucket)
    w.write(1, {"loss": np.float32(2.5)})
    w.write(2, {"loss": float("nan")})
    recs = metrics.read(bucket)
    assert [r["step"] for r in recs] == [1, 2] and recs[0]["loss"] == 2.5


def test_remote_config_roundtrip_and_report(bucket):
    cfg = config_lib.load("configs/quickstart.py", [("workdir", bucket)])
    config_lib.save(cfg, bucket)
    assert config_lib.load_saved(bucket).workdir == bucket
    w = metrics.MetricsWriter(bucket)
    for step in range(1, 4):
        w.write(step, {"loss": 3.0 / step, "lr": 0.1})
    written = report.render(bucket)
    assert written and all(files.path(p).exists() for p in written)
    assert files.path(written[0]).read_bytes()[:4] == b"\x89PNG"


def test_remote_unfinished_checkpoints_are_removed(bucket):
    ckpts = files.path(f"{bucket}/checkpoints")
    (ckpts / "100").mkdir(parents=True)
    (ckpts / "100" / "x").write_text("done")
    tmp = ckpts / f"200{checkpoint.TMP_MARK}1234"
    tmp.mkdir(parents=True)
    (tmp / "x").write_text("half")
    assert checkpoint.remove_unfinished(ckpts) == [tmp.name]
    assert sorted(p.name for p in ckpts.iterdir()) == ["100"]


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs installed")
def test_gs_without_gcsfs_is_a_user_error():
    with pytest.raises(UserError, match="gcsfs"):
        files.path("gs://bucket/run")


def test_failed_writes_are_user_errors_naming_the_path(tmp_path, monkeypatch):
    """A full disk, a read-only folder or a file in the way: one UserError naming the path,
    the old file kept and no temporary file left."""
    import errno
    import os

    with pytest.raises(UserError, match="cannot write /dev/full: No space left on device"):
        files.append_text("/dev/full", "x" * 10)
    (tmp_path / "blocker").write_text("")
    with pytest.raises(UserError, match=f"cannot write {tmp_path}/blocker/sub: Not a directory"):
        files.write_text_atomic(tmp_path / "blocker" / "sub" / "x.json", "{}")
    target = tmp_path / "x.json"
    target.write_text("old")

    def full(*a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match=f"cannot write {target}: No space left on device"):
        files.write_text_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "blocker",
        "x.json",
    ]


def test_remote_workdir_lock_is_best_effort(bucket):
    """gs:// cannot be locked: the lock object is created if absent, refused while there
    (naming its holder), removed at the end."""
    from lusjax import workdir_lock

    with workdir_lock.hold(bucket):
        assert files.path(f"{bucket}/{layout.TRAINER_LOCK}").exists()
        with (
            pytest.raises(UserError, match=f"{bucket} is in use by pid"),
            workdir_lock.hold(bucket),
        ):
            pass
    assert not files.path(f"{bucket}/{layout.TRAINER_LOCK}").exists()
