"""Contact sheet of fan crops, so a person can check every clip's crop at a glance.

Each clip gets one tile: its original frame (colour when it has colour) with the
detected field outlined in green and its bounding box in orange, next to the
final cropped frame, under the clip's name. Tiles go in a grid (any number of
clips); `ingest` renders one tile per processed clip and keeps it beside the
clip store, so a resumed run still shows every clip.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

PANEL = 160  # pixels per side of each of the two images of a tile
_LABEL_H = 14
_GAP = 4
_FIELD_RGB = (40, 220, 60)
_BBOX_RGB = (255, 150, 0)


def render_tile(original: np.ndarray, mask: np.ndarray, bbox: Sequence[int],
                cropped: np.ndarray, name: str, *, panel: int = PANEL) -> np.ndarray:
    """One tile, uint8 RGB [panel + label, 2 * panel + gap].

    Args:
      original: uint8 [H, W] or [H, W, 3], a frame as decoded.
      mask: bool [H, W], the detected field.
      bbox: (y0, x0, y1, x1) of the field, end-exclusive.
      cropped: uint8 [S, S], the same frame after crop and resize.
      name: the clip's name, shortened to fit.
    """
    h, w = original.shape[:2]
    scale = panel / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    left = Image.fromarray(original).convert("RGB").resize((nw, nh), Image.BILINEAR)
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (nw, nh), Image.NEAREST)) > 0
    edge = small_mask & ~ndimage.binary_erosion(small_mask, border_value=0)
    left_px = np.array(left)
    left_px[edge] = _FIELD_RGB
    left = Image.fromarray(left_px)
    y0, x0, y1, x1 = bbox
    ImageDraw.Draw(left).rectangle(
        [x0 * scale, y0 * scale, max(x0, x1 * scale - 1), max(y0, y1 * scale - 1)],
        outline=_BBOX_RGB)
    right = Image.fromarray(cropped).convert("RGB").resize((panel, panel), Image.BILINEAR)

    tile = Image.new("RGB", (2 * panel + _GAP, panel + _LABEL_H), (24, 24, 24))
    tile.paste(left, ((panel - nw) // 2, _LABEL_H + (panel - nh) // 2))
    tile.paste(right, (panel + _GAP, _LABEL_H))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    draw.text((2, 1), _fit(draw, font, name, 2 * panel + _GAP - 4), fill=(255, 255, 255),
              font=font)
    return np.asarray(tile)


def save_contact_sheet(tiles: Sequence[np.ndarray], path: str | os.PathLike, *,
                       columns: int | None = None) -> Path:
    """Lays `tiles` (uint8 RGB, any sizes) out in a grid and saves a PNG at `path`."""
    if not tiles:
        raise ValueError("no tiles for the contact sheet")
    n = len(tiles)
    columns = columns or max(1, min(n, math.ceil(math.sqrt(n * 0.6))))
    rows = math.ceil(n / columns)
    th = max(t.shape[0] for t in tiles) + _GAP
    tw = max(t.shape[1] for t in tiles) + _GAP
    sheet = Image.new("RGB", (columns * tw + _GAP, rows * th + _GAP), (0, 0, 0))
    for i, t in enumerate(tiles):
        sheet.paste(Image.fromarray(t), (_GAP + (i % columns) * tw, _GAP + (i // columns) * th))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def _fit(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text`, cut in the middle with '…' until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head):]
        if draw.textlength(short, font=font) <= width:
            return short
    return text[:4]


def save_tile(tile: np.ndarray, path: str | os.PathLike) -> None:
    """Saves one tile (kept beside the clip store, so a resumed run can show it)."""
    tmp = Path(str(path) + ".tmp.png")
    Image.fromarray(tile).save(tmp)
    os.replace(tmp, path)


def load_tile(path: str | os.PathLike) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
