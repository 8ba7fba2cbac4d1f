"""The training loop end to end on tiny synthetic data: outputs, sharding, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from scipy.stats import binomtest

from configs import common
from lusjax import config as config_lib
from lusjax import report, sharding, train
from lusjax.data.default import ensure_data
from lusjax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TINY = [("data.synthetic.n_clips", "12"), ("data.synthetic.n_frames", "8"),
        ("data.synthetic.size", "32"), ("image_size", "32"), ("aug.size", "32"),
        ("batch_size", "16"), ("ssl.proj_hidden_dim", "32"), ("ssl.proj_dim", "16"),
        ("log_every", "1"), ("probe.eval_every", "0")]


def tiny_config(workdir, *extra):
    return config_lib.load(str(ROOT / "configs/quickstart.py"),
                           [("workdir", str(workdir)), *TINY, *extra])


def method_config(method, workdir, *extra):
    """The tiny config with `method`'s own ssl section, shrunk to tiny dims."""
    cfg = tiny_config(workdir, *extra)
    with cfg.unlocked():
        cfg.method = method
        cfg.ssl = ml_collections.ConfigDict(common.SSL[method])
        for k, v in dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32, queue_size=64,
                         num_prototypes=8).items():
            if k in cfg.ssl:
                cfg.ssl[k] = v
    return cfg


def test_train_writes_metrics_checkpoint_config_and_encoder(tmp_path):
    cfg = tiny_config(tmp_path / "run", ("total_steps", "3"), ("ckpt_every", "2"))
    summary = train.train(cfg, progress=False)
    run = tmp_path / "run"
    assert summary["step"] == 3
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3]
    for key in ("loss", "lr", "images_per_s", "grad_norm", "probe_acc", "model_kwh"):
        assert key in recs[-1], key
    assert np.isfinite(recs[-1]["loss"])
    assert json.loads((run / "config.json").read_text())["total_steps"] == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]
    assert json.loads((run / "encoder.json").read_text())["step"] == 3
    assert json.loads((run / "pretrain_clips.json").read_text())["video_id"]
    carbon = json.loads((run / "carbon.json").read_text())
    assert carbon["phases"][0]["phase"] == "pretrain" and carbon["total"]["model_kwh"] > 0
    names = {p.name for p in report.render(run)}
    assert {"loss.png", "probe.png", "carbon.md", "carbon.png"} <= names


def test_nonfinite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path / "run", ("total_steps", "6"), ("ckpt_every", "1"),
                      ("optim.lr", "1e30"), ("optim.warmup_steps", "0"))
    with pytest.raises(UserError, match="loss became .* last good checkpoint"):
        train.train(cfg, progress=False)
    assert not (tmp_path / "run" / "encoder.json").exists()


def _first_step(cfg, mesh, batch):
    src_classes = 4
    parts = train.build(cfg, src_classes, mesh)
    state = parts.init_state(jax.random.PRNGKey(0))
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    state, metrics = parts.step(state, batch)
    state, metrics = parts.step(state, batch)  # second step: EMA targets / queues in play
    return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("method", ["simclr", "mocov2", "byol", "swav"])
def test_sharded_step_equals_single_device_step(tmp_path, method):
    """8 devices x 2 examples == 1 device x 16 examples: global negatives, synced BN."""
    assert jax.device_count() == 8
    cfg = method_config(method, tmp_path, ("total_steps", "4"))
    rng = np.random.default_rng(0)
    batch = {"view1": rng.integers(0, 255, (16, 32, 32, 1), dtype=np.uint8),
             "view2": rng.integers(0, 255, (16, 32, 32, 1), dtype=np.uint8),
             "label": rng.integers(-1, 4, (16,)).astype(np.int32),
             "index": np.arange(16, dtype=np.int32)}
    s1, m1 = _first_step(cfg, sharding.make_mesh(jax.devices()[:1]), batch)
    s8, m8 = _first_step(cfg, sharding.make_mesh(jax.devices()), batch)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1["grad_norm"], m8["grad_norm"], rtol=1e-4)
    flat1, flat8 = jax.tree.leaves(s1["params"]), jax.tree.leaves(s8["params"])
    for a, b in zip(flat1, flat8):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(s1["batch_stats"]), jax.tree.leaves(s8["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _train_cmd(workdir, total):
    over = [f"--config.{k}={v}" for k, v in TINY]
    return [sys.executable, "-m", "lusjax.cli", "train", "--quiet",
            "--config", str(ROOT / "configs/quickstart.py"), f"--config.workdir={workdir}",
            f"--config.total_steps={total}", "--config.ckpt_every=2", *over]


def _losses(workdir) -> dict[int, float]:
    out = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[rec["step"]] = rec["loss"]  # a resumed run re-logs steps: the last one wins
    return out


def test_sigkill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Bit-identical loss sequence on CPU after SIGKILL mid-run and restart."""
    total = 8
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Same data cache for all three runs (generated once in this process).
    ensure_data(tiny_config(tmp_path / "x").data)
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref, total), check=True, env=env, timeout=600,
                   capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(run, total), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and max(_losses(run), default=0) >= 5:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be killed"
    assert not (run / "encoder.json").exists()
    subprocess.run(_train_cmd(run, total), check=True, env=env, timeout=600,
                   capture_output=True)
    ref_losses, run_losses = _losses(ref), _losses(run)
    assert sorted(run_losses) == list(range(1, total + 1))
    assert run_losses == ref_losses  # exact equality: same floats, step by step


@pytest.mark.parametrize("method", ["simclr", "mocov2", "byol", "simsiam", "barlow", "vicreg",
                                    "swav"])
def test_every_method_trains_and_its_online_probe_beats_chance(tmp_path, method):
    """Each method trains on the synthetic data with the loop; the online probe learns."""
    cfg = method_config(method, tmp_path / method, ("total_steps", "40"), ("ckpt_every", "0"),
                        ("optim.probe_lr", "1e-2"))
    train.train(cfg, progress=False)
    recs = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in recs)
    n_classes = len(json.loads((Path(ensure_data(cfg.data)) / "dataset.json").read_text())
                    ["class_names"])
    # The probe's accuracy on the last 20 training batches (320 frames) must beat
    # guessing: a one-sided binomial test against 1/n_classes.
    late = recs[-20:]
    n = int(sum(r["probe_labelled"] for r in late))
    k = int(round(sum(r["probe_acc"] * r["probe_labelled"] for r in late)))
    p = binomtest(k, n, 1.0 / n_classes, alternative="greater").pvalue
    assert p < 0.01, (method, k / n, p)
