"""Metadata CSVs of other collections: column aliases and --column, labels that differ
in case, rows joined by file name without extension, ambiguous rows, folders of stills,
and what `lusjax prep` then writes (data_prep.metadata, data_prep.ingest)."""

import csv
import json
import sys
from pathlib import Path

import pytest

from data_prep import cli as prep_cli
from data_prep import ingest, metadata, write
from data_prep.store import ClipStore
from lusjax.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
import synth_clips  # generated fixtures, see tests/data/synth_clips.py

POCUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pocus_dev"
# The header of the public POCUS collection's dataset_metadata.csv (abridged).
BORN_HEADER = [
    "Current location",
    "Filename",
    "Label",
    "Type",
    "Probe",
    "Patient ID / Name",
    "",
    "Effusion",
    "Consolidations",
    "B-lines",
    "A-lines",
    "Pleural line irregularities",
    "Fever",
]


def _csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_aliases_map_another_collections_columns(tmp_path):
    row = ["pocus_videos/Convex", "Cov-Atlas+(44)", "COVID-19", "video", "convex", "36", ""]
    path = _csv(tmp_path / "m.csv", BORN_HEADER, [row + ["n/A", "1", "0", "", "1", "n/A"]])
    table = metadata.read_csv(path, meta_required=True)
    (r,) = table.rows
    assert (r["path"], r["label"], r["patient_id"], r["probe"]) == (
        "Cov-Atlas+(44)",
        "COVID-19",
        "36",
        "convex",
    )
    meta = metadata.row_meta(r)
    assert meta["findings"] == {
        "b_lines": 0,
        "a_lines": -1,
        "effusion": -1,  # n/A = unknown
        "consolidation": 1,
        "pleural_irregular": 1,
    }
    assert table.renamed["path"] == "Filename"
    assert table.renamed["patient_id"] == "Patient ID / Name"
    assert "label" not in table.renamed  # 'Label' is our name already


def test_column_option_picks_a_header_and_errors_are_one_line(tmp_path):
    path = _csv(tmp_path / "m.csv", ["Video", "label", "Finding"], [["a.mp4", "x", "COVID"]])
    assert metadata.parse_columns(["label=Finding", "Patient=Case"]) == {
        "label": "Finding",
        "patient_id": "Case",
    }
    (r,) = metadata.read_csv(path, meta_required=True, columns={"label": "Finding"}).rows
    assert r["label"] == "COVID" and r["path"] == "a.mp4"
    with pytest.raises(UserError, match="has no column 'Diagnosis'"):
        metadata.read_csv(path, meta_required=True, columns={"label": "Diagnosis"})
    for bad in ("label", "colour=Red", "label="):
        with pytest.raises(UserError, match="use FIELD=HEADER"):
            metadata.parse_columns([bad])
    nofile = _csv(tmp_path / "n.csv", ["clip_no", "grade"], [["a.mp4", "x"]])
    with pytest.raises(UserError, match=r"expected a file column .*--column path=HEADER"):
        metadata.read_csv(nofile, meta_required=True)


def test_labels_differing_in_case_or_spacing_are_one_class(tmp_path, capsys):
    rows = [["a.mp4", "COVID-19"], ["b.mp4", " covid-19 "], ["c.mp4", "COVID-19"]]
    rows += [["d.mp4", "Regular"], ["e.mp4", "regular"], ["f.mp4", "regular"], ["g.mp4", ""]]
    index = metadata.MetaIndex(_csv(tmp_path / "m.csv", ["file", "diagnosis"], rows))
    assert [r["label"] for r in index.rows] == ["COVID-19"] * 3 + ["regular"] * 3 + [""]
    (note,) = [n for n in index.notes if n.startswith("labels")]
    assert "'COVID-19' ('covid-19')" in note and "'regular' ('Regular')" in note


