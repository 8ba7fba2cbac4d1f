"""Clips without labels: `prep` warns once and records the count, `eval` refuses the label
task when no clip has a label (naming what labels exist), `predict` leaves an unknown
patient empty rather than inventing one from the file name."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep import cli as prep_cli
from lusjax import cli
from lusjax.errors import UserError
from lusjax.eval import features, protocol

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
import synth_clips  # generated fixtures, see tests/data/synth_clips.py

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two short clips and a metadata CSV with findings but no `label` column."""
    root = tmp_path_factory.mktemp("unlabeled")
    (root / "videos").mkdir()
    for i, probe in enumerate(("convex", "linear")):
        rgb, _, _ = synth_clips.lus_clip(6, probe=probe, seed=i)
        synth_clips.write_video(root / "videos" / f"clip{i}.mp4", rgb)
    with open(root / "meta.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "probe", "patient_id", "b_lines"])
        w.writerow(["videos/clip0.mp4", "convex", "p1", "1"])
        w.writerow(["videos/clip1.mp4", "linear", "p2", "0"])
    return root


def _prep(clips, out, *extra):
    return prep_cli.main(
        [
            "--input",
            str(clips / "videos"),
            "--out",
            str(out),
            "--size",
            "32",
            "--splits",
            "none",
            *extra,
        ]
    )


def _warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("lusjax prep: warning:")]


def test_prep_warns_once_and_records_clips_without_label(clips, tmp_path, capsys):
    out = tmp_path / "ds"
    assert _prep(clips, out, "--metadata", str(clips / "meta.csv")) == 0
    warnings = _warnings(capsys.readouterr().err)
    assert len(warnings) == 1, warnings
    assert "2 of 2 clips have no label" in warnings[0]
    assert "meta.csv has no label column" in warnings[0]
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == {"labelled_clips": 0, "unlabeled_clips": 2}
    assert info["ingest"]["label_column"] is False

    assert _prep(clips, tmp_path / "nometa") == 0  # no --metadata at all
    (warning,) = _warnings(capsys.readouterr().err)
    assert "2 of 2 clips have no label (no --metadata CSV was given)" in warning


def test_eval_refuses_the_label_task_without_labels(clips, tmp_path, capsys):
    out = tmp_path / "ds"
    assert _prep(clips, out, "--metadata", str(clips / "meta.csv")) == 0
    capsys.readouterr()
    argv = [
        "eval",
        "--config",
        str(ROOT / "configs/eval.py"),
        f"--config.data_dir={out}",
        f"--config.out_dir={tmp_path / 'eval'}",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lusjax: error: task 'label' has no labelled clip among the 2")
    assert "labels exist for: b_lines (2 clips)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eval" / "results.md").exists()


def test_the_rule_for_tasks_with_few_or_no_labels():
    """label with no labels: error; a finding no clip records, or a task with too few clips
    per class: a note, and the other tasks go on."""
    clips = features.Clips(
        np.array(["a", "b", "c", "d"]),
        np.array(["a", "b", "c", "d"]),
        np.array([0, 0, 1, 1]),
        np.full((4, 5), -1),
        ["x", "y"],
    )
    notes = []
    assert list(protocol.usable_tasks(clips, ["label", "effusion"], 2, notes)) == ["label"]
    assert len(notes) == 1 and "'effusion' skipped" in notes[0]
    clips.label[:] = -1
    with pytest.raises(UserError, match="task 'label' has no labelled clip.*no clip has any"):
        protocol.usable_tasks(clips, ["label"], 2, [])


def test_predict_leaves_an_unknown_patient_empty(clips, tmp_path):
    from lusjax.app import predict

    rows, skipped, n = predict.ingest_clips(str(clips / "videos"), "", 32, str(tmp_path / "s"))
    extras = [extra for _, _, extra in rows]
    assert n == 2 and not skipped and [e["patient_id"] for e in extras] == ["", ""]
    rows, _, _ = predict.ingest_clips(
        str(clips / "videos"), str(clips / "meta.csv"), 32, str(tmp_path / "m")
    )
    assert sorted(e["patient_id"] for _, _, e in rows) == ["p1", "p2"]


