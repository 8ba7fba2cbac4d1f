"""Hostile inputs: each gives one clear line (`lusjax: error: ...`, exit 2) or a recorded
skip, never a traceback, and nothing already written is lost.

Through the `lusjax` command (in-process):
  - clips: truncated, header-only, corrupt, empty, zero-frame, audio-only, blank (no
    fan): each alone is an error naming the clip and why; beside good clips each is a
    skip recorded in dataset.json; an all-bad run into an existing dataset leaves it as
    it was;
  - metadata CSV: a UTF-8 BOM is accepted; latin-1, UTF-16, binary, wrong or missing
    columns, other delimiters, ragged rows are errors;
  - shards: zero-byte, truncated (half, tail), garbage, missing, corrupt records, a
    truncated or empty dataset.json: an error naming the file, when the split is opened
    or when the bad record is read (inside a grain worker too);
  - NaN-producing configs: optim.lr=1e9 stops at the first non-finite step with the
    last finite checkpoint kept; nan, inf and negative learning rates are refused;
  - a full disk while checkpointing: a write error in the background (ENOSPC, mocked),
    in the blocking part (mocked), or real (RLIMIT_FSIZE, EFBIG): the one checkpoint
    kept (keep_ckpts=1) survives, the log survives, and a rerun resumes from it;
  - keep_ckpts=0 (orbax would delete every checkpoint once written) is refused.

Decoding, ingest and reader errors one level down are tested in tests/test_decode.py,
test_ingest.py and test_shards.py; the non-finite stop in-process in test_train.py.
"""

from __future__ import annotations

import errno
import json
import resource
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

import synth_clips  # tests/data/synth_clips.py
import trainer_runs as tr

from data_prep import write
from lusjax import checkpoint, cli
from lusjax.data import pipeline, shards
from lusjax.errors import UserError


def lusjax(argv, capsys) -> tuple[int, str]:
    """Runs the `lusjax` command in-process: (exit status, stderr)."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return rc, err


def error_line(err: str) -> str:
    """The command's error: its last stderr line, `lusjax: error: ...` (one line)."""
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("lusjax: error: "), err[-2000:]
    return lines[-1]


# ----------------------------------------------------------------------------
# Clips and metadata (`lusjax prep --input`).
# ----------------------------------------------------------------------------