def test_rows_join_by_name_without_extension_and_ambiguous_rows_are_unused(tmp_path):
    root = tmp_path / "clips"
    for rel in ("a/same.mp4", "b/same.mp4", "c/Clip One (2).GIF", "c/other.avi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not decoded by discover")
    rows = [
        ["Clip One (2)", "covid", "p1"],  # no extension, other case: by name
        ["same.mp4", "regular", "p2"],  # two files of that name: used for neither
        ["gone", "regular", "p3"],
    ]
    meta = _csv(tmp_path / "m.csv", ["File Name", "Class", "Subject"], rows)
    specs, skips = ingest.discover(root, meta)
    by_id = {s.video_id: s for s in specs}
    assert by_id["c/Clip One (2).GIF"].meta["label_name"] == "covid"
    assert by_id["c/Clip One (2).GIF"].meta["patient_id"] == "p1"
    assert not by_id["a/same.mp4"].has_metadata and not by_id["b/same.mp4"].has_metadata
    assert not by_id["c/other.avi"].has_metadata
    reasons = {s.source: s.reason for s in skips}
    assert reasons["same.mp4"].startswith("metadata row matches 2 files (a/same.mp4, b/same.mp4)")
    assert reasons["gone"] == metadata.NO_FILE


def test_folder_of_stills_is_one_clip_per_image_a_sequence_one_clip(tmp_path):
    rgb, _, _ = synth_clips.lus_clip(3, seed=0)
    synth_clips.write_frames(tmp_path / "seq", rgb)  # f0.png f1.png f2.png
    stills = tmp_path / "stills"
    stills.mkdir()
    for name, frame in zip(("Cov_blines_paper1.jpg", "Reg_alines_fig2.png"), rgb):
        synth_clips.Image.fromarray(frame).save(stills / name)
    specs, _ = ingest.discover(tmp_path)
    assert sorted(s.video_id for s in specs) == [
        "seq",
        "stills/Cov_blines_paper1.jpg",
        "stills/Reg_alines_fig2.png",
    ]
    store = ClipStore(tmp_path / "store")
    ingest.ingest(stills, store, size=32, progress=False)
    assert sorted(r["n_frames"] for r in store.records()) == [1, 1]


def test_many_rows_without_a_file_are_one_line(capsys):
    skips = [ingest.Skip(f"clip{i}", metadata.NO_FILE) for i in range(40)]
    skips.append(ingest.Skip("/x/bad.mp4", "empty file"))
    ingest._warn_skips(skips, "videos")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: skipped /x/bad.mp4: empty file",
        (
            "warning: skipped 40 metadata rows without a file under videos: clip0, clip1, "
            "clip2 ... (all in dataset.json under 'skipped')"
        ),
    ]
    info = {
        "total": {"clips": 1, "frames": 2, "bytes": 10},
        "image_shape": [8, 8, 1],
        "file_format": "array_record",
        "splits": {},
        "skipped": [{"source": s.source, "reason": s.reason} for s in skips],
    }
    text = write.summary_text(info, "out")
    assert "skipped 1 clip(s):\n    /x/bad.mp4: empty file" in text
    assert "40 metadata rows without a file (clip0, clip1, clip2, ...; see dataset.json)" in text


def test_a_duplicate_keeps_the_copy_that_has_metadata(tmp_path):
    rgb, _, _ = synth_clips.lus_clip(4, seed=3)
    (tmp_path / "clips").mkdir()
    synth_clips.write_video(tmp_path / "clips" / "a_copy.mp4", rgb)
    (tmp_path / "clips" / "b.mp4").write_bytes((tmp_path / "clips" / "a_copy.mp4").read_bytes())
    meta = _csv(tmp_path / "m.csv", ["path", "label"], [["b.mp4", "regular"]])
    store = ClipStore(tmp_path / "store")
    skips = ingest.ingest(tmp_path / "clips", store, metadata_csv=meta, size=32, progress=False)
    (rec,) = store.records()
    assert (rec["video_id"], rec["label_name"]) == ("b.mp4", "regular")
    assert [(Path(s.source).name, s.reason) for s in skips] == [
        ("a_copy.mp4", "duplicate of b.mp4 (same content)")
    ]