def test_prep_labels_clips_by_their_top_folder(tmp_path, capsys):
    """--label-from-folder: class sub-folders (nested ones too) label their clips; a
    metadata label wins; a clip straight in --input stays unlabeled, with its reason."""
    from data_prep.store import ClipStore

    root = tmp_path / "by_class"
    for i, name in enumerate(["covid/a.mp4", "normal/p1/b.mp4", "normal/c.mp4", "d.mp4"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        rgb, _, _ = synth_clips.lus_clip(6, seed=10 + i)
        synth_clips.write_video(root / name, rgb)
    rgb, _, _ = synth_clips.lus_clip(6, seed=20)
    synth_clips.write_video(tmp_path / "elsewhere.mp4", rgb)  # linked in: keeps its place
    (root / "covid" / "linked.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    meta = tmp_path / "meta.csv"
    meta.write_text("path,label\nnormal/c.mp4,pneumonia\n")
    out = tmp_path / "ds"
    argv = ["--input", str(root), "--out", str(out), "--size", "32", "--splits", "none"]
    assert prep_cli.main([*argv, "--metadata", str(meta), "--label-from-folder"]) == 0
    err = capsys.readouterr().err
    (warning,) = _warnings(err)
    assert "1 of 5 clips have no label (no metadata label, and they sit directly" in warning
    assert "note: clips in sub-folders of their class folder without a patient id: 1;" in err
    assert "add --patient-from-folder" in err
    store = ClipStore(out / "clips")
    labels = {r["video_id"]: r["label_name"] for r in store.records()}
    assert labels == {
        "covid/a.mp4": "covid",
        "covid/linked.mp4": "covid",
        "normal/p1/b.mp4": "normal",
        "normal/c.mp4": "pneumonia",
        "d.mp4": "",
    }
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == {"labelled_clips": 4, "unlabeled_clips": 1}
    assert info["ingest"]["label_from_folder"] is True
    assert info["ingest"]["clips_without_patient_in_subfolders"] == 1  # normal/p1/b.mp4

    assert prep_cli.main(argv) == 0  # without the flag: the hint, and labels cleared
    (warning,) = _warnings(capsys.readouterr().err)
    assert "add --label-from-folder" in warning
    assert {r["label_name"] for r in ClipStore(out / "clips").records()} == {""}


def test_predict_reads_metadata_columns_and_class_folders(clips, tmp_path):
    """`lusjax predict --column patient_id=HEADER` maps a header the aliases do not know;
    --label-from-folder takes the true label from the clip's folder."""
    from lusjax.app import predict

    meta = tmp_path / "meta.csv"
    meta.write_text("path,Subject code\nvideos/clip0.mp4,s1\nvideos/clip1.mp4,s2\n")
    with pytest.raises(UserError, match="--column label=HEADER"):
        predict.ingest_clips(str(clips), str(meta), 32, str(tmp_path / "a"))
    cols = predict.parse_columns(["patient_id=Subject code"])
    rows, _, _ = predict.ingest_clips(str(clips), str(meta), 32, str(tmp_path / "b"), cols, True)
    rows = list(rows)
    assert sorted(e["patient_id"] for _, _, e in rows) == ["s1", "s2"]
    assert [e["label_name"] for _, _, e in rows] == ["videos", "videos"]
    with pytest.raises(UserError, match="FIELD=HEADER"):
        predict.main(["--heads", str(tmp_path), "--input", str(clips), "--column", "bogus"])


def test_discover_follows_linked_folders_but_not_loops(tmp_path):
    """A class folder that is a link is walked (it was silently skipped); a link back up
    the path is not; a second link to the same folder is walked (its clips are then
    reported as duplicates by content)."""
    from data_prep import ingest

    real = tmp_path / "elsewhere" / "covid_clips"
    real.mkdir(parents=True)
    rgb, _, _ = synth_clips.lus_clip(4, seed=30)
    synth_clips.write_video(real / "a.mp4", rgb)
    root = tmp_path / "input"
    root.mkdir()
    (root / "covid").symlink_to(real)
    (root / "again").symlink_to(real)
    (real / "loop").symlink_to(root)  # input/covid/loop -> input: not walked again
    specs, skips = ingest.discover(root, label_from_folder=True)
    assert sorted((s.video_id, s.meta["label_name"]) for s in specs) == [
        ("again/a.mp4", "again"),
        ("covid/a.mp4", "covid"),
    ]
    assert not skips


def test_prep_takes_patients_from_folders(tmp_path):
    """--patient-from-folder: a clip's folder below --input is its patient (below its class
    folder under --label-from-folder; a class is not a patient), a metadata patient id
    wins, and a patient's clips land in one split."""
    from data_prep import ingest
    from data_prep.store import ClipStore

    root = tmp_path / "by_class"
    names = ["covid/p1/a.mp4", "covid/p1/b.mp4", "covid/p2/c.mp4", "normal/d.mp4"]
    names += ["normal/p3/e.mp4", "normal/p4/f.mp4", "normal/p4/g.mp4", "normal/p5/h.mp4"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        rgb, _, _ = synth_clips.lus_clip(4, seed=40 + i)
        synth_clips.write_video(root / name, rgb)
    meta = tmp_path / "meta.csv"
    meta.write_text("path,patient_id\ncovid/p2/c.mp4,x9\n")
    specs, _ = ingest.discover(root, meta, label_from_folder=True, patient_from_folder=True)
    patients = {s.video_id: s.meta.get("patient_id") for s in specs}
    assert patients == {
        "covid/p1/a.mp4": "covid/p1",
        "covid/p1/b.mp4": "covid/p1",
        "covid/p2/c.mp4": "x9",
        "normal/d.mp4": None,  # directly in its class folder: its own clip id
        "normal/p3/e.mp4": "normal/p3",
        "normal/p4/f.mp4": "normal/p4",
        "normal/p4/g.mp4": "normal/p4",
        "normal/p5/h.mp4": "normal/p5",
    }
    assert ingest.patient_folder("p7/a.mp4") == "p7" and ingest.patient_folder("a.mp4") == ""

    out = tmp_path / "ds"
    argv = ["--input", str(root), "--metadata", str(meta), "--out", str(out), "--size", "32"]
    argv += ["--label-from-folder", "--patient-from-folder", "--splits", "train=0.5,test=0.5"]
    assert prep_cli.main(argv) == 0
    stored = {r["video_id"]: r["patient_id"] for r in ClipStore(out / "clips").records()}
    assert stored["covid/p1/b.mp4"] == "covid/p1" and stored["normal/d.mp4"] == "normal/d.mp4"
    info = json.loads((out / "dataset.json").read_text())
    assert info["ingest"]["patient_from_folder"] is True
    assert info["ingest"]["clips_without_patient_in_subfolders"] == 0
    split_of = {c["video_id"]: n for n, sp in info["splits"].items() for c in sp["clips"]}
    assert len(split_of) == 8
    assert split_of["covid/p1/a.mp4"] == split_of["covid/p1/b.mp4"]
    assert split_of["normal/p4/f.mp4"] == split_of["normal/p4/g.mp4"]