def _zero_frames(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # header and index, no frames


def _audio_only(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)


# name -> (how to make it from a good mp4's bytes, what the reason says)
BAD_CLIPS = {
    "truncated.mp4": (lambda p, good: p.write_bytes(good[: len(good) // 2]), "truncated"),
    "header_only.mp4": (lambda p, good: p.write_bytes(good[:200]), "truncated|corrupt"),
    "corrupt.mp4": (lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(5000)), "corrupt"),
    "empty.mov": (lambda p, good: p.write_bytes(b""), "empty file"),
    "zero_frames.avi": (lambda p, good: _zero_frames(p), "no frames decoded"),
    "audio_only.avi": (lambda p, good: _audio_only(p), "no video stream"),
    "blank.mp4": (
        lambda p, good: synth_clips.write_video(p, np.zeros((6, 96, 128, 3), np.uint8)),
        "no detectable fan",
    ),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """good/: two good clips; bad/<name>/: each bad clip alone; all/: good + every bad."""
    root = tmp_path_factory.mktemp("hostile_clips")
    for d in ("good", "all"):
        (root / d).mkdir()
        for i, name in enumerate(("a.mp4", "b.mp4")):
            rgb, _, _ = synth_clips.lus_clip(8, probe="convex", seed=20 + i)
            synth_clips.write_video(root / d / name, rgb)
    good = (root / "good" / "a.mp4").read_bytes()
    for name, (make, _) in BAD_CLIPS.items():
        (root / "bad" / name).mkdir(parents=True)
        make(root / "bad" / name / name, good)
        make(root / "all" / name, good)
    return root


def prep(src, out, capsys, *extra) -> tuple[int, str]:
    return lusjax(
        [
            "prep",
            "--input",
            src,
            "--out",
            out,
            "--size",
            "32",
            "--splits",
            "none",
            "--store",
            Path(out).parent / "store",
            *extra,
        ],
        capsys,
    )


@pytest.mark.parametrize("name", sorted(BAD_CLIPS))
def test_a_bad_clip_alone_is_one_clear_error(clips, tmp_path, capsys, name):
    rc, err = prep(clips / "bad" / name, tmp_path / "out", capsys)
    line = error_line(err)
    assert rc == 2 and "No usable clips" in line and name in line, line
    assert __import__("re").search(BAD_CLIPS[name][1], line), line
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_bad_clips_beside_good_ones_are_recorded_skips_and_lose_nothing(clips, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = prep(clips / "all", out, capsys)
    assert rc == 0, err[-2000:]
    info = json.loads((out / "dataset.json").read_text())
    reasons = {Path(s["source"]).name: s["reason"] for s in info["skipped"]}
    assert set(reasons) == set(BAD_CLIPS), reasons
    for name, (_, reason) in BAD_CLIPS.items():
        assert __import__("re").search(reason, reasons[name]), (name, reasons[name])
    assert err.count("warning: skipped") == len(BAD_CLIPS)
    src = shards.open_split(out, "train")
    assert sorted(src.clips.video_id) == ["a.mp4", "b.mp4"]
    frames = [src[i]["image"] for i in range(len(src))]

    # A run that finds nothing usable leaves the dataset already written as it was.
    before = (out / "dataset.json").read_bytes()
    rc, err = prep(clips / "bad" / "corrupt.mp4", out, capsys)
    assert rc == 2 and "No usable clips" in error_line(err)
    assert (out / "dataset.json").read_bytes() == before
    again = shards.open_split(out, "train")
    assert all(np.array_equal(again[i]["image"], f) for i, f in enumerate(frames))


CSVS = {  # name -> (bytes, None if accepted else what the error says)
    "utf8-bom": ("\ufeffpath,label\na.mp4,COVID-19\nb.mp4,regular\n".encode(), None),
    "latin-1": ("path,label\na.mp4,pneumonía\n".encode("latin-1"), "not UTF-8"),
    "utf-16": ("path,label\na.mp4,regular\n".encode("utf-16"), "not UTF-8"),
    "binary": (np.random.default_rng(1).bytes(300), "not UTF-8"),
    "wrong-columns": (b"name,kind\na.mp4,x\n", "expected a file column"),
    "no-metadata-columns": (b"path,license\na.mp4,CC\n", "any of probe, label"),
    "semicolons": (b"path;label\na.mp4;COVID-19\nb.mp4;regular\n", None),
    "aliases": (b"Filename,Class\na.mp4,COVID-19\nb.mp4,regular\n", None),
    "one-column": (b"path label\na.mp4 x\n", "expected a file column"),
    "ragged-row": (b"path,label\na.mp4,x,extra\n", "has 3 fields"),
    "empty-file": (b"", "expected a file column"),
    "header-only": (b"path,label\n", "no rows"),
}


@pytest.mark.parametrize("name", sorted(CSVS))
def test_metadata_csv_encodings_and_columns(clips, tmp_path, capsys, name):
    content, message = CSVS[name]
    csv = tmp_path / "metadata.csv"
    csv.write_bytes(content)
    rc, err = prep(clips / "good", tmp_path / "out", capsys, "--metadata", csv)
    if message is None:
        assert rc == 0, err[-2000:]
        info = json.loads((tmp_path / "out" / "dataset.json").read_text())
        assert sorted(info["class_names"]) == ["COVID-19", "regular"]
    else:
        line = error_line(err)
        assert rc == 2 and message in line and str(csv) in line, line


# ----------------------------------------------------------------------------
# Damaged datasets: shards and dataset.json.
# ----------------------------------------------------------------------------


def _cut(p: Path, keep) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: keep(len(data))])


def _zero_records(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[200:3000] = bytes(2800)  # inside the first records, past the file header
    p.write_bytes(bytes(data))


SHARD_DAMAGE = {  # name -> (damage of a middle train shard, what the error says)
    "zero-byte": (lambda p: p.write_bytes(b""), "is damaged"),
    "truncated-half": (lambda p: _cut(p, lambda n: n // 2), "is damaged"),
    "truncated-tail": (lambda p: _cut(p, lambda n: n - 20), "is damaged"),
    "garbage": (
        lambda p: p.write_bytes(np.random.default_rng(2).bytes(p.stat().st_size)),
        "is damaged",
    ),
    "missing": (lambda p: p.unlink(), "is missing"),
    "corrupt-records": (_zero_records, "Could not read record"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 tiny clips over small shards (6 for train)."""
    out = tmp_path_factory.mktemp("hostile_ds") / "ds"
    write.write_synthetic(str(out), n_clips=12, n_frames=8, size=32, seed=0, shard_mb=0.01)
    return out


def damaged_copy(dataset: Path, dst: Path, damage) -> Path:
    shutil.copytree(dataset, dst)
    files = json.loads((dst / "dataset.json").read_text())["splits"]["train"]["files"]
    shard = dst / files[len(files) // 2]
    damage(shard)
    return shard


def read_two_epochs(data_dir, workers: int = 0) -> None:
    cfg = pipeline.default_config()
    cfg.workers = workers
    it = pipeline.train_iterator(data_dir, "train", cfg, global_batch_size=16, seed=0)
    try:
        for _ in range(2 * pipeline.steps_per_epoch(data_dir, "train", cfg, 16)):
            next(it)
    finally:
        it.close()


@pytest.mark.parametrize("name", sorted(SHARD_DAMAGE))
def test_damaged_shard_is_a_user_error_naming_it(dataset, tmp_path, name):
    damage, message = SHARD_DAMAGE[name]
    shard = damaged_copy(dataset, tmp_path / "ds", damage)
    with pytest.raises(UserError, match=message) as e:
        read_two_epochs(tmp_path / "ds")
    assert str(shard) in str(e.value) and "\n" not in str(e.value)


def test_corrupt_record_read_in_a_grain_worker_is_a_user_error(dataset, tmp_path):
    shard = damaged_copy(dataset, tmp_path / "ds", _zero_records)
    with pytest.raises(UserError, match="Could not read record") as e:
        read_two_epochs(tmp_path / "ds", workers=2)
    assert str(shard) in str(e.value)


@pytest.mark.parametrize(
    "name, damage",
    [
        ("truncated", lambda p: _cut(p, lambda n: n // 2)),
        ("empty", lambda p: p.write_bytes(b"")),
    ],
)
def test_damaged_dataset_json_is_a_user_error(dataset, tmp_path, name, damage):
    shutil.copytree(dataset, tmp_path / "ds")
    damage(tmp_path / "ds" / "dataset.json")
    with pytest.raises(UserError, match="dataset.json is not valid JSON"):
        shards.open_split(tmp_path / "ds", "train")


def test_train_on_a_damaged_dataset_is_one_line(dataset, tmp_path, capsys):
    shard = damaged_copy(dataset, tmp_path / "ds", SHARD_DAMAGE["truncated-half"][0])
    rc, err = lusjax(
        [
            "train",
            "--quiet",
            "--config",
            tr.ROOT / "configs/quickstart.py",
            f"--config.workdir={tmp_path / 'run'}",
            f"--config.data.data_dir={tmp_path / 'ds'}",
            *[f"--config.{k}={v}" for k, v in tr.TINY],
        ],
        capsys,
    )
    assert rc == 2 and str(shard) in error_line(err)


# ----------------------------------------------------------------------------
# Training faults: NaN-producing configs, a full disk while checkpointing.
# ----------------------------------------------------------------------------


def train_argv(workdir, *extra) -> list:
    over = [*tr.TINY, ("carbon.measure", "false"), *extra]
    return [
        "train",
        "--quiet",
        "--config",
        tr.ROOT / "configs/quickstart.py",
        f"--config.workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in over],
    ]


def test_nan_producing_lr_stops_and_keeps_the_last_finite_checkpoint(tmp_path, capsys):
    """The step that went non-finite is neither logged nor saved; the checkpoint kept is
    the one before, and its parameters are finite (the loss alone, computed before the
    update, would let the first NaN state through)."""
    run = tmp_path / "run"
    extra = [("total_steps", "6"), ("ckpt_every", "1"), ("keep_ckpts", "2")]
    rc, err = lusjax(train_argv(run, *extra, ("optim.lr", "1e9")), capsys)
    line = error_line(err)
    assert rc == 2 and "became" in line and "last good checkpoint" in line, line
    bad = int(line.split(" at step ")[1].split(";")[0])
    good = int(line.split("(step ")[1].split(")")[0])
    steps, tmp = tr.committed(run)
    assert good == bad - 1 and steps[-1] == good and not tmp, (line, steps, tmp)
    state, _ = tr.restore(run, good, tr.config(run, extra), 8)
    assert all(np.isfinite(x).all() for x in tr.jax.tree.leaves(state))  # truly good
    recs = tr.metrics.read(run)
    assert [r["step"] for r in recs] == list(range(1, bad))  # nothing non-finite logged
    assert all(np.isfinite(r["loss"]) for r in recs)
    assert not (run / "encoder.json").exists()
    json.loads((run / "config.json").read_text())


@pytest.mark.parametrize("lr", ["nan", "inf", "-1"])
def test_nonfinite_or_negative_lr_is_refused_up_front(tmp_path, capsys, lr):
    rc, err = lusjax(train_argv(tmp_path / "run", ("optim.lr", lr)), capsys)
    assert rc == 2 and "optim.lr must be a finite number" in error_line(err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_keep_ckpts_zero_is_refused(tmp_path):
    with pytest.raises(UserError, match="keep_ckpts must be at least 1"):
        checkpoint.Checkpointer(tmp_path, every=1, keep=0)


FAIL_AT = 3  # the save of this step fails; steps 1, 2 committed before it (keep_ckpts=1)


def _fault(kind: str, monkeypatch):
    """Makes the checkpoint write of step FAIL_AT fail like a full disk."""
    import orbax.checkpoint as ocp
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    mark = f"/{FAIL_AT}{tr.TMP_MARK}/"
    enospc = OSError(errno.ENOSPC, "No space left on device")
    if kind == "background-enospc":  # the data-iterator write, in the background thread
        orig = json_checkpoint_handler.JsonCheckpointHandler._save_fn

        async def save_fn(self, x, directory):
            if mark in f"{directory}/":
                raise enospc
            return await orig(self, x, directory)

        monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)
    elif kind == "blocking-enospc":  # the train state's write, before save() returns
        orig = ocp.StandardCheckpointHandler.async_save

        async def async_save(self, directory, *args, **kwargs):
            if mark in f"{directory}/":
                raise enospc
            return await orig(self, directory, *args, **kwargs)

        monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", async_save)
    else:  # real: files stop at 16 KB (the state writes files up to ~180 KB), from then on
        orig = checkpoint.Checkpointer.save
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

        def save(self, step, *args, **kwargs):
            if step == FAIL_AT:  # once the previous save has committed (else it fails)
                self.wait()
                resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, hard))
            return orig(self, step, *args, **kwargs)

        monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return lambda: None


# orbax leaves the failed writes' futures unretrieved: asyncio reports them at collection.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind", ["background-enospc", "blocking-enospc", "file-size-limit"])
def test_full_disk_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path, capsys, monkeypatch, kind
):
    run = tmp_path / "run"
    extra = [("total_steps", "5"), ("ckpt_every", "1"), ("keep_ckpts", "1")]
    undo = _fault(kind, monkeypatch)
    try:
        rc, err = lusjax(train_argv(run, *extra), capsys)
    finally:
        undo()
    line = error_line(err)
    assert rc == 2 and f"checkpoint of step {FAIL_AT}" in line, line
    assert f"(step {FAIL_AT - 1}) is kept" in line, line
    if kind != "file-size-limit":
        assert "No space left on device" in line, line
    else:
        assert "File too large" in line, line
    steps, tmp = tr.committed(run)
    assert steps == [FAIL_AT - 1], (steps, tmp)  # the previous one was not deleted
    recs = tr.metrics.read(run)
    assert [r["step"] for r in recs][:FAIL_AT] == list(range(1, FAIL_AT + 1))
    json.loads((run / "config.json").read_text())
    if kind != "file-size-limit":
        state, _ = tr.restore(run, FAIL_AT - 1, tr.config(run, extra), 8)
        assert int(state["step"]) == FAIL_AT - 1
        return
    monkeypatch.undo()  # disk space back: the rerun resumes from the kept checkpoint
    rc, err = lusjax(train_argv(run, *extra), capsys)
    assert rc == 0, err[-2000:]
    assert f"removed unfinished checkpoint {run.resolve()}/checkpoints/{FAIL_AT}" in err
    assert tr.committed(run) == ([5], []) and tr.last_step(run) == 5
