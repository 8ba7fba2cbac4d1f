"""`lusjax study` end to end on tiny synthetic data, its leakage gates, and its statistics."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lusjax import cli
from lusjax.eval import splits, stats

# ---------------------------------------------------------------------------
# Statistics (lusjax/eval/stats.py).
# ---------------------------------------------------------------------------


def _predictions(n, accuracy, k=3, seed=0):
    """Labels and probabilities that are right for about `accuracy` of the clips."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    right = rng.random(n) < accuracy
    pred = np.where(right, y, (y + 1) % k)
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), pred] = 0.8
    return y, probs


def test_weighted_metrics_equal_sklearn_and_resampled_lists():
    from sklearn import metrics as skm

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    assert stats.accuracy(y, probs) == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert stats.balanced_accuracy(y, probs) == pytest.approx(
        skm.balanced_accuracy_score(y, probs.argmax(1))
    )
    assert stats.roc_auc(y, probs) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    # A weight vector is the same as the list with each clip repeated that many times.
    w = rng.integers(0, 3, 40)
    w[:3] = 1  # keep every class present
    rep = np.repeat(np.arange(40), w)
    assert stats.balanced_accuracy(y, probs, w[None])[0] == pytest.approx(
        skm.balanced_accuracy_score(y[rep], probs[rep].argmax(1))
    )
    assert stats.roc_auc(y, probs, w[None])[0] == pytest.approx(
        skm.roc_auc_score(y[rep], probs[rep], multi_class="ovr")
    )


def test_grouped_resampling_keeps_a_patients_clips_together():
    groups = np.repeat([f"p{i}" for i in range(10)], 3)  # 10 patients of 3 clips
    w = stats.group_weights(groups, 500, seed=0)
    assert w.shape == (500, 30)
    assert (w.reshape(500, 10, 3) == w.reshape(500, 10, 3)[:, :, :1]).all()
    assert (w.sum(1) == 30).all()  # 10 patients drawn, 3 clips each


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (40, 400):
        y, probs = _predictions(n, 0.7)
        w = stats.group_weights(np.arange(n), 1000, seed=0)
        s = stats.summarize(y, [probs], w)
        for m in stats.METRICS:
            lo, hi = s[m]["ci"]
            assert lo <= s[m]["value"] <= hi
        widths.append(s["balanced_accuracy"]["ci"][1] - s["balanced_accuracy"]["ci"][0])
    assert widths[1] < widths[0] / 2