def test_prep_on_a_collection_with_other_names(tmp_path, capsys):
    """Spaces, parentheses, unicode and an upper-case extension in file names, nested
    folders, a zero-byte file, a CSV with another collection's columns and labels."""
    root = tmp_path / "videos"
    clips = {
        "convex/Cov clip (1).mp4": ("convex", 0),
        "convex/deep/Pneu_réunion.avi": ("convex", 1),
        "linear/REG_A.MP4": ("linear", 2),
        "linear/Reg b.mp4": ("linear", 3),
    }
    for rel, (probe, seed) in clips.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        rgb, _, _ = synth_clips.lus_clip(4, probe=probe, seed=seed)
        synth_clips.write_video(root / rel, rgb)
    (root / "linear" / "empty.mp4").write_bytes(b"")
    rows = [
        ["x", "Cov clip (1)", "COVID-19", "video", "convex", "7", "", "", "", "1", "", "", ""],
        ["x", "Pneu_réunion", " covid-19", "video", "Curved", "8", "", "1", "1", "", "", "", ""],
        ["x", "REG_A.mp4", "Regular", "video", "linear", "9", "", "", "", "", "1", "", ""],
        ["x", "not_here", "regular", "video", "linear", "10", "", "", "", "", "", "", ""],
    ]
    meta = _csv(tmp_path / "dataset_metadata.csv", BORN_HEADER, rows)
    out = tmp_path / "ds"
    argv = ["--input", str(root), "--metadata", str(meta), "--out", str(out), "--size", "32"]
    assert prep_cli.main([*argv, "--splits", "none"]) == 0
    err = capsys.readouterr().err
    assert "metadata columns of dataset_metadata.csv: path <- Filename" in err
    assert "1 clip(s) have no metadata row and are ingested unlabeled: linear/Reg b.mp4" in err
    info = json.loads((out / "dataset.json").read_text())
    assert info["class_names"] == ["COVID-19", "Regular"]
    clips_out = {c["video_id"]: c for c in info["splits"]["train"]["clips"]}
    assert set(clips_out) == set(clips)
    got = {k: (c["label_name"], c["patient_id"], c["probe"]) for k, c in clips_out.items()}
    assert got == {
        "convex/Cov clip (1).mp4": ("COVID-19", "7", "convex"),
        "convex/deep/Pneu_réunion.avi": ("COVID-19", "8", "convex"),
        "linear/REG_A.MP4": ("Regular", "9", "linear"),
        "linear/Reg b.mp4": ("", "linear/Reg b.mp4", "unknown"),
    }
    assert clips_out["convex/deep/Pneu_réunion.avi"]["findings"]["consolidation"] == 1
    assert {Path(s["source"]).name: s["reason"] for s in info["skipped"]} == {
        "empty.mp4": "empty file",
        "not_here": metadata.NO_FILE,
    }

    assert prep_cli.main([*argv, "--column", "label=Type"]) == 0  # another label column
    capsys.readouterr()
    info = json.loads((out / "dataset.json").read_text())
    assert info["class_names"] == ["video"]
    assert prep_cli.main([*argv, "--column", "label=Diagnosis"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lusjax: error: --column label=Diagnosis:") and "no column" in line


def test_pocus_dev_clips_with_the_collections_own_metadata_columns(tmp_path, capsys):
    """Two real clips by absolute path in a manifest named like the public collection's."""
    clips = [
        POCUS / "videos/convex/Cov-Atlas+(45).gif",
        POCUS / "videos/linear/Reg_Image_18122_crop.mp4",
    ]
    if not all(p.exists() for p in clips):
        pytest.skip("../shared/data/pocus_dev is not there")
    rows = [[str(clips[0]), "COVID-19", "36"], [str(clips[1]), "regular ", "50"]]
    manifest = _csv(tmp_path / "manifest.csv", ["File Name", "Diagnosis", "Patient"], rows)
    out = tmp_path / "ds"
    argv = ["--input", str(manifest), "--out", str(out), "--size", "32", "--splits", "none"]
    assert prep_cli.main(argv) == 0
    info = json.loads((out / "dataset.json").read_text())
    got = {
        c["video_id"]: (c["label_name"], c["patient_id"]) for c in info["splits"]["train"]["clips"]
    }
    assert got == {p.name: lab for p, lab in zip(clips, [("COVID-19", "36"), ("regular", "50")])}
    assert info["skipped"] == [] and info["ingest"]["label_column"] is True
