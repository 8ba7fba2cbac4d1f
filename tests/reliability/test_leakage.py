"""Leakage gate: splits are keyed by clip and patient, evaluation refuses to test on a
clip or patient that is also on the training side or that the SSL pretraining saw, and
every refusal names the ids.

The data are a tiny synthetic set (2 clips per patient, so patients are real groups);
datasets with a planted overlap are copies whose dataset.json was edited.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from test_train import tiny_config

from lusjax import config as config_lib
from lusjax import layout
from lusjax.errors import UserError
from lusjax.eval import protocol, splits

ROOT = Path(__file__).resolve().parents[2]
# The tiny set has fewer patients per class than folds: kfold says so, rightly.
pytestmark = pytest.mark.filterwarnings("ignore:.*clips/patients:UserWarning")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from data_prep.write import write_synthetic

    path = tmp_path_factory.mktemp("leak") / "syn"
    write_synthetic(str(path), n_clips=24, n_frames=4, size=16, seed=0, clips_per_patient=2)
    return path


def manifest(path) -> dict:
    return json.loads((Path(path) / "dataset.json").read_text())


def clips_of(path, split: str) -> list[dict]:
    return manifest(path)["splits"][split]["clips"]


def eval_config(**overrides):
    base = {
        "encoder": "random",
        "model.name": "resnet_tiny",
        "image_size": 16,
        "frames_per_clip": 2,
        "progress": False,
        "protocol": "linear",
        "seeds": 1,
        "label_fractions": "(1.0,)",
        "tasks": "label",
        "min_clips_per_class": 1,
    }
    base.update(overrides)
    return config_lib.load(str(ROOT / "configs/eval.py"), [(k, str(v)) for k, v in base.items()])


def edited_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of the dataset `src` whose dataset.json went through `edit(info)`."""
    shutil.copytree(src, dst)
    info = manifest(dst)
    edit(info)
    (dst / "dataset.json").write_text(json.dumps(info))
    return dst


# ----------------------------------------------------------------------------
# The split manifests.
# ----------------------------------------------------------------------------


def test_split_manifests_are_keyed_by_clip_and_patient_and_disjoint(data_dir):
    info = manifest(data_dir)
    side: dict[str, set] = {"video_id": set(), "patient_id": set()}
    for split, entry in info["splits"].items():
        for key, seen in side.items():
            ids = {c[key] for c in entry["clips"]}
            assert all(ids), (split, key)
            assert not ids & seen, f"{key} in two splits: {sorted(ids & seen)}"
            seen |= ids
    assert len(side["patient_id"]) < len(side["video_id"])  # patients group clips here


# ----------------------------------------------------------------------------
# Train/test overlap.
# ----------------------------------------------------------------------------


def test_eval_refuses_a_clip_on_both_sides_and_names_it(data_dir):
    test_ids = sorted(c["video_id"] for c in clips_of(data_dir, "test"))
    cfg = eval_config(data_dir=data_dir, splits="train,test", test_split="test")
    with pytest.raises(UserError, match="leakage: .* clip.* in both train and test") as e:
        protocol.run(cfg)
    assert test_ids[0] in str(e.value)


def test_eval_refuses_a_patient_on_both_sides_and_names_it(data_dir, tmp_path):
    train_patient = clips_of(data_dir, "train")[0]["patient_id"]

    def move_patient(info):  # a test clip now belongs to a training patient
        info["splits"]["test"]["clips"][0]["patient_id"] = train_patient

    bad = edited_copy(data_dir, tmp_path / "bad", move_patient)
    cfg = eval_config(data_dir=bad, test_split="test")
    with pytest.raises(UserError, match="leakage: 1 patient.* in both train and test") as e:
        protocol.run(cfg)
    assert train_patient in str(e.value)


def test_test_split_alone_trains_on_the_other_splits(data_dir):
    """--config.test_split=test with the default splits: train on train+val, not on test
    (it used to pool every split, test included, and trip the gate)."""
    data, fixed_test = protocol.load_frames(str(data_dir), eval_config(test_split="test"))
    ids = data.clips.video_id
    assert sorted(ids[fixed_test]) == sorted(c["video_id"] for c in clips_of(data_dir, "test"))
    assert sorted(ids[~fixed_test]) == sorted(
        c["video_id"] for s in ("train", "val") for c in clips_of(data_dir, s)
    )
    splits.check_disjoint(
        np.flatnonzero(~fixed_test), np.flatnonzero(fixed_test), ids, data.clips.patient_id
    )


