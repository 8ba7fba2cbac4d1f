"""Writer + reader: frames come back bit-identical, in (clip, frame) order, by both readers."""

import itertools
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from data_prep import synthetic, write
from data_prep.clip import Clip
from data_prep.store import ClipStore
from lusjax.data import shards
from lusjax.data.format import FINDINGS
from lusjax.errors import UserError
from lusjax.layout import DATASET_JSON

N_CLIPS, N_FRAMES, SIZE, SEED = 24, 8, 64, 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 synthetic clips; a tiny shard size so train spans several shards."""
    out = tmp_path_factory.mktemp("ds")
    info = write.write_synthetic(out, N_CLIPS, N_FRAMES, SIZE, SEED, shard_mb=0.1)
    return out, info


@pytest.fixture(scope="module")
def clips():
    return {
        c.video_id: c
        for c in synthetic.generate_clips(N_CLIPS, N_FRAMES, SIZE, SEED, clips_per_patient=1)
    }


def test_summary_and_json(dataset):
    out, info = dataset
    on_disk = json.loads((out / DATASET_JSON).read_text())
    assert on_disk == info
    assert info["total"]["clips"] == N_CLIPS and info["total"]["frames"] == N_CLIPS * N_FRAMES
    assert info["class_names"] == list(synthetic.CLASS_NAMES)
    assert info["image_shape"] == [SIZE, SIZE, 1]
    assert len(info["splits"]["train"]["files"]) > 1  # sharded
    assert all((out / f).is_file() for s in info["splits"].values() for f in s["files"])
    assert "train" in info["summary"] and "skipped 0 clips" in info["summary"]
    assert shards.list_splits(out) == ["train", "val", "test"]


def test_frames_bit_identical_with_metadata(dataset, clips):
    out, _ = dataset
    seen = set()
    for split in shards.list_splits(out):
        src = shards.open_split(out, split)
        assert src.image_shape == (SIZE, SIZE, 1) and src.class_names == list(synthetic.CLASS_NAMES)
        for c, vid in enumerate(src.clips.video_id):
            clip = clips[vid]
            seen.add(vid)
            records = src.__getitems__(range(src.clips.start[c], src.clips.start[c] + N_FRAMES))
            np.testing.assert_array_equal(
                np.stack([r["image"][..., 0] for r in records]), clip.frames
            )
            r = records[3]
            assert r["image"].dtype == np.uint8 and r["image"].shape == (SIZE, SIZE, 1)
            assert (r["patient_id"], r["probe"], r["label_name"]) == (
                clip.patient_id,
                clip.probe,
                clip.label_name,
            )
            assert r["label"] == synthetic.CLASS_NAMES.index(clip.label_name) == src.clips.label[c]
            assert r["frame_idx"] == 3 and r["n_frames"] == N_FRAMES
            assert r["timestamp"] == pytest.approx(float(clip.timestamp[3]))
            assert {k: r[k] for k in FINDINGS} == clip.findings
            assert {k: int(src.clips.findings[k][c]) for k in FINDINGS} == clip.findings
    assert seen == set(clips)


def test_record_order_matches_dataset_json(dataset):
    out, info = dataset
    for split, entry in info["splits"].items():
        src = shards.open_split(out, split)
        expected = [(c["video_id"], k) for c in entry["clips"] for k in range(c["n_frames"])]
        got = [(r["video_id"], r["frame_idx"]) for r in src.__getitems__(range(len(src)))]
        assert got == expected
        assert [c["start"] for c in entry["clips"]] == list(src.clips.start)
        assert list(src.clips.clip_of(src.clips.start + 1)) == list(range(len(src.clips)))


def test_tfds_data_source_reads_the_same(dataset):
    import tensorflow_datasets as tfds

    out, info = dataset
    builder = tfds.builder_from_directory(os.fspath(out / info["tfds_dir"]))
    for split in info["splits"]:
        ours = shards.open_split(out, split)
        theirs = builder.as_data_source(split=split)
        assert len(theirs) == len(ours)
        for i in range(0, len(ours), 5):
            a, b = ours[i], theirs[i]
            np.testing.assert_array_equal(a["image"], b["image"])
            assert a["video_id"] == b["video_id"].decode() and a["frame_idx"] == b["frame_idx"]


def test_joined_splits_pickle_and_grain(dataset):
    import grain

    out, info = dataset
    src = shards.open_split(out, "val+test")
    assert len(src) == info["splits"]["val"]["n_frames"] + info["splits"]["test"]["n_frames"]
    assert src.clips.start[len(info["splits"]["val"]["clips"])] == info["splits"]["val"]["n_frames"]
    clone = pickle.loads(pickle.dumps(src))
    assert clone._source is None  # reopened lazily in the worker
    np.testing.assert_array_equal(clone[len(src) - 1]["image"], src[len(src) - 1]["image"])
    batch = next(iter(grain.MapDataset.source(src).batch(4)))
    assert batch["image"].shape == (4, SIZE, SIZE, 1) and batch["image"].dtype == np.uint8
    with pytest.raises(IndexError):
        src[len(src)]


def test_errors_are_user_errors(dataset, tmp_path):
    out, _ = dataset
    with pytest.raises(UserError, match="does not exist"):
        shards.open_split(tmp_path / "nope", "train")
    with pytest.raises(UserError, match="no dataset.json"):
        shards.open_split(tmp_path, "train")
    with pytest.raises(UserError, match="available: train, val, test"):
        shards.open_split(out, "validation")


def test_mismatched_index_and_damaged_shard(dataset, tmp_path):
    out, info = dataset
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    bad = json.loads((copy / DATASET_JSON).read_text())
    clips = bad["splits"]["train"]["clips"]
    clips[0], clips[-1] = clips[-1], clips[0]
    (copy / DATASET_JSON).write_text(json.dumps(bad))
    with pytest.raises(UserError, match="do not match"):
        shards.open_split(copy, "train")

    shard = copy / info["splits"]["test"]["files"][0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 500] = bytes(500)  # zero a stretch of records
    shard.write_bytes(bytes(data))
    src = shards.open_split(copy, "test", check=False)
    with pytest.raises(RuntimeError, match=str(shard)):
        for i in range(len(src)):
            src[i]


def test_write_dataset_skips_and_empty_splits(tmp_path):
    store = ClipStore(tmp_path / "store")
    for clip in synthetic.generate_clips(3, n_frames=2, size=32, seed=0, clips_per_patient=1):
        store.put(clip.video_id, clip)
    odd = Clip("odd", np.zeros((2, 16, 16), np.uint8), np.arange(2), np.zeros(2))
    store.put("odd", odd)
    info = write.write_dataset(
        store,
        tmp_path / "ds",
        splits="train=0.9,val=0.1",
        image_size=32,
        skipped=[{"source": "x.mp4", "reason": "no fan found"}],
        verbose=False,
    )
    assert info["total"]["clips"] == 3 and info["empty_splits"] == ["val"]
    reasons = {s["source"]: s["reason"] for s in info["skipped"]}
    assert reasons["x.mp4"] == "no fan found" and "16x16" in reasons["odd"]
    assert "no fan found" in info["summary"]
    with pytest.raises(UserError, match="empty"):
        shards.open_split(tmp_path / "ds", "val")
    raw = write.write_dataset(store, tmp_path / "raw", splits=None, image_size=32, verbose=False)
    assert list(raw["splits"]) == ["train"] and raw["class_names"] == sorted(synthetic.CLASS_NAMES)
    with pytest.raises(UserError, match="No usable clips"):
        write.write_dataset(ClipStore(tmp_path / "empty"), tmp_path / "none", verbose=False)


def test_tfrecord_needs_tensorflow(tmp_path):
    if write._has_tensorflow():
        pytest.skip("TensorFlow is installed")
    store = ClipStore(tmp_path / "store")
    clip = next(synthetic.generate_clips(1, n_frames=2, size=32))
    store.put(clip.video_id, clip)
    with pytest.raises(UserError, match="TensorFlow"):
        write.write_dataset(store, tmp_path / "ds", file_format="tfrecord", verbose=False)


def test_cli_synthetic(tmp_path, capsys):
    from data_prep import cli

    out = tmp_path / "cli"
    argv = "--synthetic 6 --frames 3 --size 32 --splits train=0.5,test=0.5 --seed 1 --preview"
    assert cli.main([*argv.split(), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 clips, 18 frames of 32x32" in printed and str(out.resolve()) in printed
    assert shards.list_splits(out) == ["train", "test"]
    assert len(shards.open_split(out, "train+test")) == 18
    assert (out / "preview.png").stat().st_size > 1000
    assert cli.main(["--out", str(out)]) == 2  # neither --synthetic nor --input
    assert "exactly one of" in capsys.readouterr().err
    assert cli.main(["--synthetic", "4", "--out", str(out), "--splits", "a=2"]) == 2


def test_record_keys_keep_order_past_tfds_memory_buffer():
    """Big splits go through TFDS's 1000 disk buckets: keys must map there in order too."""
    from tensorflow_datasets.core import shuffle

    from data_prep.lus_frames import lus_frames_builder

    keys = lus_frames_builder.record_keys(100_003)
    assert all(a < b for a, b in itertools.pairwise(keys)) and keys[-1] < 2**128
    buckets = [shuffle.get_bucket_number(k, shuffle.BUCKETS_NUMBER) for k in keys]
    assert buckets == sorted(buckets) and len(set(buckets)) == shuffle.BUCKETS_NUMBER


