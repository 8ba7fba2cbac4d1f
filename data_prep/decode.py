"""Decode one clip to grayscale uint8 frames: video files, DICOM cine, frame folders.

`iter_frames` streams a clip one `Frame` at a time (bounded memory for long
clips) with frame selection (every k-th frame or a target fps, and a cap);
`decode` collects the same into arrays. Anything wrong with the clip itself
raises `ClipError` with a short reason for the dataset summary; the caller
skips that clip and carries on.

Sources:
  video   mp4/m4v/avi/mov/mpeg/mpg/mkv/webm/wmv/ogv/gif through PyAV (one decoder
          thread; frames are counted by decoding, container counts are hints).
          Gray is the raw luma, never range-stretched: the Y plane itself for
          8-bit YUV, else `to_ndarray(format="gray")` with JPEG range in and out
          (GIFs decode to bgra; that converts them to BT.601 luma).
  dicom   .dcm/.dicom or any file with the DICM preamble, through pydicom
          (optional extra). Multi-frame MONOCHROME1/2, RGB, YBR, PALETTE COLOR;
          fps from CineRate, RecommendedDisplayFrameRate, FrameTime or
          FrameTimeVector.
  frames  a folder of PNG/JPEG/BMP/TIFF frames, naturally sorted (2 < 10);
          its frame rate is `default_fps`.
  image   one still PNG/JPEG/BMP/TIFF file: a clip of one frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

VIDEO_EXTS = frozenset(
    {".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".mkv", ".webm", ".wmv", ".ogv", ".gif"}
)
DICOM_EXTS = frozenset({".dcm", ".dicom"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
# Frame rate assumed when a source does not say (frame folders, DICOM without timing).
DEFAULT_FPS = 30.0

# 8-bit YUV layouts whose first plane is the luma (read directly, no conversion).
_YUV8 = frozenset(
    {
        "yuv420p",
        "yuvj420p",
        "yuv422p",
        "yuvj422p",
        "yuv444p",
        "yuvj444p",
        "yuv440p",
        "yuvj440p",
        "yuv411p",
        "yuv410p",
        "nv12",
        "nv21",
        "gray",
    }
)
# Uncompressed DICOM transfer syntaxes (implicit LE, explicit LE, explicit BE).
_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
_ISO_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"})


class ClipError(Exception):
    """A clip that cannot be used; `reason` is a short phrase for the summary."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class Frame:
    """One decoded frame.

    Attributes:
      index: index of the frame in the original clip (display order, from 0).
      time: seconds from the clip's first frame.
      gray: uint8 [H, W] luma.
      color: uint8 [H, W, 3] RGB, only on the frames asked for (`color_every`)
        and only for sources that have colour; else None.
    """

    index: int
    time: float
    gray: np.ndarray
    color: np.ndarray | None = None


@dataclasses.dataclass
class ClipInfo:
    """What a clip says about itself before decoding (hints, not facts)."""

    kind: str  # "video" | "dicom" | "frames"
    fps: float  # source frame rate (DEFAULT_FPS or the caller's when unknown)
    n_frames_hint: int  # frame count from the header, 0 when unknown


@dataclasses.dataclass
class Decoded:
    """A whole clip: gray uint8 [T, H, W], original frame indices, timestamps, fps."""

    frames: np.ndarray
    frame_idx: np.ndarray
    timestamp: np.ndarray
    fps: float


def kind_of(path: str | os.PathLike) -> str | None:
    """'video', 'dicom', 'frames' or 'image' for a path we can read, else None."""
    path = Path(path)
    if path.is_dir():
        return "frames" if any(_is_image(p) for p in path.iterdir()) else None
    if _is_image(path):
        return "image"
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in DICOM_EXTS or (ext == "" and _has_dicm_preamble(path)):
        return "dicom"
    return None


def natural_key(name: str) -> list:
    """Sort key where digit runs compare as numbers: frame2 < frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural order (hidden files ignored)."""
    return sorted(
        (p for p in Path(folder).iterdir() if _is_image(p)), key=lambda p: natural_key(p.name)
    )


def clip_info(path: str | os.PathLike, *, default_fps: float = DEFAULT_FPS) -> ClipInfo:
    """Frame rate and frame-count hint of a clip, without decoding its frames."""
    path = Path(path)
    kind = _require_kind(path)
    if kind == "frames":
        return ClipInfo("frames", default_fps, len(frame_files(path)))
    if kind == "image":
        return ClipInfo("image", default_fps, 1)
    if kind == "dicom":
        ds = _read_dicom_header(path)
        fps, _ = _dicom_timing(ds, default_fps)
        return ClipInfo("dicom", fps, int(getattr(ds, "NumberOfFrames", 1) or 1))
    _check_file(path)
    with _open_video(path) as (_, stream):
        return ClipInfo("video", _stream_fps(stream, default_fps), int(stream.frames or 0))


