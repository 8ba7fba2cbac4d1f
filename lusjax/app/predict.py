"""`lusjax predict`: per-clip predictions for a folder of clips, all heads in one pass.

    lusjax predict --heads runs/eval --input clips/ [--metadata meta.csv] [--out preds/]
    lusjax predict --heads runs/eval --benchmark 4      # shared backbone vs 4 models

Clips go through the same ingest as training data (`data_prep.ingest`: decode,
fan crop, grayscale, resize) into a temporary `ClipStore`; each clip's frames
run through the backbone once, and every task head of `lusjax eval`
(heads.json + heads.msgpack in its out_dir) reads the same features
(`lusjax.eval.predict`). A clip's prediction is the mean of its frame
probabilities. Writes predictions.csv and predictions.json (with skipped clips
and their reasons).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from data_prep.metadata import COLUMN_OPTION_HELP, parse_columns
from lusjax.errors import UserError
from lusjax.eval.predict import benchmark_heads, load_encoder, load_heads, predict_clips
from lusjax.layout import PREDICTIONS_CSV, PREDICTIONS_JSON


def ingest_clips(
    input_path: str,
    metadata_csv: str,
    size: int,
    workdir: str,
    columns=None,
    label_from_folder: bool = False,
):
    """Ingests `input_path` like `lusjax prep` does (`columns`, `label_from_folder`: its
    --column and --label-from-folder); returns (clip iterator, skipped, number of clips)."""
    from data_prep import ingest
    from data_prep.store import ClipStore

    if not Path(input_path).exists():
        raise UserError(f"--input {input_path} does not exist")
    store = ClipStore(workdir)
    skipped = ingest.ingest(
        input_path,
        store,
        metadata_csv=metadata_csv or None,
        size=size,
        columns=columns,
        label_from_folder=label_from_folder,
    )
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
    columns: dict | None = None,
    label_from_folder: bool = False,
    size: int = 0,
    frames_per_clip: int = 0,
    batch_size: int = 256,
) -> dict:
    """Ingest + predict + write; returns a summary dict."""
    t0 = time.time()
    meta, heads = load_heads(heads_dir)
    enc = load_encoder(meta, encoder)
    with tempfile.TemporaryDirectory(prefix="lusjax_predict_") as tmp:
        clips, skipped, n = ingest_clips(
            input_path, metadata_csv, size or enc.image_size, tmp, columns, label_from_folder
        )
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
    ap.add_argument(
        "--column", action="append", default=[], metavar="FIELD=HEADER", help=COLUMN_OPTION_HELP
    )
    ap.add_argument(
        "--label-from-folder",
        action="store_true",
        help="a clip's true label (label_name) is its top folder below --input, as in prep",
    )
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
    columns = parse_columns(args.column)
    if args.input:
        from lusjax import carbon

        with carbon.tracked(args.out or args.heads, "predict", command="predict"):
            info = predict_folder(
                args.heads,
                args.input,
                out=args.out,
                encoder=args.encoder,
                metadata_csv=args.metadata,
                columns=columns,
                label_from_folder=args.label_from_folder,
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