@pytest.mark.slow
def test_write_synthetic_workers_match_one_process(tmp_path):
    one = write.write_synthetic(tmp_path / "one", 16, 2, 32, seed=2)
    two = write.write_synthetic(tmp_path / "two", 16, 2, 32, seed=2, workers=2)
    assert one["splits"] == two["splits"]  # same clips, order, shards (paths are relative)
    a, b = (
        shards.open_split(tmp_path / "one", "train"),
        shards.open_split(tmp_path / "two", "train"),
    )
    assert all(np.array_equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """10 tiny synthetic clips in 5 folds, as `lusjax prep --folds 5` writes them."""
    out = tmp_path_factory.mktemp("folds")
    write.write_synthetic(out, 10, 2, 16, 0, splits=5)
    return out


def test_splits_join_with_plus_or_comma(folds):
    plus = shards.open_split(folds, "fold0+fold1+fold2")
    comma = shards.open_split(folds, "fold0, fold1,fold2")
    assert plus.clips.video_id == comma.clips.video_id and len(plus) == len(comma) > 0


def test_a_missing_split_names_the_setting_and_the_available_splits(folds):
    with pytest.raises(UserError) as e:
        shards.open_split(folds, "train")
    msg = str(e.value)
    assert "No split 'train'" in msg and "available: fold0, fold1, fold2, fold3, fold4" in msg
    assert "set --config.data.train_split=fold0+fold1 (join several with + or ,)" in msg
    with pytest.raises(UserError, match="set --config.test_split="):
        from lusjax.eval import features

        features.load(folds, "fold9", setting="--config.test_split")


def test_train_names_the_setting_of_a_missing_split(folds, tmp_path, capsys):
    """prep --folds 5 writes no 'train': training with the default split says which key
    to set (the README's flow sets it; test_readme_commands runs that)."""
    from lusjax import cli

    config = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart.py")
    base = [
        "train",
        "--config",
        config,
        f"--config.data.data_dir={folds}",
        f"--config.workdir={tmp_path / 'run'}",
    ]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "No split 'train'" in err and "--config.data.train_split=" in err
    assert len(err.strip().splitlines()) == 1
