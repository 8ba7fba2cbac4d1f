"""Evaluation: splits and leakage, probes, kNN, metrics, the protocol end to end, predict."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from lusjax.errors import UserError
from lusjax.eval import features, knn, linear, metrics, mlp, splits


def _clips(n=40, n_classes=4, seed=0, patients=True):
    rng = np.random.default_rng(seed)
    ids = np.array([f"clip{i:03d}" for i in range(n)])
    labels = rng.integers(0, n_classes, n)
    # Several clips per patient, all with the patient's label.
    pat = np.array([f"pat{i // 3}" for i in range(n)]) if patients else ids.copy()
    for p in np.unique(pat):
        labels[pat == p] = labels[pat == p][0]
    return ids, pat, labels


# ---------------------------------------------------------------------------
# Splits.
# ---------------------------------------------------------------------------


def test_kfold_keeps_clips_and_patients_on_one_side():
    ids, pat, labels = _clips()
    groups = splits.groups_of(ids, pat)
    folds, _ = splits.kfold(labels, groups, k=5, seed=0)
    assert len(folds) == 5
    frame_clip = np.repeat(np.arange(len(ids)), 7)  # 7 frames per clip
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(ids)))  # every clip tested exactly once
    for f in folds:
        assert not set(ids[f.train]) & set(ids[f.test])
        assert not set(pat[f.train]) & set(pat[f.test])
        tr, te = splits.frames_of(frame_clip, f.train), splits.frames_of(frame_clip, f.test)
        assert not set(frame_clip[tr]) & set(frame_clip[te])  # no clip's frames on both sides
        splits.check_disjoint(f.train, f.test, ids, pat)


def _as_sets(folds, names):
    return sorted(tuple(sorted(names[f.test])) for f in folds)


def test_kfold_deterministic_and_order_independent():
    ids, pat, labels = _clips()
    groups = splits.groups_of(ids, pat)
    a, _ = splits.kfold(labels, groups, 5, seed=3)
    b, _ = splits.kfold(labels, groups, 5, seed=3)
    c, _ = splits.kfold(labels, groups, 5, seed=4)
    assert _as_sets(a, ids) == _as_sets(b, ids)
    assert _as_sets(a, ids) != _as_sets(c, ids)
    perm = np.random.default_rng(1).permutation(len(ids))
    d, _ = splits.kfold(labels[perm], groups[perm], 5, seed=3)
    assert _as_sets(d, ids[perm]) == _as_sets(a, ids)


def test_kfold_degrades_gracefully_on_tiny_classes():
    # pocus_dev-like: 4 classes, one with only 2 clips, 5 folds.
    labels = np.array([0] * 12 + [1] * 10 + [2] * 2 + [3] * 12)
    ids = np.array([f"c{i}" for i in range(len(labels))])
    # Notes, returned for results.md and the console, never raw Python warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds, notes = splits.kfold(labels, ids, 5, 0, ["covid", "bact", "viral", "regular"])
        assert len(folds) == 5 and any("'viral' has 2" in n for n in notes)
        assert sum(np.isin(2, labels[f.test]) for f in folds) == 2
        folds, notes = splits.kfold(np.array([0, 1, 0]), np.array(["a", "b", "c"]), 5)
        assert len(folds) == 3 and any("using 3 folds" in n for n in notes)  # few groups
        folds, notes = splits.kfold(np.array([0, 1, 2, 3]), np.array(list("abcd")), 2)
        assert len(folds) == 2 and any("not stratified" in n for n in notes)


def test_label_fraction_counts_clips_not_frames():
    _, _, labels = _clips(n=60, n_classes=3)
    train = np.arange(60)
    # Wildly different clip lengths: a frame-based fraction would differ a lot.
    lengths = np.where(np.arange(60) % 2 == 0, 400, 4)
    frame_clip = np.repeat(np.arange(60), lengths)
    for fraction in (0.01, 0.1, 0.5):
        sub = splits.label_fraction(train, labels, fraction, seed=0)
        want = sum(max(1, round(fraction * (labels == c).sum())) for c in range(3))
        assert len(sub) == want  # counted in clips
        assert set(np.unique(labels[sub])) == {0, 1, 2}  # every class kept
        n_frames = len(splits.frames_of(frame_clip, sub))
        assert n_frames == lengths[sub].sum()  # whole clips, all their frames
    assert np.array_equal(
        splits.label_fraction(train, labels, 0.1, 5), splits.label_fraction(train, labels, 0.1, 5)
    )
    assert not np.array_equal(
        splits.label_fraction(train, labels, 0.5, 5), splits.label_fraction(train, labels, 0.5, 6)
    )
    assert np.array_equal(splits.label_fraction(train, labels, 1.0, 0), train)
    # On tiny data 1% and 10% both mean "one clip per class": the report says so.
    from lusjax.eval import protocol

    few = np.array([0] * 5 + [1] * 5)
    notes = protocol.fraction_notes(
        [splits.Fold(np.arange(10), np.array([]))], few, [0.01, 0.1, 1.0]
    )
    assert len(notes) == 1 and "1% and 10%" in notes[0]


def test_leakage_gate_names_overlapping_ids():
    ids = np.array(["a", "b", "c", "d"])
    pat = np.array(["p1", "p1", "p2", "d"])  # "d": patient unknown (= clip id)
    with pytest.raises(UserError, match="clip.*: b"):
        splits.check_disjoint(np.array([0, 1]), np.array([1, 2]), ids, pat)
    with pytest.raises(UserError, match="patient.*: p1"):
        splits.check_disjoint(np.array([0]), np.array([1, 2]), ids, pat)
    splits.check_disjoint(np.array([0, 1]), np.array([2, 3]), ids, pat)


# ---------------------------------------------------------------------------
# Probes and kNN.
# ---------------------------------------------------------------------------


def _blobs(n, k=3, d=16, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 2
    y = rng.integers(0, k, n)
    return (centers[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


def test_probes_reach_100_on_separable_features():
    x, y = _blobs(300, spread=0.05)
    xt, yt = _blobs(200, spread=0.05, seed=0)
    for fit in (linear.fit_predict, mlp.fit_predict, knn.fit_predict):
        p = fit(x, y, xt, 3)
        assert p.shape == (200, 3)
        np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
        assert (p.argmax(1) == yt).mean() >= 0.99, fit


def test_jax_and_sklearn_linear_probes_agree():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 32)) * 0.4  # overlapping classes: ~80% accuracy
    y, yt = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
    x = centers[y] + rng.normal(size=(400, 32))
    xt = centers[yt] + rng.normal(size=(400, 32))
    p_jax = linear.fit_predict(x, y, xt, 4, l2=1e-2)
    p_sk = linear.sklearn_probe(x, y, xt, 4, l2=1e-2)
    acc_jax, acc_sk = (p_jax.argmax(1) == yt).mean(), (p_sk.argmax(1) == yt).mean()
    assert 0.5 < acc_sk < 0.99
    assert abs(acc_jax - acc_sk) <= 0.03
    assert (p_jax.argmax(1) == p_sk.argmax(1)).mean() >= 0.95
    assert np.abs(p_jax - p_sk).max() < 0.1  # same objective, same optimum


def test_knn_cosine_temperature_votes_by_hand():
    # Train points on the unit circle at 0, 10, 90 degrees (classes 0, 0, 1), scaled
    # arbitrarily (cosine ignores norms). Query at 30 degrees.
    ang = np.deg2rad([0, 10, 90])
    train = np.stack([np.cos(ang), np.sin(ang)], 1) * np.array([[1], [5], [0.2]])
    y = np.array([0, 0, 1])
    q = np.array([[np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))]]) * 3
    t = 0.5
    sims = np.cos(np.deg2rad([30, 20, 60]))
    w = np.exp(sims / t)
    want = np.array([w[0] + w[1], w[2]]) / w.sum()
    np.testing.assert_allclose(
        knn.fit_predict(train, y, q, 2, k=3, temperature=t)[0], want, rtol=1e-5
    )
    # k=2 keeps the two most similar (10 and 0 degrees), both class 0.
    np.testing.assert_allclose(
        knn.fit_predict(train, y, q, 2, k=2, temperature=t)[0], [1, 0], atol=1e-6
    )
    # A colder temperature sharpens towards the nearest neighbour's class.
    p_cold = knn.fit_predict(train, y, q, 2, k=3, temperature=0.05)[0]
    assert p_cold[0] > want[0]


def _eval_config(**overrides):
    from lusjax import config as config_lib

    return config_lib.load("configs/eval.py", [(k, str(v)) for k, v in overrides.items()])


def test_evaluators_by_name_one_contract():
    from lusjax.eval import evaluators, protocol

    for name in evaluators.NAMES:
        assert evaluators.get(name).name == name
    with pytest.raises(UserError, match="unknown evaluator 'linaer'; did you mean linear"):
        evaluators.get("linaer")
    with pytest.raises(UserError, match="unknown protocol knnn; did you mean knn"):
        protocol.parse_protocols("linear,knnn")

    # 6 clips x 10 frames, clip labels 0 1 2 0 1 2 with separable features; a finding
    # known for the first two clips only, always present (nothing to learn).
    label = np.repeat([0, 1, 2, 0, 1, 2], 10)
    x = _blobs(60, spread=0.05)[0] + np.eye(3, 16, dtype=np.float32)[label] * 10
    findings = np.full((60, len(features.FINDINGS)), -1)
    findings[:20, 0] = 1
    data = features.from_arrays(
        np.repeat(list("abcdef"), 10), label, ["x", "y", "z"], findings=findings
    )
    finding = features.FINDINGS[0]
    tasks = {"label": 3, finding: 2}
    train = evaluators.Inputs(data, np.arange(30), tasks, features=x)
    test = evaluators.Inputs(data, np.arange(30, 60), tasks, features=x)
    every = evaluators.Inputs(data, np.arange(60), tasks, features=x)
    cfg = _eval_config(**{"linear.steps": 50, "mlp.steps": 50})
    for name in ("linear", "sklearn", "mlp", "knn"):
        ev = evaluators.get(name)
        probs = ev.score(ev.fit(train, cfg, 0), every)
        assert probs["label"].shape == (60, 3)
        assert (probs["label"].argmax(1) == label).all(), name
        np.testing.assert_array_equal(probs[finding], np.eye(2)[[1] * 20])  # the class seen
        # No labelled test frame for the finding: a per-task evaluator does not fit it.
        scored, info = evaluators.fit_score(ev, train, test, cfg, 0)
        assert set(scored) == {"label"} and info == {}
        te, p = scored["label"]
        np.testing.assert_array_equal(te, np.arange(30, 60))
        np.testing.assert_allclose(p, probs["label"][30:], atol=1e-6)


def test_plan_is_every_fit_as_data():
    from lusjax.eval import protocol

    ids = np.array([f"c{i}" for i in range(12)])
    data = features.from_arrays(ids, np.arange(12) % 2, ["a", "b"])
    strat = data.clips.label
    folds, _ = splits.kfold(strat, ids, 3, 0)
    cfg = _eval_config(seeds=3, label_fractions="(0.5, 1.0)", **{"finetune.seeds": 1})
    protocols = ["finetune", "knn", "linear"]
    jobs = protocol.plan(cfg, protocols, ["pretrained", "random-init"], folds, strat, data)
    count = {}
    for j in jobs:
        count[j.evaluator] = count.get(j.evaluator, 0) + 1
    # encoders x folds x fractions x seeds; fine-tuning 1 seed; the cross-check at 100%, seed 0
    assert count == {"knn": 36, "linear": 36, "finetune": 12, "sklearn": 6}
    first = [
        j.evaluator
        for j in jobs
        if (j.encoder, j.fold, j.fraction, j.seed) == ("pretrained", 0, 1.0, 0)
    ]
    assert first == ["knn", "linear", "sklearn", "finetune"]  # per-task ones, then joint
    for j in jobs:
        assert not set(j.train) & set(j.test)
        assert set(j.train) <= set(folds[j.fold].train)


# ---------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------


def test_metrics_clip_level_and_missing_class():
    names = ["a", "b", "c"]
    # Three clips of two frames; class "c" absent from this test set.
    probs = np.array(
        [
            [0.9, 0.1, 0],
            [0.3, 0.7, 0],
            [0.2, 0.8, 0],
            [0.4, 0.6, 0],
            [0.6, 0.3, 0.1],
            [0.6, 0.2, 0.2],
        ]
    )
    labels = np.array([0, 0, 1, 1, 0, 0])
    clip = np.array([0, 0, 1, 1, 2, 2])
    m = metrics.evaluate(probs, labels, clip, names)
    cp, cl, ids = metrics.clip_probs(probs, clip, labels)
    np.testing.assert_allclose(cp[0], [0.6, 0.4, 0])  # mean of frame probabilities
    assert list(cl) == [0, 1, 0] and list(ids) == [0, 1, 2]
    assert m["clip"]["accuracy"] == 1.0 and m["frame"]["accuracy"] == 5 / 6
    assert math.isnan(m["clip"]["per_class"]["c"]["roc_auc"])
    assert math.isnan(m["clip"]["per_class"]["c"]["recall"])
    assert m["clip"]["per_class"]["a"]["roc_auc"] == 1.0
    assert any("absent" in n for n in m["clip"]["notes"])
    assert np.array(m["frame"]["confusion_matrix"]).sum() == 6
    one = metrics.classification(np.zeros(3, int), probs[:3], names)  # a single class
    assert math.isnan(one["roc_auc"]) and one["notes"]


# ---------------------------------------------------------------------------
# End to end on a tiny synthetic dataset with resnet_tiny.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from data_prep.write import write_synthetic

    path = tmp_path_factory.mktemp("eval_data") / "syn"
    write_synthetic(str(path), n_clips=18, n_frames=6, size=32, seed=0)
    return str(path)


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory, tiny_data):
    """A 'pretrained' run: a resnet_tiny encoder exported like `lusjax train` does,
    pretrained (say its records) on the clips of the train split."""
    from lusjax import checkpoint
    from lusjax.encoder import Encoder

    workdir = tmp_path_factory.mktemp("eval_run")
    kwargs = {"num_channels": 1, "width": 1.0, "dtype": "float32"}
    enc = Encoder.random_init("resnet_tiny", kwargs, 32, seed=7)
    checkpoint.export_encoder(
        workdir, enc.variables, model_name="resnet_tiny", model_kwargs=kwargs, image_size=32, step=0
    )
    info = json.loads((Path(tiny_data) / "dataset.json").read_text())
    seen = [c["video_id"] for c in info["splits"]["train"]["clips"]]
    (workdir / "pretrain_clips.json").write_text(json.dumps({"video_id": seen}))
    return str(workdir)


def _config(**overrides):
    from lusjax import config as config_lib

    return config_lib.load("configs/eval.py", [(k, str(v)) for k, v in overrides.items()])


@pytest.fixture(scope="module")
def protocol_run(tiny_data, tiny_workdir, tmp_path_factory):
    from lusjax.eval import protocol

    out = tmp_path_factory.mktemp("eval_out")
    cfg = _config(
        encoder=tiny_workdir,
        data_dir=tiny_data,
        out_dir=out,
        folds=3,
        seeds=2,
        protocol="linear,knn,finetune",
        tasks="label,b_lines,effusion",
        label_fractions="(0.2, 1.0)",
        frames_per_clip=3,
        progress=False,
        allow_pretrain_overlap=True,  # k-fold tests every clip, pretraining's too
        **{"finetune.steps": 4, "finetune.batch_size": 8, "linear.steps": 100},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return protocol.run(cfg), out


def test_protocol_end_to_end(protocol_run):
    _, out = protocol_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["dataset"]["n_clips"] == 18
    assert {r["encoder"] for r in on_disk["summary"]} == {"pretrained", "random-init"}
    assert {r["protocol"] for r in on_disk["summary"]} == {"linear", "knn", "finetune"}
    assert {"cpu", "backend", "devices"} <= set(on_disk["hardware"])
    assert on_disk["config"]["folds"] == 3
    assert any("seen without labels during pretraining" in n for n in on_disk["notes"])
    assert set(on_disk["timing"]) >= {"features_s", "fit_linear_s", "fit_finetune_s"}
    # Folds: disjoint clips, every labelled clip tested once.
    tested = [c for f in on_disk["folds"] for c in f["test"]]
    assert len(tested) == len(set(tested)) == 18
    for f in on_disk["folds"]:
        assert not set(f["train"]) & set(f["test"])
    run = next(r for r in on_disk["runs"] if r["protocol"] == "linear" and r["task"] == "label")
    assert len(run["per_fold"]) == 3
    assert 0 <= run["pooled"]["clip"]["accuracy"] <= 1
    assert run["pooled"]["clip"]["n"] == 18
    # Label fractions: fewer training clips at 20% than at 100%.
    rows = {
        (r["fraction"], r["encoder"]): r
        for r in on_disk["summary"]
        if r["protocol"] == "linear" and r["task"] == "label"
    }
    assert rows[(0.2, "pretrained")]["n_train_clips"] < rows[(1.0, "pretrained")]["n_train_clips"]
    assert rows[(1.0, "pretrained")]["seeds"] == 2
    # Each task is evaluated, or skipped with a note when a class has too few clips.
    evaluated = {r["task"] for r in on_disk["crosscheck"]}
    assert {"label", "b_lines"} <= evaluated
    for task in {"label", "b_lines", "effusion"} - evaluated:
        assert any(f"task '{task}' skipped" in n for n in on_disk["notes"])
    md = (out / "results.md").read_text()
    assert "| linear | pretrained | 20% |" in md and "## Task `b_lines`" in md
    for name in (
        "label_efficiency_label.png",
        "embeddings_tsne.png",
        "roc_label_linear_pretrained.png",
        "confusion_label_linear_random-init.png",
    ):
        assert (out / name).stat().st_size > 1000, name


def test_predict_with_saved_heads(protocol_run, tiny_data):
    from lusjax.app import predict as predict_cmd
    from lusjax.data import shards
    from lusjax.eval import predict

    _, out = protocol_run
    meta, heads = predict.load_heads(out)
    assert {"label", "b_lines"} <= set(heads)
    enc = predict.load_encoder(meta)
    src = shards.open_split(tiny_data, "test")
    clips = []
    for c in range(len(src.clips)):
        s, n = int(src.clips.start[c]), int(src.clips.length[c])
        frames = np.stack([src[i]["image"] for i in range(s, s + n)])
        clips.append((src.clips.video_id[c], frames, {}))
    rows = predict.predict_clips(enc, heads, clips)
    assert len(rows) == len(src.clips)
    assert rows[0]["label"] in src.class_names
    p = [rows[0][f"label_p_{n}"] for n in src.class_names]
    assert abs(sum(p) - 1) < 1e-4
    files = predict_cmd.write_predictions(out / "pred", rows, {"encoder": meta["encoder"]})
    assert all(Path(f).read_text() for f in files)
    bench = predict.benchmark(enc, [h for h, _ in heads.values()], n_frames=16, repeats=1)
    assert bench["n_heads"] == len(heads) and bench["speedup"] > 0
    with pytest.raises(UserError, match="fit on the features"):
        predict.load_encoder(meta, "random")


def test_linear_probe_accuracy_and_bad_input(tiny_data, tiny_workdir):
    from lusjax.checkpoint import load_encoder
    from lusjax.eval import protocol

    res = protocol.linear_probe_accuracy(load_encoder(tiny_workdir), tiny_data, "train", "test")
    assert 0 <= res["frame_accuracy"] <= 1 and 0 <= res["clip_accuracy"] <= 1
    assert res["n_test_clips"] == 3 and res["n_train_clips"] == 12
    with pytest.raises(UserError, match="unknown protocol"):
        protocol.parse_protocols("linear,svm")
    with pytest.raises(UserError, match="No split"):
        features.load(tiny_data, "nope")
    with pytest.raises(UserError, match="unknown config key"):
        _config(folds_typo=3)


def test_no_roc_plot_for_a_single_class_and_no_matplotlib_warnings(tmp_path):
    from lusjax.eval import plots

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "No artists with labels found to put in legend"
        assert (
            plots.roc_curves(
                np.array([1, 1, 1]), probs, ["absent", "present"], tmp_path / "one.png"
            )
            is None
        )
        assert not (tmp_path / "one.png").exists()
        assert plots.roc_curves(
            np.array([0, 1, 1]), probs, ["absent", "present"], tmp_path / "two.png"
        ).exists()
        plots.embeddings(
            {"enc": np.random.default_rng(0).normal(size=(4, 3))},
            np.array([-1, -1, -1, -1]),
            ["a"],
            tmp_path / "emb.png",
        )


def test_results_md_names_jax_version_and_devices():
    from lusjax.eval import results

    hw = {
        "cpu": "AMD EPYC",
        "cpu_cores": 2,
        "backend": "cpu",
        "devices": ["cpu"],
        "n_devices": 1,
        "jax": "0.10.2",
    }
    assert results.hardware_line(hw) == "AMD EPYC (2 cores), JAX 0.10.2 on 1 CPU device (cpu)"
    hw.update(backend="gpu", devices=["NVIDIA H100"], n_devices=8)
    assert results.hardware_line(hw).endswith("JAX 0.10.2 on 8 GPU devices (NVIDIA H100)")
