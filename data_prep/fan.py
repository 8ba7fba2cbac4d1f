"""Find the ultrasound field (convex sector or linear rectangle) of a clip; crop to it.

Exported clips carry framing around the image: black borders, text, logos,
rulers, colour bars, markers. What tells the field apart is that it *moves*
(speckle changes from frame to frame) while framing is static, and that it is
gray while markers are often coloured. So, over the frames of a clip:

  1. `FanStats` accumulates, on a downsampled grid, per-pixel temporal mean,
     standard deviation and max of the luma, and how often the pixel is
     coloured (from the RGB of a few frames).
  2. `detect_fan` marks pixels that vary over time more than the background's
     noise and more than compression noise on bright static text would (or,
     for clips too short or too still for that, pixels that are bright and
     textured), drops statically coloured pixels, cleans the map with a
     closing and an opening (the opening removes text strokes, tick marks and
     thin lines), keeps the largest connected component and fills its convex
     hull: a binary mask at full resolution, its bounding box, how it was
     found and the background's black level.
  3. `FanField.crop` cuts a frame to the bounding box, zeroes everything
     outside the mask and resizes to size x size, padding to keep the aspect.

Nothing plausible (blank or uniform video, a tiny region) raises
`ClipError("no detectable fan")`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from data_prep.decode import ClipError

# Stats are kept on a grid whose longer side is at most this (speed; the hull
# is then drawn at full resolution, so crops are not blocky).
STATS_SIDE = 192
# Temporal std (gray levels) above which a pixel counts as moving.
MOTION_STD = 2.0
# Below this std, or below STATIC_REL x its mean, a pixel is static framing:
# re-encoded static text keeps a few levels of compression noise, small next to
# its brightness, while even dark speckle varies by more than this.
STATIC_STD, STATIC_REL = 0.5, 0.02
# The background noise is this percentile of the temporal std; static means below
# NOISE_MULT times it.
NOISE_PERCENTILE, NOISE_MULT = 5, 2.5
# Dim parts of the field are at least this much brighter than the darkest pixels
# (compression ringing next to the field is not).
DIM = 2.0
# Max luma above which a pixel can be part of the field when the clip is still.
BRIGHT = 24
# Fewer frames than this: too few for motion, use brightness + texture.
MIN_MOTION_FRAMES = 4
# A coloured pixel: channel spread at least this and at least this fraction of its max.
COLOR_SPREAD, COLOR_RATIO = 48, 0.45
# Coloured in at least this fraction of the colour samples: a static coloured overlay.
STATIC_COLOR_FRAC = 0.5
# Black levels above this are not black (a uniformly bright clip): leave the frame as is.
MAX_BLACK = 32
# The field must cover at least this fraction of the frame, and this fraction of each side.
MIN_AREA_FRAC, MIN_SIDE_FRAC = 0.04, 0.15


class FanStats:
    """Running per-pixel statistics of a clip's frames on a downsampled grid."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = tuple(shape)
        self.step = max(1, int(np.ceil(max(shape) / STATS_SIDE)))
        grid = (-(-shape[0] // self.step), -(-shape[1] // self.step))
        self.n = 0
        self.sum = np.zeros(grid, np.float64)
        self.sumsq = np.zeros(grid, np.float64)
        self.max = np.zeros(grid, np.uint8)
        self.n_color = 0
        self.colored = np.zeros(grid, np.int32)

    def add(self, gray: np.ndarray, color: np.ndarray | None = None) -> None:
        """Adds one frame (uint8 [H, W]) and optionally its RGB (uint8 [H, W, 3])."""
        if gray.shape != self.shape:
            raise ClipError(f"frame size changes within the clip ({self.shape} -> {gray.shape})")
        g = gray[:: self.step, :: self.step]
        gf = g.astype(np.float32)
        self.sum += gf
        self.sumsq += gf * gf
        np.maximum(self.max, g, out=self.max)
        self.n += 1
        if color is not None:
            # A 3x3 mean first, so palette dithering (gray GIFs with a colour
            # palette) averages back to gray while solid markers stay coloured.
            c = ndimage.uniform_filter(
                color[:: self.step, :: self.step].astype(np.float32), size=(3, 3, 1)
            )
            r, g, b = c[..., 0], c[..., 1], c[..., 2]  # (max(-1) over 3 is slow in numpy)
            top = np.maximum(np.maximum(r, g), b)
            spread = top - np.minimum(np.minimum(r, g), b)
            self.colored += (spread >= COLOR_SPREAD) & (spread >= COLOR_RATIO * top)
            self.n_color += 1

    def mean(self) -> np.ndarray:
        return self.sum / max(self.n, 1)

    def std(self) -> np.ndarray:
        m = self.mean()
        return np.sqrt(np.maximum(self.sumsq / max(self.n, 1) - m * m, 0.0))


@dataclasses.dataclass
class FanField:
    """The detected ultrasound field of a clip.

    Attributes:
      mask: bool [H, W] at the clip's full resolution; True inside the field.
      bbox: (y0, x0, y1, x1) of the mask, end-exclusive.
      method: "motion" (temporal variation) or "intensity" (still/short clip).
      black: luma of the background (e.g. 16 for limited-range video); subtracted
        inside the field so that black is 0 inside and outside alike.
    """

    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    method: str
    black: int = 0

    def __post_init__(self):
        y0, x0, y1, x1 = self.bbox
        self._mask_crop = self.mask[y0:y1, x0:x1].astype(np.uint8)
        self._black_lut = np.maximum(np.arange(256) - self.black, 0).astype(np.uint8)

    def crop(self, gray: np.ndarray, size: int) -> np.ndarray:
        """uint8 [size, size]: the frame cut to the field, zero outside, aspect kept by padding."""
        y0, x0, y1, x1 = self.bbox
        out = resize_pad(gray[y0:y1, x0:x1] * self._mask_crop, size)
        # Black level after the resize, on fewer pixels; outside stays 0.
        return self._black_lut[out] if self.black else out


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes uint8 [h, w] so the longer side is `size`, centred on a black size x size."""
    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # Shrinking: area average (antialiased, ~1.6x faster than PIL's bilinear);
    # enlarging (small GIFs): bilinear.
    resample = Image.BOX if scale < 1 else Image.BILINEAR
    small = np.asarray(Image.fromarray(image).resize((nw, nh), resample))
    out = np.zeros((size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


def detect_fan(stats: FanStats) -> FanField:
    """The field of a clip from its `FanStats`; raises ClipError when there is none."""
    if stats.n == 0:
        raise ClipError("no frames decoded")
    std, mean, peak = stats.std(), stats.mean(), stats.max
    # Static colour is framing (markers, logos); colour that comes and goes
    # (Doppler boxes) lies inside the field and stays.
    colored = stats.colored >= max(1, STATIC_COLOR_FRAC * stats.n_color)
    moving = std > MOTION_STD
    # Motion needs enough frames and enough moving area; a frozen or very short
    # clip falls back to bright, textured pixels (text is removed by the opening).
    use_motion = stats.n >= MIN_MOTION_FRAMES and moving.mean() > MIN_AREA_FRAC / 2
    if use_motion:
        # Varying more than the background's own noise (a low percentile of the
        # std: 0 for clean black borders, a few levels for re-encoded ones): with
        # a clean border even the dark deep field counts. Or not static and not
        # black (dim parts of the field of clips with noisy borders).
        noise = float(np.percentile(std, NOISE_PERCENTILE))
        floor = min(max(STATIC_STD, NOISE_MULT * noise), MOTION_STD)
        dark = float(np.percentile(mean, NOISE_PERCENTILE))
        relative = STATIC_REL * mean
        signal = (std > np.maximum(MOTION_STD, relative)) | (
            (std > np.maximum(floor, relative)) & (mean > dark + DIM)
        )
    else:
        signal = (peak > BRIGHT) & (_local_std(mean) > MOTION_STD)
    signal &= ~colored
    component = _largest_component(_clean(signal))
    if component is None:
        raise ClipError("no detectable fan")
    mask = _hull_mask(component, stats.step, stats.shape)
    if colored.any():  # static coloured markers inside the hull go too
        mask &= ~_to_full(ndimage.binary_dilation(colored), stats.step, stats.shape)
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    h, w = stats.shape
    if mask.mean() < MIN_AREA_FRAC or len(ys) < MIN_SIDE_FRAC * h or len(xs) < MIN_SIDE_FRAC * w:
        raise ClipError("no detectable fan")
    bbox = (int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1)
    black = _black_level(mean, mask[:: stats.step, :: stats.step])
    return FanField(mask, bbox, "motion" if use_motion else "intensity", black)


def _black_level(mean: np.ndarray, inside: np.ndarray) -> int:
    """Background luma: the median outside the field (0 when the field fills the frame)."""
    outside = mean[~inside]
    if outside.size < 0.01 * mean.size:
        return 0
    level = float(np.median(outside))
    return round(level) if level <= MAX_BLACK else 0


def _to_full(grid_mask: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """A grid mask blown up to full resolution (each cell -> step x step pixels)."""
    full = np.repeat(np.repeat(grid_mask, step, 0), step, 1)
    return full[: shape[0], : shape[1]]


def _local_std(image: np.ndarray, size: int = 5) -> np.ndarray:
    m = ndimage.uniform_filter(image, size)
    return np.sqrt(np.maximum(ndimage.uniform_filter(image * image, size) - m * m, 0.0))


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def _clean(signal: np.ndarray) -> np.ndarray:
    side = max(signal.shape)
    # Close small gaps in the speckle, then open away thin structures (text,
    # ticks, 1-2 px lines): radii scale with the grid (~1% and ~2.5% of it).
    closed = ndimage.binary_closing(signal, _disk(max(1, round(side * 0.01))), border_value=0)
    closed |= signal
    opened = ndimage.binary_opening(closed, _disk(max(2, round(side * 0.025))))
    return ndimage.binary_fill_holes(opened)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def _hull_mask(component: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Filled convex hull of a grid component, drawn at full resolution."""
    ys, xs = np.nonzero(component & ~ndimage.binary_erosion(component))  # the outline
    # Corners of each grid cell in full-resolution pixels, so the hull covers the cells.
    pts = np.concatenate(
        [
            np.stack([xs * step + dx, ys * step + dy], 1)
            for dx in (0, step - 1)
            for dy in (0, step - 1)
        ]
    )
    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:  # degenerate (a line): not a field
        raise ClipError("no detectable fan") from None
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(map(float, p)) for p in hull], fill=1, outline=1)
    return np.asarray(canvas).astype(bool)
