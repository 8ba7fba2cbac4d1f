"""The grain pipeline on a tiny written synthetic dataset: batch format, determinism,
exact resume (in memory and through orbax), eval iterators, errors, the bench.

The dataset (12 clips x 8 frames of 32x32) is written once per module (~2 s).
The 2-worker resume test spawns processes (~20 s here): marked slow.
"""

from __future__ import annotations

import json

import grain
import numpy as np
import pytest

from lusjax.app import bench_input
from lusjax.data import augment, pipeline
from lusjax.data.format import BATCH_KEYS
from lusjax.data.shards import open_split
from lusjax.errors import UserError

HOST = {"process_index": 0, "process_count": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from data_prep.write import write_synthetic

    path = tmp_path_factory.mktemp("lus") / "ds"
    write_synthetic(str(path), n_clips=12, n_frames=8, size=32, seed=0)
    return str(path)


@pytest.fixture(scope="module")
def source(data_dir):
    return open_split(data_dir, "train")


def cfg(**kw):
    c = pipeline.default_config()
    c.read_threads = 0
    c.update(kw)
    return c


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_training_batch_format_and_content(data_dir, source):
    it = pipeline.train_iterator(
        data_dir, "train", cfg(max_dt=2), global_batch_size=8, seed=0, **HOST
    )
    batch = next(it)
    assert tuple(sorted(batch)) == tuple(sorted(BATCH_KEYS))
    assert batch["view1"].dtype == np.uint8 and batch["view1"].shape == (8, 32, 32, 1)
    assert batch["view2"].shape == (8, 32, 32, 1)
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    clips = source.clips
    for i in range(8):
        rec = source[int(batch["index"][i])]
        np.testing.assert_array_equal(batch["view1"][i], rec["image"])  # view1 = record `index`
        c = clips.clip_of(int(batch["index"][i]))
        assert batch["label"][i] == clips.label[c] == rec["label"]
        # view2 is a frame of the same clip within max_dt of view1.
        lo, hi = (
            max(clips.start[c], batch["index"][i] - 2),
            min(clips.start[c] + clips.length[c] - 1, batch["index"][i] + 2),
        )
        assert any(
            np.array_equal(batch["view2"][i], source[j]["image"])
            for j in range(int(lo), int(hi) + 1)
        )


def test_max_dt_zero_gives_the_same_frame_twice(data_dir):
    it = pipeline.train_iterator(
        data_dir, "train", cfg(max_dt=0), global_batch_size=16, seed=1, **HOST
    )
    b = next(it)
    np.testing.assert_array_equal(b["view1"], b["view2"])


def test_same_seed_same_batches(data_dir):
    a = take(
        pipeline.train_iterator(data_dir, "train", cfg(), global_batch_size=8, seed=3, **HOST), 4
    )
    b = take(
        pipeline.train_iterator(
            data_dir, "train", cfg(read_threads=2), global_batch_size=8, seed=3, **HOST
        ),
        4,
    )
    assert_same(a, b)  # threads do not change the order
    c = next(pipeline.train_iterator(data_dir, "train", cfg(), global_batch_size=8, seed=4, **HOST))
    assert not np.array_equal(a[0]["index"], c["index"])


def test_resume_from_state_yields_the_identical_next_batches(data_dir):
    it = pipeline.train_iterator(data_dir, "train", cfg(), global_batch_size=8, seed=0, **HOST)
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # JSON-able, as checkpoints store it
    want = take(it, 12)  # crosses epoch boundaries (an epoch is ~56 samples = 7 batches)
    fresh = pipeline.train_iterator(data_dir, "train", cfg(), global_batch_size=8, seed=0, **HOST)
    fresh.set_state(state)
    assert_same(take(fresh, 12), want)


def test_resume_through_orbax_with_grain_checkpoint_handler(data_dir, tmp_path):
    """The recipe of pipeline's docstring: grain.checkpoint.CheckpointSave/Restore in orbax."""
    import orbax.checkpoint as ocp

    it = pipeline.train_iterator(data_dir, "train", cfg(), global_batch_size=8, seed=0, **HOST)
    take(it, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    want = take(it, 3)
    fresh = pipeline.train_iterator(data_dir, "train", cfg(), global_batch_size=8, seed=0, **HOST)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.restore(
            2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh))
        )
    assert_same(take(fresh, 3), want)


@pytest.mark.slow
def test_resume_with_two_workers(data_dir):
    kw = {"global_batch_size": 8, "seed": 0, **HOST}
    it = pipeline.train_iterator(data_dir, "train", cfg(workers=2), **kw)
    first = take(it, 3)
    state = it.get_state()
    want = take(it, 4)
    it.close()
    fresh = pipeline.train_iterator(data_dir, "train", cfg(workers=2), **kw)
    fresh.set_state(state)
    got = take(fresh, 4)
    fresh.close()
    assert_same(got, want)
    # Workers change nothing: the same batches as in-process decoding.
    assert_same(first + want, take(pipeline.train_iterator(data_dir, "train", cfg(), **kw), 7))


def test_hosts_get_disjoint_halves_of_the_global_batch(data_dir):
    per_host = [
        next(
            pipeline.train_iterator(
                data_dir,
                "train",
                cfg(max_dt=0),
                global_batch_size=16,
                seed=0,
                process_index=i,
                process_count=2,
            )
        )
        for i in range(2)
    ]
    assert all(b["view1"].shape[0] == 8 for b in per_host)
    assert not np.array_equal(per_host[0]["index"], per_host[1]["index"])
    with pytest.raises(UserError, match="multiple of the 2 host"):
        pipeline.train_iterator(
            data_dir, "train", cfg(), global_batch_size=7, seed=0, process_index=0, process_count=2
        )


