"""Heads of `lusjax eval` on disk, and predictions with them: every task head reads the
features of one backbone pass; a clip's prediction is the mean of its frame probabilities.

    save_heads / load_heads    heads.json + heads.msgpack in an eval out_dir
    predict_clips              one row per clip, all heads
    benchmark(_heads)          one shared backbone with N heads vs N separate models

`lusjax predict` (ingest a folder of clips, then these) is `lusjax.app.predict`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flax import serialization

from lusjax.errors import UserError
from lusjax.eval import features as feats_lib
from lusjax.eval import linear
from lusjax.layout import HEADS_FILE, HEADS_JSON

# ---------------------------------------------------------------------------
# Heads on disk.
# ---------------------------------------------------------------------------


def save_heads(
    out_dir, heads: dict, *, encoder, encoder_spec: str, encoder_name: str, init_seed: int = 0
) -> dict:
    """Writes {task: (Probe, class_names)} and what built the features they read."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {t: {"params": p.params, "mean": p.mean, "std": p.std} for t, (p, _) in heads.items()}
    (out_dir / HEADS_FILE).write_bytes(serialization.msgpack_serialize(state))
    meta = {
        "encoder": encoder_spec if encoder_spec == "random" else str(Path(encoder_spec).resolve()),
        "encoder_name": encoder_name,
        "init_seed": init_seed,
        "model_name": encoder.model_name,
        "model_kwargs": encoder.model_kwargs,
        "image_size": encoder.image_size,
        "tasks": {
            t: {
                "class_names": list(names),
                "hidden": list(p.head.hidden),
                "num_classes": p.head.num_classes,
            }
            for t, (p, names) in heads.items()
        },
    }
    (out_dir / HEADS_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    return {"path": str(out_dir / HEADS_JSON), "tasks": list(heads)}


def load_heads(heads_dir) -> tuple[dict, dict]:
    """(heads.json content, {task: (Probe, class_names)}) of an eval out_dir."""
    heads_dir = Path(heads_dir)
    if not (heads_dir / HEADS_JSON).exists():
        raise UserError(
            f"no {HEADS_JSON} in {heads_dir}: run `lusjax eval` with --config.save_heads=true first"
        )
    meta = json.loads((heads_dir / HEADS_JSON).read_text())
    state = serialization.msgpack_restore((heads_dir / HEADS_FILE).read_bytes())
    heads = {}
    for task, spec in meta["tasks"].items():
        s = state[task]
        head = linear.Head(spec["num_classes"], tuple(spec["hidden"]))
        heads[task] = (
            linear.Probe(head, s["params"], np.asarray(s["mean"]), np.asarray(s["std"])),
            spec["class_names"],
        )
    return meta, heads


def load_encoder(meta: dict, encoder: str = "", init_seed: int = 0):
    """The encoder the heads were fit on (a workdir, or the random-init rebuilt from meta)."""
    from lusjax.encoder import Encoder

    if (
        encoder
        and encoder != meta["encoder"]
        and (encoder == "random" or str(Path(encoder).resolve()) != meta["encoder"])
    ):
        raise UserError(
            f"these heads were fit on the features of {meta['encoder']!r}, not {encoder!r}"
        )
    if meta["encoder"] == "random" or meta["encoder_name"] == "random-init":
        return Encoder.random_init(
            meta["model_name"],
            meta["model_kwargs"],
            meta["image_size"],
            seed=meta.get("init_seed", init_seed),
        )
    from lusjax.checkpoint import load_encoder as load

    return load(meta["encoder"])


# ---------------------------------------------------------------------------
# Prediction.
# ---------------------------------------------------------------------------


def predict_clips(
    encoder, heads: dict, clips, batch_size: int = 256, frames_per_clip: int = 0
) -> list[dict]:
    """One row per clip: every head on one backbone pass; clip probs = mean of frames.

    `clips`: iterable of (video_id, uint8 frames [T, H, W] or [T, H, W, 1], extra dict).
    """
    rows = []
    for video_id, frames, extra in clips:
        frames = frames[..., None] if frames.ndim == 3 else frames
        frames = frames[feats_lib._spaced(len(frames), frames_per_clip)]
        x = encoder.features(frames, batch_size=batch_size)
        row = {"video_id": video_id, "n_frames": len(frames), **extra}
        for task, (probe, names) in heads.items():
            p = probe.predict_proba(x).mean(0)
            row[task] = names[int(p.argmax())]
            row.update({f"{task}_p_{n}": round(float(v), 6) for n, v in zip(names, p)})
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Benchmark: one shared backbone with N heads vs N separate models.
# ---------------------------------------------------------------------------


def benchmark(
    encoder, heads: list, n_frames: int = 256, batch_size: int = 256, repeats: int = 3
) -> dict:
    """Seconds to predict `n_frames` frames for every head: one backbone pass feeding all
    heads vs one backbone pass per head (N separate models of the same architecture)."""
    rng = np.random.default_rng(0)
    s = encoder.image_size
    frames = rng.integers(0, 256, (n_frames, s, s, encoder.num_channels), dtype=np.uint8)

    def shared():
        x = encoder.features(frames, batch_size)
        return [h.predict_proba(x) for h in heads]

    def separate():
        return [h.predict_proba(encoder.features(frames, batch_size)) for h in heads]

    def best_of(fn):
        fn()  # compile / warm up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_shared, t_sep = best_of(shared), best_of(separate)
    return {
        "n_heads": len(heads),
        "n_frames": n_frames,
        "model": encoder.model_name,
        "image_size": s,
        "shared_s": round(t_shared, 4),
        "separate_s": round(t_sep, 4),
        "shared_frames_per_s": round(n_frames / t_shared, 1),
        "separate_frames_per_s": round(n_frames / t_sep, 1),
        "time_saved": round(1 - t_shared / t_sep, 3),
        "speedup": round(t_sep / t_shared, 2),
    }


def benchmark_heads(
    heads_dir, n: int, encoder: str = "", n_frames: int = 256, batch_size: int = 256
) -> dict:
    """`benchmark` with the saved heads, cycled to `n` heads."""
    meta, heads = load_heads(heads_dir)
    enc = load_encoder(meta, encoder)
    probes = [p for p, _ in heads.values()]
    return benchmark(enc, [probes[i % len(probes)] for i in range(n)], n_frames, batch_size)
