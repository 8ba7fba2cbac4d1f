"""Real-clip ingest: find clips, join metadata, decode -> fan crop -> resize -> `ClipStore`.

    skips = ingest("clips/", ClipStore("out/clips"), metadata_csv="clips/metadata.csv",
                   size=224, workers=4, preview_path="out/preview.png")

Input: a folder (recursive: video files, DICOM files, folders of image frames),
a CSV manifest (column `path`, relative to the CSV; its other columns are the
metadata unless a metadata CSV is given) or one clip. Metadata CSV (like
pocus_dev's): `path` plus any of `probe`, `label`, `patient_id`, `b_lines`,
`a_lines`, `effusion`, `consolidation(s)`, `pleural_irregular` (0/1, empty =
unknown), joined by path (relative to the CSV or the input), else by unique file
name. A row without a file is a skip; a file without a row is ingested unlabeled
with a warning (skipped with `require_metadata=True`).

Each clip is stored under sha256(content [+ frame names] + options): a re-run
decodes only what is not stored yet (a changed CSV row only rewrites metadata).
A bad clip is skipped with its reason and a warning line; `UserError` only when
nothing usable remains. With workers > 1, call from under `if __name__ ==
"__main__":` (spawned workers re-import the caller's main module).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import posixpath
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep import decode, fan, preview
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

FINDING_ALIASES = {
    "b_lines": ("b_lines", "blines"),
    "a_lines": ("a_lines", "alines"),
    "effusion": ("effusion", "effusions"),
    "consolidation": ("consolidation", "consolidations"),
    "pleural_irregular": ("pleural_irregular", "pleural_irregularity", "pleural_irregularities"),
}
META_COLUMNS = ("probe", "label", "patient_id") + FINDINGS
_PROBES = {"convex": "convex", "curvilinear": "convex", "curved": "convex", "linear": "linear"}
_TRUE, _FALSE = {"1", "1.0", "true", "yes", "y"}, {"0", "0.0", "false", "no", "n"}
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
) -> tuple[list[ClipSpec], list[Skip]]:
    """The clips under `input_path` with their metadata, and what was skipped.

    Args:
      input_path: a folder (recursive), a CSV manifest with a `path` column, or one clip.
      metadata_csv: per-clip metadata joined on path / file name (see module doc).
      require_metadata: skip files that have no metadata row (default: unlabeled).
    """
    root = Path(input_path)
    if not root.exists():
        raise UserError(f"Input {input_path} does not exist.")
    skips: list[Skip] = []
    if root.is_file() and root.suffix.lower() in (".csv", ".tsv"):
        rows = _read_csv(root, required=("path",), meta_required=False)
        root_dir, paths = root.parent, []
        for row in rows:
            p = (root_dir / row["path"]).resolve()
            if p.exists():
                paths.append(p)
            else:
                skips.append(Skip(row["path"], "file not found"))
        if metadata_csv is None and set(rows[0]) & set(META_COLUMNS):
            metadata_csv = root  # the manifest carries the metadata
    elif root.is_file():
        root_dir, paths = root.parent, [root.resolve()]
    else:
        root_dir = root
        paths, unsupported = _walk(root)
        skips += [
            Skip(str(p), f"unsupported format ({p.suffix or 'no extension'})") for p in unsupported
        ]

    index = _MetaIndex(metadata_csv) if metadata_csv is not None else None
    specs = []
    for p in paths:
        video_id = _rel(p, root_dir.resolve())
        spec = ClipSpec(str(p), video_id)
        row = index.find(p, video_id) if index else None
        if row is not None:
            spec.meta, spec.has_metadata = _row_meta(row), True
        elif index is not None and require_metadata:
            skips.append(Skip(str(p), "no metadata row (metadata required)"))
            continue
        specs.append(spec)
    if index is not None and Path(metadata_csv) != root:  # a manifest's rows: reported above
        skips += [Skip(r["path"], "metadata row without a file") for r in index.unused()]
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
) -> list[Skip]:
    """Decodes, crops and stores every clip under `input_path`; returns what was skipped.

    Args:
      input_path: folder, CSV manifest or single clip (see `discover`).
      store: where processed clips go; clips already there (same content and
        options) are not decoded again.
      metadata_csv, require_metadata: see `discover`.
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
    specs, skips = discover(input_path, metadata_csv, require_metadata=require_metadata)
    for s in skips:
        _warn(f"skipped {s.source}: {s.reason}")
    unlabeled = [s.video_id for s in specs if not s.has_metadata]
    if metadata_csv is not None and unlabeled:
        _warn(
            f"{len(unlabeled)} clip(s) have no metadata row and are ingested unlabeled: "
            + ", ".join(unlabeled[:5])
            + (" ..." if len(unlabeled) > 5 else "")
        )

    tiles_dir = store.root / STORE_PREVIEWS
    run_keys: dict[str, str] = {}  # key -> video_id, in input order
    todo: list[tuple[ClipSpec, str]] = []
    for spec in specs:
        try:
            key = clip_key(spec.source, opts)
        except OSError as e:
            skips.append(_skip(spec.source, f"unreadable ({e.strerror or e})"))
            continue
        if key in run_keys:
            skips.append(_skip(spec.source, f"duplicate of {run_keys[key]} (same content)"))
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
    """(clips, unsupported files) under root: videos, DICOM files, frame folders."""
    clips, unsupported = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if any(
            Path(f).suffix.lower() in decode.IMAGE_EXTS for f in filenames if not f.startswith(".")
        ):
            clips.append(here.resolve())
        for name in sorted(filenames, key=decode.natural_key):
            p = here / name
            ext = p.suffix.lower()
            if name.startswith(".") or ext in decode.IMAGE_EXTS or name == "DICOMDIR":
                continue
            if decode.kind_of(p) in ("video", "dicom"):
                clips.append(p.resolve())
            elif ext not in _IGNORED_EXTS:
                unsupported.append(p)
    return clips, unsupported


