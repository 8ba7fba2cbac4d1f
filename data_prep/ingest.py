"""Real-clip ingest: find clips, join metadata, decode -> fan crop -> resize -> `ClipStore`.

    skips = ingest("clips/", ClipStore("out/clips"), metadata_csv="clips/metadata.csv",
                   size=224, workers=4, preview_path="out/preview.png")

Input: a folder (recursive: video files, DICOM files, folders of image frames),
a CSV manifest (a file column, relative to the CSV; its other columns are the
metadata unless a metadata CSV is given) or one clip. Metadata CSV (like
pocus_dev's): a file column plus any of label, probe, patient_id and the
findings (0/1, empty = unknown), under our names or common aliases
(`data_prep.metadata`), joined by path (relative to the CSV or the input), else
by unique path tail or file name, with or without its extension. A row without a
file is a skip; a file without a row is ingested unlabeled with a warning
(skipped with `require_metadata=True`).

Each clip is stored under sha256(content [+ frame names] + options): a re-run
decodes only what is not stored yet (a changed CSV row only rewrites metadata).
A bad clip is skipped with its reason and a warning line; `UserError` only when
nothing usable remains. With workers > 1, call from under `if __name__ ==
"__main__":` (spawned workers re-import the caller's main module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from data_prep import decode, fan, metadata, preview
from data_prep.clip import Clip
from data_prep.decode import ClipError
from data_prep.store import ClipStore
from lusjax.data.format import FINDINGS
from lusjax.errors import UserError
from lusjax.layout import STORE_PREVIEWS

# Bump when decoding/cropping changes what a stored clip holds: old keys then miss.
INGEST_VERSION = 1
# Frames of one clip kept in memory for the crop; longer clips are decoded twice.
BUFFER_BYTES = 256 << 20
# Colour frames sampled per clip (to find coloured overlays) and kept for the preview.
COLOR_SAMPLES = 24
# About this many frames per clip feed the fan statistics (plenty for the variance).
STATS_FRAMES = 128
# Consecutive frames closer than this (mean |diff| of 64 px thumbnails, gray
# levels) are duplicates of a frozen or frame-rate-converted video.
DUPLICATE_MAD = 0.2

# Files next to clips that are not clips and not worth a warning.
_IGNORED_EXTS = frozenset(
    {
        ".csv",
        ".txt",
        ".md",
        ".json",
        ".yaml",
        ".yml",
        ".xml",
        ".html",
        ".pdf",
        ".py",
        ".log",
        ".ini",
        ".zip",
        ".tsv",
    }
)


@dataclasses.dataclass
class Skip:
    """A clip (or metadata row) left out, and why."""

    source: str
    reason: str


@dataclasses.dataclass
class ClipSpec:
    """One clip to ingest: where it is, its id and its metadata."""

    source: str  # absolute path of the file or frame folder
    video_id: str  # path relative to the input root, '/'-separated
    meta: dict = dataclasses.field(default_factory=dict)  # Clip fields from the CSV
    has_metadata: bool = False


@dataclasses.dataclass(frozen=True)
class Options:
    """Ingest options that change what is stored (all of them go into the key)."""

    size: int = 224
    stride: int = 1
    fps: float | None = None
    dedupe: bool = True
    max_frames: int | None = None
    default_fps: float = decode.DEFAULT_FPS


def discover(
    input_path: str | os.PathLike,
    metadata_csv: str | os.PathLike | None = None,
    *,
    require_metadata: bool = False,
    columns: Mapping[str, str] | None = None,
    label_from_folder: bool = False,
    patient_from_folder: bool = False,
) -> tuple[list[ClipSpec], list[Skip]]:
    """The clips under `input_path` with their metadata, and what was skipped.

    Args:
      input_path: a folder (recursive), a CSV manifest with a file column, or one clip.
      metadata_csv: per-clip metadata joined on path / file name (see module doc).
      require_metadata: skip files that have no metadata row (default: unlabeled).
      columns: field -> the CSV's header for it, where the aliases do not find it
        (`data_prep.metadata.COLUMN_ALIASES`).
      label_from_folder: a clip that gets no label from the metadata is labelled by the
        name of its top folder below the input root, as torchvision's ImageFolder
        (covid/a.mp4 and covid/p1/b.mp4: "covid").
      patient_from_folder: a clip that gets no patient id from the metadata gets its
        folder below the input root (`patient_folder`): p07/a.mp4 and p07/b.mp4 are
        patient "p07", covid/p07/a.mp4 patient "covid/p07".
    """
    root = Path(input_path)
    if not root.exists():
        raise UserError(f"Input {input_path} does not exist.")
    skips: list[Skip] = []
    if root.is_file() and root.suffix.lower() in (".csv", ".tsv"):
        rows = metadata.read_csv(root, meta_required=False, columns=columns).rows
        root_dir, paths = root.parent, []
        for row in rows:
            p = _abs(root_dir / row["path"])
            if p.exists():
                paths.append(p)
            else:
                skips.append(Skip(row["path"], "file not found"))
        if metadata_csv is None and set(rows[0]) & set(metadata.META_COLUMNS):
            metadata_csv = root  # the manifest carries the metadata
    elif root.is_file():
        root_dir, paths = root.parent, [_abs(root)]
    else:
        root_dir = root
        paths, unsupported = _walk(root)
        skips += [
            Skip(str(p), f"unsupported format ({p.suffix or 'no extension'})") for p in unsupported
        ]

    index = metadata.MetaIndex(metadata_csv, columns) if metadata_csv is not None else None
    for note in index.notes if index else ():
        _warn(note, prefix="")
    root_abs = _abs(root_dir)
    specs = [ClipSpec(str(p), _rel(p, root_abs)) for p in paths]
    matches: dict[int, list[tuple[ClipSpec, bool]]] = {}  # id(row) -> (spec, exact)
    rows = {}
    for spec in specs:
        row, exact = index.find(Path(spec.source), spec.video_id) if index else (None, False)
        if row is not None:
            matches.setdefault(id(row), []).append((spec, exact))
            rows[id(row)] = row
    for key, found in matches.items():
        exact = [spec for spec, is_exact in found if is_exact]
        if len(found) > 1 and len(exact) != 1:  # one row, several files by name: none
            names = ", ".join(spec.video_id for spec, _ in found)
            skips.append(
                Skip(
                    rows[key]["path"], f"metadata row matches {len(found)} files ({names}); unused"
                )
            )
            continue
        spec = exact[0] if exact else found[0][0]
        spec.meta, spec.has_metadata = metadata.row_meta(rows[key]), True
    if label_from_folder:
        for spec in specs:
            folder = class_folder(spec.video_id)
            if folder and not spec.meta.get("label_name"):
                spec.meta = {**spec.meta, "label_name": folder}
    if patient_from_folder:
        for spec in specs:
            folder = patient_folder(spec.video_id, label_from_folder)
            if folder and not spec.meta.get("patient_id"):
                spec.meta = {**spec.meta, "patient_id": folder}
    if index is not None and require_metadata:
        skips += [
            Skip(s.source, "no metadata row (metadata required)")
            for s in specs
            if not s.has_metadata
        ]
        specs = [s for s in specs if s.has_metadata]
    if index is not None and Path(metadata_csv) != root:  # a manifest's rows: reported above
        skips += [Skip(r["path"], metadata.NO_FILE) for r in index.unused(set(matches))]
    return specs, skips


def ingest(
    input_path: str | os.PathLike,
    store: ClipStore,
    *,
    metadata_csv: str | os.PathLike | None = None,
    size: int = 224,
    stride: int = 1,
    fps: float | None = None,
    dedupe: bool = True,
    max_frames: int | None = None,
    workers: int = 1,
    preview_path: str | os.PathLike | None = None,
    require_metadata: bool = False,
    default_fps: float = decode.DEFAULT_FPS,
    progress: bool = True,
    keys: list[str] | None = None,
    columns: Mapping[str, str] | None = None,
    label_from_folder: bool = False,
    patient_from_folder: bool = False,
) -> list[Skip]:
    """Decodes, crops and stores every clip under `input_path`; returns what was skipped.

    Args:
      input_path: folder, CSV manifest or single clip (see `discover`).
      store: where processed clips go; clips already there (same content and
        options) are not decoded again.
      metadata_csv, require_metadata, columns, label_from_folder, patient_from_folder:
        see `discover`.
      size: output frames are size x size (aspect kept by padding).
      stride, fps: keep every stride-th frame, or resample to `fps` (not both).
      dedupe: drop frames nearly identical to the previous kept one (frozen video).
      max_frames: keep at most this many frames per clip (before dedupe).
      workers: processes (spawned, never forked); 1 runs in this process.
      preview_path: write a contact sheet PNG of every clip's crop here.
      default_fps: frame rate of sources that do not say (frame folders, some DICOM).
      progress: show a progress bar.
      keys: if given, the store keys of this input's clips (new and already
        stored) are appended, in input order; pass them to `write_dataset(keys=)`
        so clips from other inputs or options in the same store stay out.

    Raises:
      UserError: bad options, unreadable metadata CSV, or no usable clip at all.
    """
    if size < 8 or stride < 1 or workers < 1 or (max_frames is not None and max_frames < 1):
        raise UserError("size must be >= 8, and stride, workers and max_frames >= 1.")
    if fps is not None and (fps <= 0 or stride != 1):
        raise UserError("fps must be > 0 and cannot be combined with stride.")
    opts = Options(size, stride, fps, dedupe, max_frames, default_fps)
    specs, skips = discover(
        input_path,
        metadata_csv,
        require_metadata=require_metadata,
        columns=columns,
        label_from_folder=label_from_folder,
        patient_from_folder=patient_from_folder,
    )
    _warn_skips(skips, input_path)

    tiles_dir = store.root / STORE_PREVIEWS
    run_keys: dict[str, str] = {}  # key -> video_id, in input order
    todo: list[tuple[ClipSpec, str]] = []
    keyed: list[tuple[ClipSpec, str]] = []
    chosen: dict[str, ClipSpec] = {}  # key -> the copy kept: the first with metadata
    for spec in specs:
        try:
            key = clip_key(spec.source, opts)
        except OSError as e:
            skips.append(_skip(spec.source, f"unreadable ({e.strerror or e})"))
            continue
        keyed.append((spec, key))
        if key not in chosen or (spec.has_metadata and not chosen[key].has_metadata):
            chosen[key] = spec
    for spec, key in keyed:
        if chosen[key] is not spec:
            dup = chosen[key].video_id
            skips.append(_skip(spec.source, f"duplicate of {dup} (same content)"))
            continue
        run_keys[key] = spec.video_id
        if store.has(key):
            _refresh_meta(store, key, spec)
        else:
            todo.append((spec, key))

    for result in _run(todo, opts, workers, progress):
        if isinstance(result, Skip):
            skips.append(_skip(result.source, result.reason))
            continue
        key, clip, tile = result
        store.put(key, clip)
        tiles_dir.mkdir(exist_ok=True)
        preview.save_tile(tile, tiles_dir / f"{key[:16]}.png")

    done = [k for k in run_keys if store.has(k)]
    if not done:
        reasons = "; ".join(f"{Path(s.source).name}: {s.reason}" for s in skips[:4])
        raise UserError(
            f"No usable clips in {input_path}"
            + (f" ({len(skips)} skipped: {reasons})" if skips else "")
            + "."
        )
    if keys is not None:
        keys.extend(done)
    stored = {run_keys[k] for k in done}
    unlabeled = [s.video_id for s in specs if not s.has_metadata and s.video_id in stored]
    if metadata_csv is not None and unlabeled:
        _warn(
            f"{len(unlabeled)} clip(s) have no metadata row and are ingested unlabeled: "
            + ", ".join(unlabeled[:5])
            + (" ..." if len(unlabeled) > 5 else "")
        )
    if preview_path is not None:
        recs = [store.meta(k) for k in done]
        path = preview.save_contact_sheet(
            [_tile_for(store, k, tiles_dir) for k in done],
            preview_path,
            [f"{r['video_id']} ({r['n_frames']} fr)" for r in recs],
        )
        _warn(f"preview: {path}", prefix="")
    return skips


def clip_key(source: str | os.PathLike, opts: Options) -> str:
    """sha256 of the clip's content (a frame folder: its names and files) + options."""
    h = hashlib.sha256()
    source = Path(source)
    files = decode.frame_files(source) if source.is_dir() else [source]
    for f in files:
        if source.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    h.update(json.dumps({"v": INGEST_VERSION, **dataclasses.asdict(opts)}, sort_keys=True).encode())
    return h.hexdigest()


