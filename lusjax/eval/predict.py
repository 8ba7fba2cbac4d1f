"""`lusjax predict`: per-clip predictions for a folder of clips, all heads in one pass.

    lusjax predict --heads runs/eval --input clips/ [--metadata meta.csv] [--out preds/]
    lusjax predict --heads runs/eval --benchmark 4      # shared backbone vs 4 models

Clips go through the same ingest as training data (`data_prep.ingest`: decode,
fan crop, grayscale, resize) into a temporary `ClipStore`; each clip's frames
run through the backbone once, and every task head of `lusjax eval`
(heads.json + heads.msgpack in its out_dir) reads the same features. A clip's
prediction is the mean of its frame probabilities. Writes predictions.csv and
predictions.json (with skipped clips and their reasons).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from flax import serialization

from lusjax.errors import UserError
from lusjax.eval import features as feats_lib
from lusjax.eval import linear
from lusjax.layout import HEADS_FILE, HEADS_JSON, PREDICTIONS_CSV, PREDICTIONS_JSON

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


def ingest_clips(input_path: str, metadata_csv: str, size: int, workdir: str):
    """Ingests `input_path` like `lusjax prep` does; returns (clip iterator, skipped)."""
    from data_prep import ingest
    from data_prep.store import ClipStore

    if not Path(input_path).exists():
        raise UserError(f"--input {input_path} does not exist")
    store = ClipStore(workdir)
    skipped = ingest.ingest(input_path, store, metadata_csv=metadata_csv or None, size=size)
    skipped = [
        {"source": str(getattr(s, "source", s)), "reason": str(getattr(s, "reason", ""))}
        for s in skipped or []
    ]

    def clips():
        for rec in store.records():
            clip = store.load(rec["key"])
            # A clip without a metadata row gets its own id as patient id (clips group by
            # it in training data); a prediction says "unknown" instead: nobody gave one.
            patient = "" if clip.patient_id == clip.video_id else clip.patient_id
            yield clip.video_id, clip.frames, {"label_name": clip.label_name, "patient_id": patient}

    return clips(), skipped, len(store.records())


def write_predictions(out_dir, rows: list[dict], meta: dict) -> list[str]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / PREDICTIONS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    (out_dir / PREDICTIONS_JSON).write_text(json.dumps({**meta, "clips": rows}, indent=1))
    return [str(out_dir / PREDICTIONS_CSV), str(out_dir / PREDICTIONS_JSON)]


def predict_folder(
    heads_dir,
    input_path: str,
    *,
    out: str = "",
    encoder: str = "",
    metadata_csv: str = "",
    size: int = 0,
    frames_per_clip: int = 0,
    batch_size: int = 256,
) -> dict:
    """Ingest + predict + write; returns a summary dict."""
    t0 = time.time()
    meta, heads = load_heads(heads_dir)
    enc = load_encoder(meta, encoder)
    with tempfile.TemporaryDirectory(prefix="lusjax_predict_") as tmp:
        clips, skipped, n = ingest_clips(input_path, metadata_csv, size or enc.image_size, tmp)
        if n == 0:
            raise UserError(
                f"no clip of {input_path} could be ingested: "
                + "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:5])
            )
        rows = predict_clips(enc, heads, clips, batch_size, frames_per_clip)
    info = {
        "encoder": meta["encoder"],
        "heads": str(heads_dir),
        "input": str(input_path),
        "n_clips": len(rows),
        "skipped": skipped,
        "seconds": round(time.time() - t0, 2),
    }
    info["files"] = write_predictions(out or heads_dir, rows, info)
    return info


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


# ---------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------


def run(config) -> dict:
    """`config.predict.*` of configs/eval.py; heads default to config.out_dir."""
    p = config.predict
    heads_dir = p.heads or config.out_dir
    out = {}
    if p.input:
        out["predict"] = predict_folder(
            heads_dir,
            p.input,
            out=p.out,
            metadata_csv=p.metadata_csv,
            size=p.size,
            frames_per_clip=p.frames_per_clip,
            batch_size=config.batch_size,
        )
    if p.benchmark:
        out["benchmark"] = benchmark_heads(heads_dir, p.benchmark, batch_size=config.batch_size)
    if not out:
        raise UserError(
            "set --config.predict.input (a folder of clips) and/or --config.predict.benchmark=N"
        )
    return out


def main(argv=None) -> int:
    """`lusjax predict ...`: parses its options and runs."""
    ap = argparse.ArgumentParser(
        prog="lusjax predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  lusjax predict --heads runs/simclr_r50/eval --input ../shared/data/pocus_dev "
        "--out runs/simclr_r50/predict\n"
        "  lusjax predict --heads runs/eval --benchmark 4      # one backbone + 4 heads "
        "vs 4 models\n"
        "Without --metadata, patient_id is left empty (unknown).",
    )
    ap.add_argument("--heads", required=True, help="a `lusjax eval` out_dir (heads.json)")
    ap.add_argument("--input", default="", help="folder or CSV manifest of clips")
    ap.add_argument(
        "--encoder",
        default="",
        help="workdir of the encoder (default: the one the heads were fit on)",
    )
    ap.add_argument("--metadata", default="", help="per-clip metadata CSV (optional)")
    ap.add_argument("--out", default="", help="output folder (default: --heads)")
    ap.add_argument("--size", type=int, default=0, help="ingest size (default: encoder's)")
    ap.add_argument("--frames-per-clip", type=int, default=0, help="0 = every frame")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--benchmark",
        type=int,
        default=0,
        metavar="N",
        help="also time one backbone + N heads vs N separate models",
    )
    args = ap.parse_args(argv)
    if not args.input and not args.benchmark:
        raise UserError("give --input FOLDER and/or --benchmark N")
    if args.input:
        from lusjax import carbon

        with carbon.tracked(args.out or args.heads, "predict", command="predict"):
            info = predict_folder(
                args.heads,
                args.input,
                out=args.out,
                encoder=args.encoder,
                metadata_csv=args.metadata,
                size=args.size,
                frames_per_clip=args.frames_per_clip,
                batch_size=args.batch_size,
            )
        print(
            f"{info['n_clips']} clip(s) predicted, {len(info['skipped'])} skipped, "
            f"{info['seconds']} s: {', '.join(info['files'])}"
        )
    if args.benchmark:
        print(
            json.dumps(
                benchmark_heads(
                    args.heads, args.benchmark, args.encoder, batch_size=args.batch_size
                )
            )
        )
    return 0