def iter_frames(
    path: str | os.PathLike,
    *,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    color_every: int = 0,
    default_fps: float = DEFAULT_FPS,
) -> Iterator[Frame]:
    """Streams the selected frames of a clip.

    Args:
      path: a video file, a DICOM file or a folder of frames.
      stride: keep every `stride`-th frame (1: all).
      fps: keep at most this many frames per second of video (the first frame
        of each 1/fps interval); None keeps the source rate. Not with stride > 1.
      max_frames: stop after this many kept frames (the rest is not decoded).
      color_every: attach the RGB frame to every `color_every`-th kept frame
        (0: never); used to find coloured overlays without converting every frame.
      default_fps: frame rate of sources that do not say.

    Raises:
      ClipError: the clip is empty, truncated, corrupt, unreadable, in an
        unsupported format, has no video stream or no frames.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if fps is not None and stride != 1:
        raise ValueError("give either stride or fps, not both")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    kind = _require_kind(path)
    raw = {"video": _raw_video, "dicom": _raw_dicom, "frames": _raw_folder, "image": _raw_folder}[
        kind
    ]
    kept = 0
    last_bucket = -1
    for index, time, to_arrays in raw(path, default_fps):
        if fps is not None:
            bucket = int(np.floor(time * fps + 1e-6))
            if bucket <= last_bucket:
                continue
            last_bucket = bucket
        elif index % stride:
            continue
        want_color = color_every > 0 and kept % color_every == 0
        gray, color = to_arrays(want_color)
        yield Frame(index, time, gray, color)
        kept += 1
        if max_frames is not None and kept >= max_frames:
            return  # closing the source generator stops decoding here
    if kept == 0:
        raise ClipError("no frames decoded")


def decode(path: str | os.PathLike, **kwargs) -> Decoded:
    """Decodes a whole clip into arrays (see `iter_frames` for the arguments)."""
    frames, idx, ts = [], [], []
    for fr in iter_frames(path, **kwargs):
        frames.append(fr.gray)
        idx.append(fr.index)
        ts.append(fr.time)
    if len({f.shape for f in frames}) > 1:
        raise ClipError("frame size changes within the clip")
    fps = clip_info(path, default_fps=kwargs.get("default_fps", DEFAULT_FPS)).fps
    return Decoded(np.stack(frames), np.asarray(idx, np.int32), np.asarray(ts, np.float32), fps)


# --- sources: each yields (index, time, to_arrays(want_color) -> (gray, color|None)) ---

_RawFrames = Iterator[tuple[int, float, Callable[[bool], tuple[np.ndarray, np.ndarray | None]]]]


def _raw_video(path: Path, default_fps: float) -> _RawFrames:
    import av

    _check_file(path)
    with _open_video(path) as (container, stream):
        fps = _stream_fps(stream, default_fps)
        t0 = None
        index = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else index / fps
                t0 = t if t0 is None else t0

                def to_arrays(want_color, frame=frame):
                    color = frame.to_ndarray(format="rgb24") if want_color else None
                    return _video_gray(frame), color

                yield index, float(t - t0), to_arrays
                index += 1
        except av.error.FFmpegError as e:
            where = f"after {index} frames" if index else "at the first frame"
            raise ClipError(f"corrupt or truncated stream ({where}): {_short(e)}") from None


def _raw_dicom(path: Path, default_fps: float) -> _RawFrames:
    from pydicom.pixels import iter_pixels

    ds = _read_dicom_header(path)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ClipError("DICOM file has no pixel data")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?"))
    if syntax in _NATIVE_SYNTAXES:  # uncompressed: the size is known up front
        need = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(getattr(ds, "SamplesPerPixel", 1))
            * int(ds.BitsAllocated)
            // 8
            * int(getattr(ds, "NumberOfFrames", 1) or 1)
        )
        have = path.stat().st_size
        if have < need:
            raise ClipError(f"truncated DICOM (pixel data needs {need} bytes, file has {have})")
    fps, times = _dicom_timing(ds, default_fps)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    bits_stored = int(getattr(ds, "BitsStored", 8) or 8)
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    try:
        pixels = iter_pixels(path)
        for index in range(n):
            try:
                arr = next(pixels)
            except StopIteration:
                raise ClipError(f"truncated DICOM: {index} of {n} frames") from None
            gray, color = _dicom_frame_to_arrays(arr, ds, photometric, bits_stored)
            t = times[index] if times is not None and index < len(times) else index / fps
            yield index, float(t), (lambda want, g=gray, c=color: (g, c if want else None))
    except ClipError:
        raise
    except Exception as e:
        raise ClipError(
            f"DICOM pixel data not decodable (transfer syntax {syntax}; "
            f"compressed syntaxes may need pylibjpeg or gdcm): {_short(e)}"
        ) from None


def _raw_folder(path: Path, default_fps: float) -> _RawFrames:
    from PIL import Image, UnidentifiedImageError

    files = frame_files(path) if path.is_dir() else [path]  # a folder, or one image
    if not files:
        raise ClipError("frame folder has no images")
    shape = None
    for index, file in enumerate(files):
        try:
            with Image.open(file) as im:
                im.load()
                rgb = (
                    np.asarray(im.convert("RGB"))
                    if im.mode not in ("L", "I", "I;16", "F")
                    else None
                )
                gray = np.asarray(im.convert("L")) if rgb is None else _luma(rgb)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise ClipError(f"unreadable frame {file.name}: {_short(e)}") from None
        if shape is None:
            shape = gray.shape
        elif gray.shape != shape:
            raise ClipError(
                f"frame {file.name} is {gray.shape[1]}x{gray.shape[0]}, "
                f"the first frame {shape[1]}x{shape[0]}"
            )
        yield index, index / default_fps, (lambda want, g=gray, c=rgb: (g, c if want else None))


# --- helpers ---


def is_sequence(names: list[str]) -> bool:
    """Whether image file names look like the frames of one clip: equal once their digit
    runs are dropped (frame1.png, frame2.png), unlike a folder of unrelated stills."""
    return len({re.sub(r"\d+", "", n.lower()) for n in names}) <= 1


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _has_dicm_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _require_kind(path: Path) -> str:
    if not path.exists():
        raise ClipError("file not found")
    kind = kind_of(path)
    if kind is None:
        what = "folder without image frames" if path.is_dir() else f"'{path.suffix or path.name}'"
        raise ClipError(f"unsupported format ({what})")
    return kind


def _check_file(path: Path) -> None:
    """Cheap checks before FFmpeg: empty, unreadable, container cut short."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise ClipError("empty file")
        with open(path, "rb") as f:
            head = f.read(12)
            reason = _truncation(f, head, size)
    except PermissionError:
        raise ClipError("unreadable (permission denied)") from None
    except OSError as e:
        raise ClipError(f"unreadable ({_short(e)})") from None
    if reason:
        raise ClipError(reason)


