"""The training loop end to end on tiny synthetic data: outputs, non-finite stop, methods."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.stats import binomtest

from lusjax import config as config_lib
from lusjax import report, sharding, ssl, train
from lusjax.app.default_data import ensure_data
from lusjax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    ("data.synthetic.n_clips", "12"),
    ("data.synthetic.n_frames", "8"),
    ("data.synthetic.size", "32"),
    ("image_size", "32"),
    ("aug.size", "32"),
    ("batch_size", "16"),
    ("ssl.proj_hidden_dim", "32"),
    ("ssl.proj_dim", "16"),
    ("log_every", "1"),
    ("probe.eval_every", "0"),
]


def tiny_config(workdir, *extra):
    return config_lib.load(
        str(ROOT / "configs/quickstart.py"), [("workdir", str(workdir)), *TINY, *extra]
    )


def method_config(method, workdir, *extra):
    """The tiny config with `method`'s own ssl section, shrunk to tiny dims."""
    cfg = tiny_config(workdir, *extra)
    with cfg.unlocked():
        cfg.method = method
        cfg.ssl = ssl.get(method).default_config()
        for k, v in dict(
            proj_hidden_dim=32,
            proj_dim=16,
            pred_hidden_dim=32,
            queue_size=64,
            num_prototypes=8,
            freeze_prototypes_steps=0,
        ).items():
            if k in cfg.ssl:
                cfg.ssl[k] = v
    return cfg


def test_train_writes_metrics_checkpoint_config_and_encoder(tmp_path):
    cfg = tiny_config(
        tmp_path / "run", ("total_steps", "3"), ("ckpt_every", "2"), ("probe.eval_every", "2")
    )
    summary = train.train(cfg, progress=False)
    run = tmp_path / "run"
    assert summary["step"] == 3
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3]
    # The online probe (evaluator "online") on the val split: every 2 steps and the last.
    assert ["probe_val_acc" in r for r in recs] == [False, True, True]
    assert 0 <= recs[-1]["probe_val_acc"] <= 1
    for key in ("loss", "lr", "images_per_s", "grad_norm", "probe_acc", "model_kwh"):
        assert key in recs[-1], key
    assert np.isfinite(recs[-1]["loss"])
    assert json.loads((run / "config.json").read_text())["total_steps"] == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]
    assert json.loads((run / "encoder.json").read_text())["step"] == 3
    assert json.loads((run / "pretrain_clips.json").read_text())["video_id"]
    carbon = json.loads((run / "carbon.json").read_text())["totals"]  # over run segments
    assert carbon["phases"][0]["phase"] == "pretrain" and carbon["total"]["model_kwh"] > 0
    names = {p.name for p in report.render(run)}
    assert {"loss.png", "probe.png", "carbon.md", "carbon.png"} <= names


def test_nonfinite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    cfg = tiny_config(
        tmp_path / "run",
        ("total_steps", "6"),
        ("ckpt_every", "1"),
        ("optim.lr", "1e30"),
        ("optim.warmup_steps", "0"),
    )
    with pytest.raises(UserError, match="became .* at step .* last good checkpoint"):
        train.train(cfg, progress=False)
    assert not (tmp_path / "run" / "encoder.json").exists()


# One step sharded over 8 devices vs one device (losses, gradients, state; SimCLR, MoCo v2,
# BYOL, SwAV; and 2 processes x 4 devices): tests/reliability/test_distributed_equivalence.py.


# SIGKILL mid-epoch and resume == the uninterrupted run (per-step batches, losses, final
# state; 0 and 2 grain workers; method state): tests/reliability/test_exact_resume.py.
# SIGKILL at random moments, inside async saves: tests/reliability/test_kill_safety.py.


@pytest.mark.parametrize("method", ssl.names())
def test_every_method_trains_and_its_online_probe_beats_chance(tmp_path, method):
    """Each method trains on the synthetic data with the loop; the online probe learns."""
    cfg = method_config(
        method,
        tmp_path / method,
        ("total_steps", "40"),
        ("ckpt_every", "0"),
        ("optim.probe_lr", "1e-2"),
    )
    train.train(cfg, progress=False)
    recs = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in recs)
    n_classes = len(
        json.loads((Path(ensure_data(cfg.data)) / "dataset.json").read_text())["class_names"]
    )
    # The probe's accuracy on the last 20 training batches (320 frames) must beat
    # guessing: a one-sided binomial test against 1/n_classes.
    late = recs[-20:]
    n = sum(int(r["probe_labelled"]) for r in late)
    k = round(sum(r["probe_acc"] * r["probe_labelled"] for r in late))
    p = binomtest(k, n, 1.0 / n_classes, alternative="greater").pvalue
    assert p < 0.01, (method, k / n, p)


def test_swav_prototypes_stay_frozen_for_their_first_steps(tmp_path):
    """SwAV's prototypes get no update (not even weight decay) while step < the freeze;
    the rest of the network trains meanwhile."""
    cfg = method_config("swav", tmp_path, ("total_steps", "10"))
    with cfg.unlocked():
        cfg.ssl.freeze_prototypes_steps = 2
    mesh = sharding.make_mesh(jax.devices()[:1])
    parts = train.build(cfg, num_classes=4, mesh=mesh)
    state = parts.init_state(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {
        "view1": rng.integers(0, 255, (16, 32, 32, 1), dtype=np.uint8),
        "view2": rng.integers(0, 255, (16, 32, 32, 1), dtype=np.uint8),
        "label": np.zeros(16, np.int32),
        "index": np.arange(16, dtype=np.int32),
    }
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))

    def protos_and_conv(s):
        p = jax.device_get(s["params"])
        conv = max(jax.tree.leaves(p["backbone"]), key=lambda a: a.size)
        return np.asarray(p["head"]["prototypes"]), np.asarray(conv)

    p0, c0 = protos_and_conv(state)
    history = []
    for _ in range(3):
        state, _ = parts.step(state, batch)
        history.append(protos_and_conv(state))
    np.testing.assert_array_equal(history[0][0], p0)  # steps 0 and 1: frozen
    np.testing.assert_array_equal(history[1][0], p0)
    assert not np.array_equal(history[2][0], p0)  # step 2: trains
    assert not np.array_equal(history[1][1], c0)  # the backbone trains meanwhile
    # (step 0 moves nothing: the warmup's lr is 0 there)