def test_paired_bootstrap_separates_better_from_identical():
    y, good = _predictions(120, 0.9, seed=1)
    _, bad = _predictions(120, 0.4, seed=2)
    w = stats.group_weights(np.arange(120) // 2, 1000, seed=0)
    better = stats.paired_bootstrap(y, [good], [bad], w)
    assert better["difference"] > 0.3 and better["p"] < 0.05
    assert better["ci"][0] > 0
    same = stats.paired_bootstrap(y, [good], [good.copy()], w)
    assert same["difference"] == 0 and same["p"] > 0.05


def test_mcnemar_exact_against_hand_computed_values():
    # b = 5 (A only right), c = 1: p = 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * 7/64.
    a = np.array([1] * 5 + [0] * 1 + [1] * 4 + [0] * 2, bool)
    b = np.array([0] * 5 + [1] * 1 + [1] * 4 + [0] * 2, bool)
    res = stats.mcnemar_exact(a, b)
    assert (res["a_only"], res["b_only"]) == (5, 1)
    assert res["p"] == pytest.approx(14 / 64)
    assert stats.mcnemar_exact(a, a)["p"] == 1.0  # no discordant pair
    # b = 3, c = 3: p = min(1, 2 * P(X <= 3)), X ~ Bin(6, 1/2) -> 1.
    assert stats.mcnemar_exact([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])["p"] == 1.0


# ---------------------------------------------------------------------------
# Pieces: data.clips_file, the recipe's method switch, thin-class notes.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """18 synthetic clips, 3 per patient, classes regular / b_lines / consolidation."""
    from data_prep.write import write_synthetic

    path = tmp_path_factory.mktemp("study_data") / "syn"
    write_synthetic(str(path), n_clips=18, n_frames=6, size=32, seed=0, clips_per_patient=3)
    return str(path)


def _extra_data(path, start: int, clips_per_patient: int, n_clips: int = 3) -> str:
    """Synthetic clips start.. of the same corpus (ids c{start}..; patient index // cpp)."""
    from data_prep.write import write_synthetic

    write_synthetic(
        str(path),
        n_clips=n_clips,
        n_frames=6,
        size=32,
        seed=0,
        start=start,
        clips_per_patient=clips_per_patient,
    )
    return str(path)


def test_clips_file_restricts_training_pairs(tiny_data, tmp_path):
    import ml_collections

    from lusjax.data import pipeline
    from lusjax.data.shards import list_splits, open_split
    from lusjax.errors import UserError

    src = open_split(tiny_data, "+".join(list_splits(tiny_data)))
    keep = list(src.clips.video_id[::3])
    (tmp_path / "keep.json").write_text(json.dumps(keep))
    cfg = pipeline.default_config()
    cfg.clips_file = str(tmp_path / "keep.json")
    table = pipeline.train_clips(src, cfg)
    assert list(table.video_id) == keep
    ds = pipeline.train_dataset(
        src, "all", cfg, global_batch_size=16, seed=0, process_index=0, process_count=1
    )
    for k in range(3):  # every view comes from a kept clip
        batch = ds[k]
        clips = src.clips.clip_of(batch["index"])
        assert set(np.asarray(src.clips.video_id)[clips]) <= set(keep)
    (tmp_path / "bad.json").write_text(json.dumps(["no/such/clip"]))
    bad = ml_collections.ConfigDict(cfg.to_dict())
    bad.clips_file = str(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not in the training split"):
        pipeline.train_clips(src, bad)


def test_concat_source_reads_both_datasets(tiny_data, tmp_path):
    from lusjax.data.shards import ConcatSource, open_split

    extra_dir = _extra_data(tmp_path / "extra", 18, 3)
    a, b = open_split(tiny_data, "train"), open_split(extra_dir, "train")
    src = ConcatSource([a, b], unlabelled=[False, True])
    assert len(src) == len(a) + len(b) and len(src.clips) == len(a.clips) + len(b.clips)
    assert (src.clips.label[len(a.clips) :] == -1).all()
    assert (src.clips.label[: len(a.clips)] == a.clips.label).all()
    last = len(a) + int(b.clips.start[-1])  # the first frame of b's last clip
    got = src.__getitems__([0, last, len(a) - 1])
    assert got[1]["video_id"] == b.clips.video_id[-1]
    np.testing.assert_array_equal(got[1]["image"], b[int(b.clips.start[-1])]["image"])
    assert (
        got[0]["video_id"] == a[0]["video_id"] and got[2]["video_id"] == a[len(a) - 1]["video_id"]
    )


def test_recipe_method_switch_under_train():
    from lusjax import config as config_lib

    cfg = config_lib.load(
        "configs/study.py", [("train.method", "byol"), ("train.ssl.pred_hidden_dim", "64")]
    )
    assert cfg.train.method == "byol" and cfg.train.ssl.pred_hidden_dim == 64
    assert cfg.train.model.name == "resnet18" and cfg.train.image_size == 128
    assert (
        config_lib.load("configs/study.py:lus_simclr:mnv3s").train.model.name == "mobilenetv3_small"
    )


def test_thin_and_missing_classes_are_notes():
    from lusjax import study

    strat = np.array([0, 0, 0, 0, 1, 1, 2])
    folds = [
        splits.Fold(np.array([0, 1, 4, 6]), np.array([2, 3, 5])),
        splits.Fold(np.array([2, 3, 5]), np.array([0, 1, 4, 6])),
    ]
    notes = study.fold_class_notes(folds, [0, 1], strat, ["a", "b", "c"])
    assert "fold 0: class 'b' has 1 training clip(s) (< 2): " in notes[0] or any(
        n.startswith("fold 0: class 'b' has 1 training clip(s)") for n in notes
    )
    assert any(n.startswith("fold 0: no test clip of class 'c'") for n in notes)
    assert any(n.startswith("fold 1: class 'c' has 0 training clip(s)") for n in notes)


# ---------------------------------------------------------------------------
# The whole study, in-process through the CLI.
# ---------------------------------------------------------------------------

TINY = [
    "--config.train.total_steps=2",
    "--config.train.batch_size=8",
    "--config.train.image_size=32",
    "--config.train.model.name=resnet_tiny",
    "--config.train.model.dtype=float32",
    "--config.train.data.workers=0",
    "--config.train.data.max_dt_s=0",
    "--config.train.ssl.proj_hidden_dim=32",
    "--config.train.ssl.proj_dim=16",
    "--config.train.log_every=1",
    *[
        f"--config.train.aug.us.{k}=0"
        for k in ("zoom_prob", "speckle_prob", "shadow_prob", "tgc_prob", "wedge_prob")
    ],
    "--config.folds=2",
    "--config.label_fractions=(0.5,1.0)",
    "--config.seeds=1",
    "--config.frames_per_clip=3",
    "--config.exclude_classes=consolidation",
    "--config.finetune.steps=2",
    "--config.finetune.batch_size=8",
    "--config.finetune.lrs=(1e-3,)",
    "--config.linear.steps=10",
    "--config.pixels.steps=10",
    "--config.pixels.size=8",
    "--config.bootstrap=100",
    "--config.progress=false",
    "--config.plots.embeddings=false",
]


def _study(data, out, *extra):
    return cli.main(
        [
            "study",
            "--config",
            "configs/study.py",
            f"--config.data_dir={data}",
            f"--config.out_dir={out}",
            *TINY,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def study_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("study_out")
    assert _study(tiny_data, out) == 0
    return out


def test_study_end_to_end(study_run, capsys):
    out = study_run
    for name in ("study.json", "study.md", "label_efficiency_label.png", "carbon_break_even.png"):
        assert (out / name).is_file(), name
    res = json.loads((out / "study.json").read_text())
    assert res["dataset"]["n_clips"] == 12  # consolidation excluded
    assert res["dataset"]["clips_per_class"] == {"label": {"regular": 6, "b_lines": 6}}
    assert any("'consolidation' excluded" in n for n in res["notes"])
    assert [f["run"] for f in res["folds"]] == [True, True]
    rows = {(r["encoder"], r["protocol"]) for r in res["pooled"]}
    assert rows == {
        ("ssl", "linear"),
        ("ssl", "knn"),
        ("ssl", "finetune"),
        ("random-init", "linear"),
        ("random-init", "knn"),
        ("scratch", "finetune"),
        ("pixels", "pixels"),
    }
    for r in res["pooled"]:
        ba = r["balanced_accuracy"]
        assert ba["ci"][0] <= ba["value"] <= ba["ci"][1]
    assert {(t["ssl_protocol"], t["fraction"]) for t in res["paired_tests"]} == {
        (p, f) for p in ("linear", "knn", "finetune") for f in (0.5, 1.0)
    }
    for t in res["paired_tests"]:
        assert 0 < t["p"] <= 1 and 0 < t["mcnemar"]["p"] <= 1
    phases = {p["phase"] for p in res["carbon"]["phases"]}
    assert phases == {"pretrain", "eval", "finetune", "supervised"}
    assert res["carbon"]["runs"] == {"finetune": 4, "supervised": 4}
    be = res["carbon"]["break_even"]
    assert be["pretrain_kg"] > 0 and be["supervised_kg"] > 0
    md = (out / "study.md").read_text()
    assert "SSL vs scratch" in md and "Break-even" in md and "'consolidation' excluded" in md


def test_pretraining_never_sees_the_test_fold(study_run, tiny_data):
    res = json.loads((study_run / "study.json").read_text())
    info = json.loads((Path(tiny_data) / "dataset.json").read_text())
    excluded = {
        c["video_id"]
        for s in info["splits"].values()
        for c in s["clips"]
        if c["label_name"] == "consolidation"
    }
    assert len(excluded) == 6
    for fold in res["folds"]:
        seen = splits.read_pretraining(study_run / f"fold{fold['fold']}" / "pretrain")
        assert seen is not None and set(seen["video_id"]) == set(fold["train"])
        assert not set(seen["video_id"]) & set(fold["test"])
        assert not set(seen["patient_id"]) & set(fold["test_patients"])
        assert not set(seen["video_id"]) & excluded  # nor the excluded class


def test_rerun_skips_finished_folds(study_run, tiny_data, capsys):
    marks = {p: os.stat(p).st_mtime_ns for p in study_run.glob("fold*/*.json")}
    capsys.readouterr()
    assert _study(tiny_data, study_run) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 2 and "pretraining " not in printed
    assert {p: os.stat(p).st_mtime_ns for p in study_run.glob("fold*/*.json")} == marks
    assert "results written to" in printed


def test_leaking_pretrain_data_is_refused(study_run, tiny_data, capsys):
    # The study's own dataset as "extra" pretraining data: every test clip is in it.
    assert _study(tiny_data, study_run, f"--config.pretrain_data={tiny_data}") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("lusjax: error: pretrain_data")
    assert "overlaps fold 0's test set" in err


def test_pretrain_data_sharing_only_a_patient_is_refused(study_run, tiny_data, tmp_path, capsys):
    info = json.loads((Path(tiny_data) / "dataset.json").read_text())
    kept = sorted(
        {
            int(c["patient_id"][-5:])
            for s in info["splits"].values()
            for c in s["clips"]
            if c["label_name"] != "consolidation"
        }
        - {0}
    )
    patient = kept[0]  # a new clip (index 18 * patient >= 18) of a study patient
    extra = _extra_data(tmp_path / "extra", 18 * patient, 18, n_clips=1)
    assert _study(tiny_data, study_run, f"--config.pretrain_data={extra}") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1 test patient(s): synthetic/p" in err
    assert "test clip(s)" not in err


def test_pretrain_data_joins_every_folds_pretraining(tiny_data, tmp_path, capsys):
    extra = _extra_data(tmp_path / "extra", 18, 3)  # clips 18-20: patient 6, new
    out = tmp_path / "out"
    assert (
        _study(
            tiny_data,
            out,
            f"--config.pretrain_data={extra}",
            "--config.run_folds=1",
            "--config.protocols=linear",
            "--config.baselines=",
        )
        == 0
    )
    seen = splits.read_pretraining(out / "fold1" / "pretrain")
    assert {"synthetic/p00006/c000018", "synthetic/p00006/c000020"} <= set(seen["video_id"])
    res = json.loads((out / "study.json").read_text())
    assert [f["run"] for f in res["folds"]] == [False, True]
    assert any("only folds 1 of 2 were run" in n for n in res["notes"])
    assert not set(seen["video_id"]) & set(res["folds"][1]["test"])
    assert not (out / "fold0").exists()
    assert "folds run: 1 of 2" in (out / "study.md").read_text()
    assert "no SSL vs scratch comparison" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.run_folds=0,5", "run_folds 5"),
        ("--config.baselines=scratch,imagenet", "unknown baseline imagenet"),
        ("--config.protocols=linear,svm", "unknown protocol svm"),
    ],
)
def test_bad_study_settings_are_one_line_errors(tiny_data, tmp_path, capsys, override, message):
    assert _study(tiny_data, tmp_path, override) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