def _truncation(f, head: bytes, size: int) -> str | None:
    """A reason when the container's own sizes say the file was cut short."""
    if head[4:8] in _ISO_BMFF_BOXES:
        # ISO BMFF (mp4/mov): top-level boxes must tile the file; 'moov' is the index.
        offset, boxes = 0, []
        while offset + 8 <= size:
            f.seek(offset)
            hdr = f.read(16)
            box_size, box_type = struct.unpack(">I4s", hdr[:8])
            if box_size == 1 and len(hdr) >= 16:
                box_size = struct.unpack(">Q", hdr[8:16])[0]
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                return f"corrupt container (bad '{_ascii(box_type)}' box)"
            boxes.append(box_type)
            if offset + box_size > size:
                return (
                    f"truncated file ('{_ascii(box_type)}' box needs {offset + box_size} "
                    f"bytes, file has {size})"
                )
            offset += box_size
        if boxes and boxes[0] in _ISO_BMFF_BOXES and b"moov" not in boxes:
            return "truncated or corrupt file (no 'moov' index)"
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        riff_size = struct.unpack("<I", head[4:8])[0]
        if riff_size and riff_size + 8 > size:
            return f"truncated file (RIFF header says {riff_size + 8} bytes, file has {size})"
        return None
    if head[:4] == b"\x1a\x45\xdf\xa3":  # Matroska / WebM (EBML)
        return _ebml_truncation(f, size)
    if head[:4] == b"GIF8":
        f.seek(max(0, size - 64))
        if not f.read().rstrip(b"\x00").endswith(b";"):
            return "truncated file (no GIF trailer)"
    return None


