"""`lusjax prep` / `python -m data_prep.cli`: clips in, sharded frame dataset out.

  python -m data_prep.cli --synthetic 300 --frames 16 --size 64 --out data/synth
  python -m data_prep.cli --input clips/ --metadata meta.csv --out data/lus --size 224

Parses options and dispatches: real clips go through `data_prep.ingest` into a
resumable `ClipStore` (`<out>/clips` unless --store), synthetic ones are
generated; both are split by video and written by `data_prep.write`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.metadata import COLUMN_OPTION_HELP
from lusjax.errors import UserError
from lusjax.layout import CLIP_STORE_DIR, PREVIEW_PNG

_EPILOG = """\
examples:
  %(prog)s --synthetic 300 --frames 16 --size 64 --out data/synth
  %(prog)s --input videos/ --metadata videos/metadata.csv --out data/lus --size 224 --preview
  %(prog)s --input manifest.csv --out data/lus --folds 5 --workers 8
  %(prog)s --input unlabeled/ --out data/pretrain --splits none
  %(prog)s --input clips/ --metadata meta.csv --column label=Finding --out data/lus
  %(prog)s --input by_class/ --label-from-folder --out data/lus --folds 5
  %(prog)s --input by_class/ --label-from-folder --patient-from-folder --out data/lus

COLUMNS of --metadata (and of a CSV manifest), case, spaces and punctuation ignored:
  path        path, file, filename, file_name, filepath, video, video_name, clip, ...
  label       label, class, class_name, diagnosis, category, target
  patient_id  patient_id, patient, patient_id_name ("Patient ID / Name"), subject, ...
  probe       probe, probe_type, transducer (convex/curvilinear/curved/linear)
  findings    b_lines, a_lines, effusion, consolidation(s), pleural_irregular(ities),
              pleural_line_irregularities: 1/0/yes/no, empty or n/a = unknown
Labels that differ only in case or spacing are merged ("covid-19" = "COVID-19").