# ----------------------------------------------------------------------------
# Clips and patients the SSL pretraining saw.
# ----------------------------------------------------------------------------


def record(path, split: str) -> dict:
    """pretrain_clips.json as `lusjax train` writes it, for pretraining on `split`."""
    cs = clips_of(path, split)
    return {
        "data_dir": str(path),
        "split": split,
        "video_id": [c["video_id"] for c in cs],
        "patient_id": [c["patient_id"] for c in cs],
    }


def fake_run(tmp_path, rec: dict) -> Path:
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / layout.PRETRAIN_CLIPS).write_text(json.dumps(rec))
    return workdir


def test_eval_refuses_test_clips_seen_in_pretraining_and_names_them(data_dir, tmp_path):
    rec = record(data_dir, "train")
    workdir = fake_run(tmp_path, rec)
    cfg = eval_config(encoder=workdir, data_dir=data_dir)  # k-fold: every clip is tested
    with pytest.raises(UserError, match="pretraining .* saw .* test clips") as e:
        protocol.run(cfg)
    msg = str(e.value)
    assert min(rec["video_id"]) in msg and "allow_pretrain_overlap" in msg
    # Testing only on a split pretraining never saw passes the gate.
    data, fixed_test = protocol.load_frames(str(data_dir), eval_config(test_split="test"))
    assert protocol.check_pretraining(cfg, data, np.flatnonzero(fixed_test)) == []


def test_eval_refuses_test_patients_seen_in_pretraining(data_dir, tmp_path):
    """Another clip of a test patient was in pretraining: refused, the patient named."""
    test_clip = clips_of(data_dir, "test")[0]
    rec = record(data_dir, "train")
    rec["video_id"].append("elsewhere/c999")  # not a test clip ...
    rec["patient_id"].append(test_clip["patient_id"])  # ... of a test patient
    cfg = eval_config(encoder=fake_run(tmp_path, rec), data_dir=data_dir, test_split="test")
    with pytest.raises(UserError, match="1 test patient") as e:
        protocol.run(cfg)
    assert test_clip["patient_id"] in str(e.value)
    assert "test clips" not in str(e.value)  # no clip overlap, only the patient


def test_allowed_overlap_is_a_note_not_an_error(data_dir):
    rec = record(data_dir, "train")
    ids = np.array([c["video_id"] for s in ("train", "test") for c in clips_of(data_dir, s)])
    pats = np.array([c["patient_id"] for s in ("train", "test") for c in clips_of(data_dir, s)])
    test = np.arange(len(ids))
    with pytest.raises(UserError):
        splits.check_pretraining(test, ids, pats, rec)
    (note,) = splits.check_pretraining(test, ids, pats, rec, allow=True)
    n_train = len(rec["video_id"])
    assert note.startswith(f"{n_train} of the {len(ids)} test clips were seen without labels")
    assert splits.check_pretraining(test, ids, pats, None) == []


def test_a_real_run_records_its_clips_and_the_probe_refuses_them(tmp_path):
    """`lusjax train` writes pretrain_clips.json (the train split's clips and patients);
    `lusjax probe` then refuses to test on the train split, and accepts the test split."""
    from lusjax import train
    from lusjax.app.default_data import ensure_data
    from lusjax.app.probe import probe_workdir

    cfg = tiny_config(tmp_path / "run", ("total_steps", "1"), ("ckpt_every", "0"))
    train.train(cfg, progress=False)
    rec = splits.read_pretraining(tmp_path / "run")
    data_dir = ensure_data(cfg.data)
    assert rec["video_id"] == [c["video_id"] for c in clips_of(data_dir, "train")]
    assert rec["patient_id"] == [c["patient_id"] for c in clips_of(data_dir, "train")]
    assert rec["split"] == "train" and Path(rec["data_dir"]) == Path(data_dir).resolve()
    with pytest.raises(UserError, match="pretraining .* saw") as e:
        probe_workdir(str(tmp_path / "run"), train_split="val", test_split="train")
    assert rec["video_id"][0] in str(e.value)
    res = probe_workdir(str(tmp_path / "run"), train_split="train", test_split="test")
    assert res["ssl"]["n_test_clips"] == len(clips_of(data_dir, "test"))