def _ebml_truncation(f, size: int) -> str | None:
    """Matroska: the Segment element's declared size must fit in the file."""

    def vint(keep_marker: bool) -> tuple[int, int]:
        first = f.read(1)
        if not first:
            raise EOFError
        n = 9 - first[0].bit_length()  # leading zeros + 1 = length in bytes
        if n > 8:
            raise ValueError("bad EBML length")
        value = first[0] if keep_marker else first[0] & (0xFF >> n)
        for b in f.read(n - 1):
            value = (value << 8) | b
        return value, n

    try:
        f.seek(0)
        for _ in range(2):  # the EBML header, then the Segment
            element, _ = vint(keep_marker=True)
            length, n = vint(keep_marker=False)
            if element == 0x18538067:
                if length == (1 << (7 * n)) - 1:  # "unknown size" (live streams)
                    return None
                end = f.tell() + length
                if end > size:
                    return f"truncated file (Segment needs {end} bytes, file has {size})"
                return None
            f.seek(f.tell() + length)
    except (EOFError, ValueError):
        return "truncated or corrupt file (bad Matroska header)"
    return None


@contextlib.contextmanager
def _open_video(path: Path):
    """(container, first video stream), with FFmpeg's errors as ClipError."""
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ClipError(f"corrupt or unsupported data ({_short(e)})") from None
    except OSError as e:
        raise ClipError(f"unreadable ({_short(e)})") from None
    try:
        if not container.streams.video:
            raise ClipError("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one clip per core; workers parallelise
        yield container, stream
    finally:
        container.close()


def _video_gray(frame) -> np.ndarray:
    """Raw luma of a PyAV frame: the Y plane itself for 8-bit YUV, else FFmpeg's gray."""
    fmt = frame.format.name
    if fmt in _YUV8:
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        return y[:, : plane.width].copy()
    # Full range in and out: clips with unspecified range are otherwise stretched and clipped.
    return frame.to_ndarray(format="gray", src_color_range="JPEG", dst_color_range="JPEG")


def _stream_fps(stream, default_fps: float) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return default_fps


def _read_dicom_header(path: Path):
    try:
        import pydicom
    except ImportError:
        raise ClipError("DICOM needs pydicom (pip install 'lusjax[dicom]')") from None
    try:
        if path.stat().st_size == 0:
            raise ClipError("empty file")
        # Deferred: large values (the pixels) stay on disk, but their tags are listed.
        return pydicom.dcmread(path, defer_size=4096)
    except ClipError:
        raise
    except PermissionError:
        raise ClipError("unreadable (permission denied)") from None
    except Exception as e:
        raise ClipError(f"corrupt or truncated DICOM ({_short(e)})") from None


def _dicom_timing(ds, default_fps: float) -> tuple[float, np.ndarray | None]:
    """(fps, per-frame times or None) from the cine tags, else `default_fps`."""
    vector = getattr(ds, "FrameTimeVector", None)
    if vector is not None and len(vector) > 1:
        # Each entry is the time since the previous frame (ms); the first is 0.
        times = np.cumsum(np.asarray([float(v) for v in vector])) / 1000.0
        span = times[-1] - times[0]
        fps = (len(times) - 1) / span if span > 0 else default_fps
        return float(fps), times - times[0]
    for tag in ("CineRate", "RecommendedDisplayFrameRate"):
        value = getattr(ds, tag, None)
        if value not in (None, "") and float(value) > 0:
            return float(value), None
    frame_time = getattr(ds, "FrameTime", None)
    if frame_time not in (None, "") and float(frame_time) > 0:
        return 1000.0 / float(frame_time), None
    return default_fps, None


def _dicom_frame_to_arrays(arr: np.ndarray, ds, photometric: str, bits_stored: int):
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        arr = (arr >> 8).astype(np.uint8) if arr.dtype != np.uint8 else arr
        return _luma(arr), arr
    if arr.dtype != np.uint8:
        # >8-bit data: scale the stored range to 0..255 (US cine is 8-bit almost always).
        top = float(2 ** min(bits_stored, 16) - 1)
        arr = np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    if arr.ndim == 3:  # RGB (pydicom has already converted YBR to RGB)
        return _luma(arr), arr
    if photometric == "MONOCHROME1":  # 0 is white
        arr = 255 - arr
    return arr, None


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 RGB, as FFmpeg computes gray from RGB."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _short(e: BaseException, limit: int = 120) -> str:
    """A one-line message: FFmpeg's own words without errno and path, else str(e)."""
    text = getattr(e, "strerror", None) if type(e).__module__.startswith("av") else None
    text = " ".join(str(text or e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ascii(b: bytes) -> str:
    return b.decode("ascii", "replace")