splits are by video, stratified by label, grouped by patient; the dataset folder
gets TFDS shards under lus_frames/ and dataset.json (clips, frames, skipped clips).
A re-run with the same --input reuses clips already in the store.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lusjax prep",
        description="Turn lung-ultrasound clips (or synthetic ones) into a sharded frame "
        "dataset: one record per frame, split by video.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="generate N synthetic LUS clips instead of reading files",
    )
    src.add_argument(
        "--input",
        metavar="PATH",
        help="folder of clips (searched recursively; a folder of numbered images is one "
        "clip, other still images are one-frame clips) or a CSV manifest of clips",
    )
    src.add_argument(
        "--metadata",
        metavar="CSV",
        help="per-clip labels/probe/patient/findings, joined on path or file name "
        "(with or without its extension); column names as in COLUMNS below",
    )
    src.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=HEADER",
        help=COLUMN_OPTION_HELP,
    )
    src.add_argument(
        "--label-from-folder",
        action="store_true",
        help="label each clip that gets no label from --metadata by its top folder "
        "below --input (covid/a.mp4, covid/p1/b.mp4: covid): one sub-folder per class",
    )
    src.add_argument(
        "--patient-from-folder",
        action="store_true",
        help="give each clip that gets no patient id from --metadata its folder below "
        "--input as patient (p07/a.mp4: p07; with --label-from-folder covid/p07/a.mp4: "
        "covid/p07), so that a patient's clips stay in one split",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    p.add_argument(
        "--store",
        metavar="DIR",
        help="where processed clips are kept for resuming (default: OUT/clips)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="frame size in pixels, square (default 224; 64 with --synthetic)",
    )
    frames = p.add_argument_group("frame selection (real clips)")
    frames.add_argument("--stride", type=int, default=1, help="keep every k-th frame (default 1)")
    frames.add_argument(
        "--fps", type=float, default=None, help="resample to this frame rate instead of --stride"
    )
    syn = p.add_argument_group("synthetic clips")
    syn.add_argument("--frames", type=int, default=16, help="frames per synthetic clip (16)")
    syn.add_argument(
        "--clips-per-patient", type=int, default=3, help="synthetic clips sharing a patient id (3)"
    )
    syn.add_argument(
        "--nuisance",
        type=float,
        default=1.0,
        help="strength of gain/depth/position variation (1.0)",
    )
    split = p.add_argument_group("splits (by video)")
    split.add_argument(
        "--splits",
        default="train=0.7,val=0.15,test=0.15",
        help="fractions, e.g. train=0.8,test=0.2; 'none' puts every clip in "
        "train (raw frames for pretraining)",
    )
    split.add_argument(
        "--folds",
        type=int,
        default=None,
        help="k folds (splits fold0..fold{k-1}) instead of --splits",
    )
    p.add_argument(
        "--format",
        dest="file_format",
        default="array_record",
        choices=("array_record", "tfrecord"),
        help="record format (tfrecord needs TensorFlow)",
    )
    p.add_argument("--shard-mb", type=float, default=128, help="target shard size in MB (128)")
    p.add_argument("--workers", type=int, default=1, help="processes for decoding clips (1)")
    p.add_argument(
        "--preview",
        action="store_true",
        help="save a contact sheet as OUT/preview.png: the crop of every real clip, or "
        "the first synthetic clips (first and middle frame)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the generator")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs `prep`; returns the exit status (2 for bad input, printed as one line)."""
    args = build_parser().parse_args(argv)
    from lusjax import carbon

    try:
        with carbon.tracked(args.out, "prep", command="prep"):  # OUT/carbon.json
            info = run(args)
    except UserError as e:
        print(f"lusjax: error: {e}", file=sys.stderr)
        return 2
    warning = label_warning(info)
    if warning:
        print(f"lusjax prep: warning: {warning}", file=sys.stderr)
    note = patient_note(info)
    if note:
        print(f"lusjax prep: note: {note}", file=sys.stderr)
    print(f"dataset: {Path(args.out).resolve()}")
    return 0 if info["total"]["clips"] else 2


def label_warning(info: dict) -> str | None:
    """One line when clips of the written dataset have no clip label, and why."""
    labels = info.get("labels", {})
    n, total = labels.get("unlabeled_clips", 0), info["total"]["clips"]
    if not n:
        return None
    ingest = info.get("ingest", {})
    if ingest.get("label_from_folder"):
        why = "no metadata label, and they sit directly in --input, not in a class folder"
    elif ingest.get("label_column") is None:
        why = "no --metadata CSV was given"
        if ingest.get("clips_in_subfolders"):
            why += "; if the sub-folders of --input are the classes, add --label-from-folder"
    elif not ingest["label_column"]:
        source = ingest.get("metadata") or ingest.get("input")
        why = (
            f"the metadata of {source} has no label column (label, class, diagnosis, ...; "
            "name yours with --column label=HEADER)"
        )
    else:
        why = "their metadata rows are missing or leave 'label' empty"
    return (
        f"{n} of {total} clips have no label ({why}); they are kept for pretraining, "
        "but `lusjax eval` cannot score the clip label on them (recorded in "
        "dataset.json under 'labels')"
    )


def patient_note(info: dict) -> str | None:
    """One line when class folders hold sub-folders but clips got no patient id: those
    sub-folders are often patients, and without --patient-from-folder one patient's
    clips can land in both train and test."""
    n = info.get("ingest", {}).get("clips_without_patient_in_subfolders", 0)
    if not n:
        return None
    return (
        f"clips in sub-folders of their class folder without a patient id: {n}; each is "
        "split as its own patient. If each sub-folder holds one patient's clips, add "
        "--patient-from-folder to keep a patient's clips in one split"
    )


def run(args: argparse.Namespace) -> dict:
    """Does what the parsed `args` ask; returns dataset.json's content."""
    from data_prep import write

    if (args.synthetic is None) == (args.input is None):
        raise UserError("Give exactly one of --synthetic N or --input PATH.")
    if args.folds is not None:
        splits = args.folds
    elif args.splits.strip().lower() in ("none", "raw", ""):
        splits = None
    else:
        splits = args.splits
    if args.workers < 1 or args.stride < 1:
        raise UserError("--workers and --stride must be at least 1.")

    if args.synthetic is not None:
        if args.synthetic < 1 or args.frames < 1:
            raise UserError("--synthetic and --frames must be at least 1.")
        gen = {"clips_per_patient": args.clips_per_patient, "nuisance": args.nuisance}
        info = write.write_synthetic(
            args.out,
            n_clips=args.synthetic,
            n_frames=args.frames,
            size=args.size or 64,
            seed=args.seed,
            splits=splits,
            file_format=args.file_format,
            shard_mb=args.shard_mb,
            workers=args.workers,
            verbose=True,
            progress=True,
            **gen,
        )
        if args.preview:
            sheet = _synthetic_preview(Path(args.out) / PREVIEW_PNG, args, gen)
            print(f"preview: {sheet}")
        return info

    from data_prep import ingest, metadata  # PyAV & co. only when reading real clips
    from data_prep.store import ClipStore

    columns = metadata.parse_columns(args.column)

    if not Path(args.input).exists():
        raise UserError(f"--input {args.input} does not exist.")
    size = args.size or 224
    store = ClipStore(args.store or Path(args.out) / CLIP_STORE_DIR)
    keys: list[str] = []  # this input's clips: the store may hold others (other options)
    skipped = ingest.ingest(
        args.input,
        store,
        metadata_csv=args.metadata,
        size=size,
        stride=args.stride,
        fps=args.fps,
        workers=args.workers,
        preview_path=str(Path(args.out) / PREVIEW_PNG) if args.preview else None,
        keys=keys,
        columns=columns,
        label_from_folder=args.label_from_folder,
        patient_from_folder=args.patient_from_folder,
    )
    return write.write_dataset(
        store,
        args.out,
        keys=keys,
        splits=splits,
        image_size=size,
        file_format=args.file_format,
        seed=args.seed,
        skipped=skipped,
        shard_mb=args.shard_mb,
        verbose=True,
        progress=True,
        extra={
            "ingest": {
                "input": str(args.input),
                "metadata": args.metadata,
                "label_column": _has_label_column(args.metadata or args.input, columns),
                "label_from_folder": args.label_from_folder,
                "patient_from_folder": args.patient_from_folder,
                "clips_in_subfolders": any(
                    ingest.class_folder(store.meta(k)["video_id"]) for k in keys
                ),
                "clips_without_patient_in_subfolders": _unplaced_patients(store, keys, args),
                "stride": args.stride,
                "fps": args.fps,
            }
        },
    )


def _unplaced_patients(store, keys: list[str], args: argparse.Namespace) -> int:
    """Clips below a class folder's sub-folder (--label-from-folder) with no patient id."""
    if not args.label_from_folder or args.patient_from_folder:
        return 0
    from data_prep import ingest

    metas = [store.meta(k) for k in keys]
    return sum(
        1
        for m in metas
        if m["patient_id"] == m["video_id"] and ingest.patient_folder(m["video_id"], True)
    )


def _has_label_column(metadata_csv: str | None, columns: dict) -> bool | None:
    """Whether the metadata CSV (or CSV manifest) has a label column; None without one."""
    if not metadata_csv or Path(metadata_csv).suffix.lower() not in (".csv", ".tsv"):
        return None
    from data_prep import metadata

    table = metadata.read_csv(Path(metadata_csv), meta_required=False, columns=columns)
    return "label" in table.rows[0]


def _synthetic_preview(path: Path, args: argparse.Namespace, gen: dict, n: int = 24) -> Path:
    """Contact sheet of the first clips' first and middle frames, fan outlined."""
    from scipy import ndimage

    from data_prep import preview, synthetic

    tiles, names = [], []
    for clip in synthetic.generate_clips(
        min(n, args.synthetic), args.frames, args.size or 64, args.seed, **gen
    ):
        first, middle = clip.frames[0], clip.frames[len(clip.frames) // 2]
        size = first.shape[0]
        # The fan: pixels lit in some frame, closed over the dark spots of the lung.
        fan = ndimage.binary_fill_holes(
            ndimage.binary_closing(clip.frames.max(0) > 0, iterations=3)
        )
        names.append(f"{clip.label_name} {clip.probe} {clip.video_id.rsplit('/', 1)[-1]}")
        tiles.append(preview.render_tile(first, fan, (0, 0, size, size), middle))
    return preview.save_contact_sheet(tiles, path, names)


if __name__ == "__main__":
    sys.exit(main())
