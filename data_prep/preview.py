"""Contact sheet of fan crops, so a person can check every clip's crop at a glance.

Each clip gets one tile: its original frame (colour when it has colour) with the
detected field outlined in green and its bounding box in orange, next to the
final cropped frame. The sheet lays tiles out in a grid (any number of clips)
and writes each clip's name above its tile. `ingest` renders one tile per
processed clip and keeps it beside the clip store, so a resumed run still shows
every clip, under its current name.
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


def render_tile(
    original: np.ndarray,
    mask: np.ndarray,
    bbox: Sequence[int],
    cropped: np.ndarray,
    *,
    panel: int = PANEL,
) -> np.ndarray:
    """One unlabelled tile, uint8 RGB [panel, 2 * panel + gap].

    Args:
      original: uint8 [H, W] or [H, W, 3], a frame as decoded.
      mask: bool [H, W], the detected field.
      bbox: (y0, x0, y1, x1) of the field, end-exclusive.
      cropped: uint8 [S, S], the same frame after crop and resize.
    """
    h, w = original.shape[:2]
    scale = panel / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    left = np.array(Image.fromarray(original).convert("RGB").resize((nw, nh), Image.BILINEAR))
    # Outline drawn at display size, so it stays one pixel wide whatever the clip size.
    small_mask = (
        np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((nw, nh), Image.NEAREST)) > 0
    )
    left[small_mask & ~ndimage.binary_erosion(small_mask, border_value=0)] = _FIELD_RGB
    left = Image.fromarray(left)
    y0, x0, y1, x1 = bbox
    ImageDraw.Draw(left).rectangle(
        [x0 * scale, y0 * scale, max(x0 * scale, x1 * scale - 1), max(y0 * scale, y1 * scale - 1)],
        outline=_BBOX_RGB,
    )
    right = Image.fromarray(cropped).convert("RGB").resize((panel, panel), Image.BILINEAR)
    tile = Image.new("RGB", (2 * panel + _GAP, panel), (24, 24, 24))
    tile.paste(left, ((panel - nw) // 2, (panel - nh) // 2))
    tile.paste(right, (panel + _GAP, 0))
    return np.asarray(tile)


def save_contact_sheet(
    tiles: Sequence[np.ndarray],
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    *,
    columns: int | None = None,
) -> Path:
    """Lays `tiles` (uint8 RGB) out in a grid, each under its name; saves a PNG at `path`."""
    if not tiles:
        raise ValueError("no tiles for the contact sheet")
    names = list(names) if names is not None else [""] * len(tiles)
    n = len(tiles)
    columns = columns or max(1, min(n, math.ceil(math.sqrt(n * 0.6))))
    rows = math.ceil(n / columns)
    th = max(t.shape[0] for t in tiles) + _LABEL_H + _GAP
    tw = max(t.shape[1] for t in tiles) + _GAP
    sheet = Image.new("RGB", (columns * tw + _GAP, rows * th + _GAP), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (tile, name) in enumerate(zip(tiles, names)):
        x, y = _GAP + (i % columns) * tw, _GAP + (i // columns) * th
        draw.rectangle([x, y, x + tile.shape[1] - 1, y + _LABEL_H - 1], fill=(24, 24, 24))
        draw.text(
            (x + 2, y + 1),
            _fit(draw, font, name, tile.shape[1] - 4),
            fill=(255, 255, 255),
            font=font,
        )
        sheet.paste(Image.fromarray(tile), (x, y + _LABEL_H))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def save_tile(tile: np.ndarray, path: str | os.PathLike) -> None:
    """Saves one tile atomically (kept beside the clip store for resumed runs)."""
    tmp = Path(str(path) + ".tmp.png")
    Image.fromarray(tile).save(tmp)
    os.replace(tmp, path)


def load_tile(path: str | os.PathLike) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _fit(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text`, cut in the middle with '…' until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head) :]
        if draw.textlength(short, font=font) <= width:
            return short
    return text[:4]
