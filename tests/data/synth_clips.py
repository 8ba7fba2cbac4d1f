"""Tiny generated ultrasound-like clips for the ingest tests (made at test time, in tmp).

`lus_clip` draws a convex sector or a linear field of moving speckle on black,
framed the way exported clips are: static white text, a coloured logo, a
coloured orientation marker, a depth ruler of dots, a gray colour bar and a
frame counter that changes every frame. It returns the frames and the true
field and overlay masks, so tests can check what the fan detector keeps.
Writers put such frames into mp4/avi/gif (PyAV), DICOM (pydicom) or PNG folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

H, W = 160, 240


def lus_clip(
    n_frames: int = 12,
    *,
    probe: str = "convex",
    overlays: bool = True,
    seed: int = 0,
    black: int = 0,
    h: int = H,
    w: int = W,
):
    """(rgb uint8 [T, H, W, 3], field bool [H, W], overlay bool [H, W])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if probe == "convex":
        apex_y = -0.25 * h
        r = np.hypot(xx - w / 2, yy - apex_y)
        angle = np.degrees(np.arctan2(xx - w / 2, yy - apex_y))
        field = (np.abs(angle) < 28) & (r > 0.3 * h) & (r < 1.3 * h)
    else:
        field = (xx >= 0.25 * w) & (xx < 0.75 * w) & (yy >= 0.08 * h) & (yy < 0.95 * h)
    depth_gain = np.clip(1.1 - yy / h * 0.6, 0.3, 1.0)
    base = rng.rayleigh(45, (h, w)).astype(np.float32)
    frames = np.zeros((n_frames, h, w, 3), np.uint8)
    overlay = np.zeros((h, w), bool)
    for t in range(n_frames):
        speckle = 0.6 * base + 0.4 * rng.rayleigh(45, (h, w)).astype(np.float32)
        img = speckle * depth_gain
        pleura = int(0.35 * h) + t % 3  # a bright line that slides a little
        img[pleura : pleura + 3] += 90
        gray = np.where(field, np.clip(img, 0, 255), black).astype(np.uint8)
        frames[t] = gray[..., None]
    if overlays:
        static = Image.new("RGB", (w, h))
        mask = Image.new("L", (w, h))
        for canvas, fill in ((ImageDraw.Draw(static), None), (ImageDraw.Draw(mask), 255)):
            canvas.text((2, 2), "LOGIQ 12cm", fill=fill or (255, 255, 255))
            canvas.rectangle([w - 26, 2, w - 4, 12], fill=fill or (255, 140, 0))  # logo
            canvas.rectangle([44, 8, 48, 12], fill=fill or (0, 255, 0))  # orientation mark
            canvas.rectangle([w - 18, 22, w - 10, 70], fill=fill or (200, 200, 200))  # bar
            for y in range(90, h - 4, 12):  # depth ruler
                canvas.rectangle([w - 6, y, w - 4, y + 2], fill=fill or (255, 255, 255))
        static_px, static_mask = np.asarray(static), np.asarray(mask) > 0
        gradient = np.linspace(255, 40, 70 - 22 + 1)[:, None]  # the colour bar is a ramp
        static_px = static_px.copy()
        static_px[22:71, w - 18 : w - 9] = gradient.astype(np.uint8)[..., None]
        overlay |= static_mask
        for t in range(n_frames):
            frames[t][static_mask] = static_px[static_mask]
            counter = Image.fromarray(frames[t])
            ImageDraw.Draw(counter).text((2, 20), f"F{t:03d}", fill=(255, 255, 255))
            frames[t] = np.asarray(counter)
        overlay[18:34, 0:30] = True
    assert not (overlay & field).any(), "overlays must lie outside the field"
    return frames, field, overlay


def write_video(
    path: str | Path,
    rgb: np.ndarray,
    *,
    fps: int = 10,
    codec: str | None = None,
    pix_fmt: str | None = None,
) -> Path:
    """Writes rgb uint8 [T, H, W, 3] with PyAV; codec from the extension by default."""
    import av

    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".gif" and codec is None:  # PIL: adaptive palettes, like real exported GIFs
        images = [Image.fromarray(f) for f in rgb]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
        return path
    codec = codec or {".avi": "mpeg4"}.get(ext, "libx264")
    pix_fmt = pix_fmt or ("rgb8" if codec == "gif" else "yuv420p")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "18"}
        elif codec == "mpeg4":
            stream.bit_rate = 4_000_000
        for frame in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: str | Path, rgb: np.ndarray, *, ext: str = ".png") -> Path:
    """One image per frame, named so that only a natural sort orders them (f2 < f10)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(rgb):
        Image.fromarray(frame).save(folder / f"f{i}{ext}")
    return folder


def write_dicom(
    path: str | Path, rgb: np.ndarray, *, fps: float = 20.0, photometric: str = "RGB"
) -> Path:
    """A multi-frame ultrasound DICOM (uncompressed), RGB or MONOCHROME2."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US multi-frame
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "US"
    ds.NumberOfFrames = len(rgb)
    ds.Rows, ds.Columns = rgb.shape[1:3]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.CineRate = int(fps)
    ds.FrameTime = 1000.0 / fps
    if photometric == "RGB":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        gray = rgb[..., 0] if photometric == "MONOCHROME2" else 255 - rgb[..., 0]
        ds.PixelData = np.ascontiguousarray(gray).tobytes()
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path