def process_clip(spec: ClipSpec, opts: Options) -> tuple[Clip, np.ndarray]:
    """Decode -> fan mask -> crop/resize -> dedupe: the stored `Clip` and its preview tile.

    Raises:
      ClipError: the clip cannot be used (the reason goes into the summary).
    """
    info = decode.clip_info(spec.source, default_fps=opts.default_fps)
    expected = info.n_frames_hint // opts.stride
    if opts.fps is not None and info.fps > 0:
        expected = int(info.n_frames_hint * min(1.0, opts.fps / info.fps))
    if opts.max_frames:
        expected = min(expected, opts.max_frames) if expected else opts.max_frames
    color_every = max(1, expected // COLOR_SAMPLES) if expected else 8
    stats_every = max(1, expected // STATS_FRAMES) if expected else 1
    select = {
        "stride": opts.stride,
        "fps": opts.fps,
        "max_frames": opts.max_frames,
        "default_fps": opts.default_fps,
    }

    stats, buffer, nbytes = None, [], 0
    idx, ts, samples = [], [], []  # samples: (position, frame as decoded) for the preview
    for frame in decode.iter_frames(spec.source, color_every=color_every, **select):
        if stats is None:
            stats = fan.FanStats(frame.gray.shape)
        elif frame.gray.shape != stats.shape:
            raise ClipError(f"frame size changes within the clip (frame {frame.index})")
        if len(idx) % stats_every == 0 or frame.color is not None:
            stats.add(frame.gray, frame.color)
        if len(idx) % color_every == 0:
            samples.append((len(idx), frame.color if frame.color is not None else frame.gray))
            if len(samples) > 2 * COLOR_SAMPLES:  # unknown length: thin out, bounded memory
                samples = samples[::2]
        idx.append(frame.index)
        ts.append(frame.time)
        if buffer is not None:
            buffer.append(frame.gray)
            nbytes += frame.gray.nbytes
            if nbytes > BUFFER_BYTES:
                buffer = None  # too long to hold: decode a second time below
    field = fan.detect_fan(stats)

    if buffer is None:
        buffer = (f.gray for f in decode.iter_frames(spec.source, **select))
    frames = np.zeros((len(idx), opts.size, opts.size), np.uint8)
    n = 0
    for n, gray in enumerate(buffer, 1):
        if n > len(idx) or gray.shape != stats.shape:
            break
        frames[n - 1] = field.crop(gray, opts.size)
    if n != len(idx):  # only a second decoding pass can disagree with the first
        raise ClipError("clip changed between decoding passes")

    keep = dedupe_frames(frames) if opts.dedupe else np.arange(len(frames))
    clip = Clip(
        video_id=spec.video_id,
        frames=frames[keep],
        frame_idx=np.asarray(idx, np.int32)[keep],
        timestamp=np.asarray(ts, np.float32)[keep],
        source=spec.source,
        **spec.meta,
    )
    pos, original = samples[len(samples) // 2]
    return clip, preview.render_tile(original, field.mask, field.bbox, frames[pos])


def dedupe_frames(frames: np.ndarray, threshold: float = DUPLICATE_MAD) -> np.ndarray:
    """Indices of frames to keep: each differs from the last kept one by > threshold.

    The difference is the mean |diff| of ~64 px block-mean thumbnails, so the
    threshold does not depend on the output size. On pocus_dev, repeated frames
    of frame-rate-converted clips differ by < 0.2 (compression noise), genuine
    consecutive frames by 0.2-10; a few nearly still frames of slow clips go too.
    """
    from PIL import Image

    f = max(1, min(frames.shape[1:]) // 64)
    # PIL's box reduce: ~6x faster than a numpy block mean over strided axes.
    thumbs = np.stack([np.asarray(Image.fromarray(x).reduce(f)) for x in frames]).astype(np.int16)
    keep = [0]
    for i in range(1, len(frames)):
        if np.abs(thumbs[i] - thumbs[keep[-1]]).mean() > threshold:
            keep.append(i)
    return np.asarray(keep)


# --- running clips ---


def _process_or_skip(args: tuple[ClipSpec, str, Options]):
    """Worker body: (key, clip, tile) or a Skip; never raises for one clip's problem."""
    spec, key, opts = args
    try:
        clip, tile = process_clip(spec, opts)
        return key, clip, tile
    except ClipError as e:
        return Skip(spec.source, e.reason)
    except MemoryError:
        return Skip(spec.source, "out of memory (try --max-frames or --stride)")
    except Exception as e:
        return Skip(spec.source, f"unexpected error: {type(e).__name__}: {decode._short(e)}")


def _run(todo, opts: Options, workers: int, progress: bool):
    """Yields each clip's result as it completes, with a progress bar."""
    from tqdm import tqdm

    tasks = [(spec, key, opts) for spec, key in todo]
    frames = 0
    with tqdm(
        total=len(tasks),
        desc="ingest",
        unit="clip",
        file=sys.stderr,
        disable=not progress or not tasks,
    ) as bar:
        if workers == 1 or len(tasks) <= 1:
            results, pool = map(_process_or_skip, tasks), None
        else:  # spawn, not fork: the parent may have JAX (and its threads) loaded
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)))
            results = pool.imap_unordered(_process_or_skip, tasks)
        try:
            for r in results:
                frames += 0 if isinstance(r, Skip) else r[1].n_frames
                bar.set_postfix(frames=frames, refresh=False)
                bar.update(1)
                yield r
        finally:
            if pool is not None:
                pool.terminate()  # all results are in (or we were interrupted)
                pool.join()


# --- store bookkeeping ---


def _stored_fields(spec: ClipSpec) -> dict:
    """The metadata fields a `ClipStore` record of this spec holds (as `Clip` fills them)."""
    meta = spec.meta
    return {
        "video_id": spec.video_id,
        "patient_id": meta.get("patient_id") or spec.video_id,
        "probe": meta.get("probe", "unknown"),
        "label_name": meta.get("label_name", ""),
        "findings": {k: int(meta.get("findings", {}).get(k, -1)) for k in FINDINGS},
        "source": spec.source,
    }


def _refresh_meta(store: ClipStore, key: str, spec: ClipSpec) -> None:
    """A stored clip whose id or metadata changed gets them updated, without decoding."""
    rec = store.meta(key)
    want = _stored_fields(spec)
    if all(rec.get(k) == v for k, v in want.items()):
        return
    clip = dataclasses.replace(store.load(key), **want)
    new = store.put(key, clip)
    if new["file"] != rec["file"]:
        (store.root / rec["file"]).unlink(missing_ok=True)


def _tile_for(store: ClipStore, key: str, tiles_dir: Path) -> np.ndarray:
    path = tiles_dir / f"{key[:16]}.png"
    if path.exists():
        return preview.load_tile(path)
    clip = store.load(key)  # its tile is gone: show the stored crop on both sides
    mid = clip.frames[clip.n_frames // 2]
    return preview.render_tile(mid, np.ones(mid.shape, bool), (0, 0, *mid.shape), mid)


# --- finding clips and metadata ---


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(clips, unsupported files) under root: videos, DICOM files, frame folders, and
    still images where a folder's image names are no numbered sequence. Symbolic links
    to folders are followed, except back up the folder's own path (a loop)."""
    clips, unsupported = [], []
    # Linked folders are followed; one that links back to a folder above it is not.
    chains = {str(root): {os.path.realpath(root)}}  # folder -> real paths down to it
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        chain, keep = chains.pop(dirpath), []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if not d.startswith(".") and real not in chain:
                keep.append(d)
                chains[os.path.join(dirpath, d)] = chain | {real}
        dirnames[:] = keep
        here = Path(dirpath)
        images = [
            f for f in filenames if Path(f).suffix.lower() in decode.IMAGE_EXTS and f[0] != "."
        ]
        frames = decode.is_sequence(images)  # else each image is a clip of its own
        if images and frames:
            clips.append(_abs(here))
        for name in sorted(filenames, key=decode.natural_key):
            p = here / name
            ext = p.suffix.lower()
            if name.startswith(".") or (frames and ext in decode.IMAGE_EXTS) or name == "DICOMDIR":
                continue
            if decode.kind_of(p) in ("video", "dicom", "image"):
                clips.append(_abs(p))
            elif ext not in _IGNORED_EXTS:
                unsupported.append(p)
    return clips, unsupported


def class_folder(video_id: str) -> str:
    """The top folder of a clip below the input root ("" for a clip directly in it):
    its label under --label-from-folder."""
    folder, sep, _ = video_id.partition("/")
    return folder if sep else ""


def patient_folder(video_id: str, label_from_folder: bool = False) -> str:
    """The folder of a clip below the input root, its patient under --patient-from-folder
    ("" for a clip directly in the root, or, with --label-from-folder, directly in its
    class folder: a class is not a patient)."""
    folder = video_id.rpartition("/")[0]
    if label_from_folder and "/" not in folder:
        return ""
    return folder


def _abs(p: Path) -> Path:
    """An absolute path that keeps symbolic links: a clip linked into a folder (or a class
    folder, --label-from-folder) is known by where it was found, not by its target."""
    return Path(os.path.abspath(p))


def _rel(p: Path, root: Path) -> str:
    try:
        rel = p.relative_to(root).as_posix()
    except ValueError:
        rel = p.name
    return p.name if rel in ("", ".") else rel


def _warn_skips(skips: list[Skip], input_path) -> None:
    """A warning line per skip; metadata rows without a file in one line when many."""
    listed, rows = metadata.split_rows_without_file(skips)
    for s in listed:
        _warn(f"skipped {s.source}: {s.reason}")
    if rows:
        _warn(
            f"skipped {len(rows)} metadata rows without a file under {input_path}: "
            + ", ".join(s.source for s in rows[:3])
            + " ... (all in dataset.json under 'skipped')"
        )


def _skip(source: str, reason: str) -> Skip:
    _warn(f"skipped {source}: {reason}")
    return Skip(source, reason)


def _warn(message: str, prefix: str = "warning: ") -> None:
    from tqdm import tqdm

    tqdm.write(prefix + message, file=sys.stderr)
