"""data_prep.fan: the detected field matches the true one and leaves the framing out."""

import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep import decode, fan
from data_prep.decode import ClipError

sys.path.insert(0, str(Path(__file__).parent / "data"))
import synth_clips  # generated fixtures, see tests/data/synth_clips.py


def _stats(frames, colors=None) -> fan.FanStats:
    stats = fan.FanStats(frames[0].shape)
    for i, g in enumerate(frames):
        stats.add(g, None if colors is None else colors[i])
    return stats


def _iou(a, b) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("probe", ["convex", "linear"])
@pytest.mark.parametrize("source", ["raw", "mp4", "gif", "one_frame"])
def test_field_found_and_overlays_left_out(tmp_path, probe, source):
    rgb, field, overlay = synth_clips.lus_clip(12, probe=probe, seed=2)
    if source == "raw":
        frames = [decode.Frame(i, i / 10, decode._luma(c), c) for i, c in enumerate(rgb)]
    else:  # through a real codec: compression noise on the static framing
        n = 1 if source == "one_frame" else len(rgb)
        ext = ".gif" if source == "gif" else ".mp4"
        path = synth_clips.write_video(tmp_path / f"clip{ext}", rgb[:n])
        frames = list(decode.iter_frames(path, color_every=1))
    field_found = fan.detect_fan(_stats([f.gray for f in frames], [f.color for f in frames]))

    assert field_found.method == ("intensity" if source == "one_frame" else "motion")
    assert _iou(field_found.mask, field) > 0.9
    # Text, logo, marker, ruler, colour bar and frame counter all stay outside.
    assert (field_found.mask & overlay).sum() == 0
    y0, x0, y1, x1 = field_found.bbox
    ys, xs = np.nonzero(field)
    assert abs(y0 - ys.min()) <= 4 and abs(x0 - xs.min()) <= 4
    assert abs(y1 - 1 - ys.max()) <= 4 and abs(x1 - 1 - xs.max()) <= 4


def test_crop_zeroes_outside_pads_to_square_and_removes_black_level():
    rgb, _, _ = synth_clips.lus_clip(6, probe="linear", black=16)
    gray = decode._luma(rgb)
    found = fan.detect_fan(_stats(gray, rgb))
    assert found.black == 16
    out = found.crop(gray[0], 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    # The linear field is taller than wide: padded left and right with black.
    y0, x0, y1, x1 = found.bbox
    pad = (64 - round((x1 - x0) * 64 / (y1 - y0))) // 2
    assert pad >= 3
    assert out[:, : pad - 1].max() == 0 and out[:, -(pad - 1) :].max() == 0
    assert out[:, pad + 2 : -pad - 2].mean() > 20  # the speckle is there
    # Limited-range black (16) outside the field becomes 0, like the padding.
    assert np.percentile(out[:, pad + 2 : -pad - 2], 1) < 16


def test_crop_never_lets_overlays_through():
    rgb, _, _ = synth_clips.lus_clip(8, probe="convex", seed=3)
    gray = decode._luma(rgb)
    found = fan.detect_fan(_stats(gray, rgb))
    # Paint the framing white in a frame: the crop must not change.
    loud = gray[0].copy()
    loud[~found.mask] = 255
    np.testing.assert_array_equal(found.crop(loud, 96), found.crop(gray[0], 96))


@pytest.mark.parametrize("value", [0, 16, 128])
def test_blank_or_uniform_video_has_no_fan(value):
    frames = np.full((8, 120, 160), value, np.uint8)
    with pytest.raises(ClipError, match="no detectable fan"):
        fan.detect_fan(_stats(frames))


def test_text_only_video_has_no_fan():
    rgb, _, _ = synth_clips.lus_clip(8, seed=4)
    field_free = rgb.copy()
    _, field, _ = synth_clips.lus_clip(1, seed=4)
    field_free[:, field] = 0  # only the framing (static text, logo, counter) is left
    with pytest.raises(ClipError, match="no detectable fan"):
        fan.detect_fan(_stats(decode._luma(field_free), field_free))


def test_static_coloured_marker_inside_the_hull_is_masked():
    rgb, field, _ = synth_clips.lus_clip(10, probe="linear", seed=5, overlays=False)
    ys, xs = np.nonzero(field)
    cy, cx = ys.min() + 2, xs.min() + 2  # a green marker on the field's corner
    rgb[:, cy : cy + 4, cx : cx + 4] = (0, 255, 0)
    found = fan.detect_fan(_stats(decode._luma(rgb), rgb))
    assert not found.mask[cy : cy + 4, cx : cx + 4].any()
    assert _iou(found.mask, field) > 0.9


def test_resize_pad_keeps_aspect():
    img = np.full((50, 100), 200, np.uint8)
    out = fan.resize_pad(img, 32)
    assert out.shape == (32, 32)
    assert (out[:8] == 0).all() and (out[-8:] == 0).all() and (out[8:24] == 200).all()
    small = fan.resize_pad(np.full((10, 10), 50, np.uint8), 40)  # enlarging works too
    assert (small == 50).all()