def test_worker_side_augmentation(data_dir):
    aug = augment.default_config()
    aug.size = 24
    it = pipeline.train_iterator(
        data_dir,
        "train",
        cfg(worker_side_aug=True),
        global_batch_size=4,
        seed=0,
        aug_cfg=aug,
        **HOST,
    )
    b = next(it)
    assert b["view1"].dtype == np.float32 and b["view1"].shape == (4, 24, 24, 1)
    assert b["view1"].min() >= 0.0 and b["view2"].max() <= 1.0
    assert not np.array_equal(b["view1"], b["view2"])
    # The device step leaves such views alone.
    np.testing.assert_array_equal(augment.augment_batch(None, b["view1"], None, aug), b["view1"])
    with pytest.raises(UserError, match="worker_side_aug"):
        pipeline.train_iterator(
            data_dir, "train", cfg(worker_side_aug=True), global_batch_size=4, seed=0, **HOST
        )


def test_frames_iterator_reads_every_frame_once_in_order(data_dir, source):
    batches = list(pipeline.frames_iterator(data_dir, "train", 10))
    n = len(source)
    assert [len(b["index"]) for b in batches] == [10] * (n // 10) + ([n % 10] if n % 10 else [])
    index = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(index, np.arange(n))
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, np.repeat(source.clips.label, source.clips.length))
    videos = np.concatenate([b["video_id"] for b in batches])
    assert list(videos) == [
        v for v, k in zip(source.clips.video_id, source.clips.length) for _ in range(k)
    ]
    assert batches[0]["image"].dtype == np.uint8 and batches[0]["frame_idx"].dtype == np.int32
    np.testing.assert_array_equal(batches[-1]["image"][-1], source[n - 1]["image"])
    # Two hosts: contiguous halves that together are the split.
    halves = [
        np.concatenate(
            [
                b["index"]
                for b in pipeline.frames_iterator(
                    data_dir, "train", 7, process_index=i, process_count=2
                )
            ]
        )
        for i in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate(halves), np.arange(n))


def test_clips_yields_whole_clips(data_dir, source):
    clips = list(pipeline.clips(data_dir, "train"))
    assert [c["video_id"] for c in clips] == list(source.clips.video_id)
    for c, length, start in zip(clips, source.clips.length, source.clips.start):
        assert c["frames"].shape == (length, 32, 32, 1) and c["frames"].dtype == np.uint8
        np.testing.assert_array_equal(c["frames"][0], source[int(start)]["image"])
        assert c["frame_idx"].tolist() == list(range(length))
        assert set(c["findings"]) and c["probe"] in ("convex", "linear")


def test_in_memory_source_works_like_a_dataset(source):
    """Anything with .clips and [i] feeds the pipeline (e.g. a test double)."""

    class Memory:
        def __init__(self, src):
            self.clips, self.image_shape = src.clips, src.image_shape
            self.records = [src[i] for i in range(len(src))]

        def __len__(self):
            return len(self.records)

        def __getitem__(self, i):
            return self.records[i]

    mem = Memory(source)
    a = next(pipeline.train_iterator(mem, "train", cfg(), global_batch_size=8, seed=0, **HOST))
    b = next(pipeline.train_iterator(source, "train", cfg(), global_batch_size=8, seed=0, **HOST))
    assert_same([a], [b])
    assert sum(len(x["index"]) for x in pipeline.frames_iterator(mem, "train", 16)) == len(mem)


def test_bad_input_is_a_user_error(data_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        pipeline.train_iterator(
            str(tmp_path / "nope"), "train", cfg(), global_batch_size=8, seed=0, **HOST
        )
    with pytest.raises(UserError, match="No split 'dev'"):
        pipeline.frames_iterator(data_dir, "dev", 8)
    with pytest.raises(UserError, match="fewer than 9 frames"):
        pipeline.train_iterator(
            data_dir, "train", cfg(max_dt=10, min_dt=8), global_batch_size=8, seed=0, **HOST
        )


def test_bench_input_smoke(data_dir, capsys):
    assert (
        bench_input.main(
            [
                "--data-dir",
                data_dir,
                "--batch-size",
                "8",
                "--batches",
                "2",
                "--warmup",
                "1",
                "--aug-batches",
                "0",
                "--target-step-rate",
                "1",
            ]
        )
        == 0
    )
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["bench"] == "input" and rec["batches_per_s"] > 0 and rec["frames_per_s"] > 0
    assert isinstance(rec["can_feed"], bool)


def test_max_dt_seconds_on_a_written_dataset(data_dir):
    """data_prep records each clip's stored fps; the pipeline turns seconds into frames."""
    from lusjax.data import pairs

    src = open_split(data_dir, "train")
    assert np.all(src.clips.fps > 0)
    limit = np.floor(0.1 * src.clips.fps + 1e-6).astype(int)  # 0.1 s in frames, per clip
    ds = pairs.pair_batches(src.clips, seed=0, batch_size=64, max_dt=50, max_dt_s=0.1)
    b = ds[0]
    assert (np.abs(b["anchor"] - b["partner"]) <= limit[b["clip"]]).all()
    batch = next(
        pipeline.train_iterator(
            data_dir, "train", cfg(max_dt=50, max_dt_s=0.1), global_batch_size=32, seed=0, **HOST
        )
    )
    assert batch["view1"].shape[0] == 32