def _rel(p: Path, root: Path) -> str:
    try:
        rel = p.relative_to(root).as_posix()
    except ValueError:
        rel = p.name
    return p.name if rel in ("", ".") else rel


def _read_csv(path: Path, *, required: Sequence[str], meta_required: bool) -> list[dict]:
    """Rows of a CSV with normalised column names; UserError on bad encoding/columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV."
        ) from None
    except (OSError, csv.Error) as e:
        raise UserError(f"Cannot read {path}: {e}") from None
    header = header or []
    cols = [c.strip().lower().replace("-", "_").replace(" ", "_") for c in header]
    for canonical, aliases in FINDING_ALIASES.items():
        cols = [canonical if c in aliases else c for c in cols]
    missing = [c for c in required if c not in cols]
    if missing or (meta_required and not set(cols) & set(META_COLUMNS)):
        raise UserError(
            f"{path} has columns [{', '.join(header)}]; expected 'path' plus "
            + ("any of " + ", ".join(META_COLUMNS) if meta_required else "optional metadata")
            + " (findings may also be spelled consolidations, pleural_irregularity)."
        )
    out = []
    for line, values in enumerate(rows, 2):
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(cols):
            raise UserError(f"{path} line {line} has {len(values)} fields, the header {len(cols)}.")
        row = {c: v.strip() for c, v in zip(cols, values)}
        row["_line"] = line
        if not row.get("path"):
            raise UserError(f"{path} line {line} has an empty 'path'.")
        out.append(row)
    if not out:
        raise UserError(f"{path} has a header but no rows.")
    return out


def _row_meta(row: dict) -> dict:
    """Clip fields from a metadata row (validated in `_MetaIndex`)."""
    return {
        "probe": _PROBES.get(row.get("probe", "").lower(), "unknown"),
        "label_name": row.get("label", ""),
        "patient_id": row.get("patient_id", ""),
        "findings": {k: _finding(row, k) for k in FINDINGS},
    }


def _finding(row: dict, name: str) -> int:
    v = row.get(name, "").strip().lower()
    if v in ("", "-1", "na", "nan", "?", "unknown"):
        return -1
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    raise ValueError(v)


class _MetaIndex:
    """Metadata rows, found by path: absolute (relative to the CSV), else the longest
    unambiguous common tail of the path (so a CSV one folder up still matches; a
    tail of one component is a match by file name)."""

    def __init__(self, csv_path: str | os.PathLike):
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise UserError(f"Metadata CSV {csv_path} does not exist.")
        self.rows = _read_csv(csv_path, required=("path",), meta_required=True)
        self.by_abs, self.by_tail, self.used = {}, {}, set()
        for row in self.rows:
            for k in FINDINGS:
                try:
                    _finding(row, k)
                except ValueError:
                    raise UserError(
                        f"{csv_path} line {row['_line']}: {k}={row[k]!r}; use 0, 1 "
                        "or empty (unknown)."
                    ) from None
            rel = posixpath.normpath(row["path"].replace("\\", "/"))
            absolute = (csv_path.parent / rel).resolve()
            if absolute in self.by_abs:
                raise UserError(
                    f"{csv_path} lists {row['path']} twice (lines "
                    f"{self.by_abs[absolute]['_line']} and {row['_line']})."
                )
            self.by_abs[absolute] = row
            parts = rel.split("/")
            for k in range(1, len(parts) + 1):
                self.by_tail.setdefault("/".join(parts[-k:]), []).append(row)

    def find(self, path: Path, video_id: str) -> dict | None:
        row = self.by_abs.get(path)
        parts = video_id.split("/")
        for k in range(len(parts), 0, -1):
            if row is not None:
                break
            rows = self.by_tail.get("/".join(parts[-k:]), [])
            if len(rows) > 1:
                break  # ambiguous; shorter tails only more so
            row = rows[0] if rows else None
        if row is not None:
            self.used.add(id(row))
        return row

    def unused(self) -> list[dict]:
        return [r for r in self.rows if id(r) not in self.used]


def _skip(source: str, reason: str) -> Skip:
    _warn(f"skipped {source}: {reason}")
    return Skip(source, reason)


def _warn(message: str, prefix: str = "warning: ") -> None:
    from tqdm import tqdm

    tqdm.write(prefix + message, file=sys.stderr)
