"""Ultrasound-specific augmentations that follow the physics of a B-mode frame.

Geometry: frames are fan-cropped, probe at the top, black (0) outside the fan
(data_prep masks it). Beams are rays from the probe's apex; depth is the
distance from the apex minus that of the transducer face (the shallowest imaged
pixel). `estimate_geometry` finds, per frame and inside jit, the apex and the
sector's edges by fitting straight lines to the fan's side edges (a convex
probe's virtual apex lies above the frame; parallel edges = a linear probe,
apex far above, beams vertical), so the geometric operations below map the fan
onto itself and keep the outside black. `aug.us.apex_y` is the fallback.

The five operations (probabilities and ranges in `default_config()`):
  depth_zoom   depth-setting change: rescale depth along every beam (polar
               coordinates about the apex), the fan's angles and the
               transducer face fixed; zoom-out leaves black beyond the old depth.
  speckle      speckle re-synthesis: smoothed envelope x Rayleigh speckle (|complex
               gaussian| filtered by an anisotropic PSF), blended in; zero stays zero.
  rib_shadow   acoustic shadow under a rib: an angular band from the apex,
               starting at a shallow depth, darkened (never brightened).
  tgc          time-gain compensation: a random smooth positive gain curve of
               depth (K slider points in dB, C1 smoothstep interpolation).
  fan_wedge    probe geometry: a narrower sector (either edge cut by a random
               angle); only masks.
All are deterministic functions of explicit parameters on one float32
[H, W(, C)] frame in [0, 1], for `xp` in (numpy, jax.numpy): the same code runs
in jit (vmapped over a batch) and in numpy workers. The random draws, the
probabilities and the composition live in `lusjax.data.augment`
(`_us_augment_one`): geometry, then speckle formation, then attenuation,
receive gain and display sector as one multiplicative field, clipped once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import numpy as np

REFERENCE_SIZE = 224  # speckle sizes are in pixels of a 224-pixel-high frame
_PROBS = ("zoom_prob", "speckle_prob", "shadow_prob", "tgc_prob", "wedge_prob")


def default_config() -> ml_collections.ConfigDict:
    """The `aug.us` sub-config.

    estimate_apex: find each frame's apex and fan edges from its side edges
      (`estimate_geometry`); else the apex is fixed at apex_y.
    apex_y: apex row as a fraction of H (0 = top edge; < 0 above the frame; -100
      ~ linear probe); the fallback when estimation finds no straight edges.
    zoom_prob, zoom: depth rescale factor, log-uniform in (min, max); > 1 = a
      shallower depth setting (structures look bigger).
    speckle_prob, speckle_strength: blend weight of re-synthesised speckle,
      U[0.5, 1] * strength.
    speckle_psf: (axial, lateral) gaussian PSF sigma in pixels of a 224-high frame.
    speckle_envelope: sigma of the envelope smoothing, same units.
    shadow_prob: probability of one rib shadow.
    shadow_width: half-width as a fraction of the fan half-angle, U(min, max).
    shadow_depth: onset depth as a fraction of the frame depth, U(min, max).
    shadow_strength: attenuation in the shadow (1 = black), U(min, max).
    tgc_prob, tgc_db, tgc_points: K (<= 8) slider gains ~ U[-db, db] dB, evenly
      spaced in depth, smoothly interpolated.
    wedge_prob, wedge_max: each fan edge moves in by U[0, wedge_max] of the half-angle.
    """
    return ml_collections.ConfigDict(
        {
            "estimate_apex": True,
            "apex_y": 0.0,
            "zoom_prob": 0.3,
            "zoom": (0.8, 1.25),
            "speckle_prob": 0.2,
            "speckle_strength": 0.6,
            "speckle_psf": (1.0, 2.0),
            "speckle_envelope": 2.0,
            "shadow_prob": 0.2,
            "shadow_width": (0.05, 0.15),
            "shadow_depth": (0.0, 0.25),
            "shadow_strength": (0.6, 0.95),
            "tgc_prob": 0.3,
            "tgc_db": 4.0,
            "tgc_points": 5,
            "wedge_prob": 0.2,
            "wedge_max": 0.3,
        }
    )


def none_config() -> ml_collections.ConfigDict:
    cfg = default_config()
    for k in _PROBS:
        cfg[k] = 0.0
    return cfg


def enabled(cfg) -> bool:
    return cfg is not None and any(cfg[k] > 0 for k in _PROBS)


# ----------------------------------------------------------------------------
# Geometry.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Geometry:
    """Fan geometry of one frame, in pixels (scalars; traced under jit).

    ay, ax: the apex (beams are rays from it; far above the frame for a linear
      probe); r0, r_max: radius of the shallowest and deepest imaged pixel (the
      transducer face and the bottom); theta_l < theta_r: the sector's edges
      (radians, 0 = straight down, > 0 to the right).
    """

    ay: Any
    ax: Any
    r0: Any
    r_max: Any
    theta_l: Any
    theta_r: Any

    @property
    def half(self):
        return 0.5 * (self.theta_r - self.theta_l)

    @property
    def center(self):
        return 0.5 * (self.theta_r + self.theta_l)


def polar(xp, h: int, w: int, g: Geometry):
    """(dy, dx, r, theta) [H, W] of every pixel centre about the apex."""
    dy = xp.arange(h, dtype=xp.float32)[:, None] - g.ay + xp.zeros((1, w), xp.float32)
    dx = xp.arange(w, dtype=xp.float32)[None, :] - g.ax + xp.zeros((h, 1), xp.float32)
    return dy, dx, xp.sqrt(dy * dy + dx * dx), xp.arctan2(dx, dy)


_ON = 1.5 / 255.0  # a pixel is imaged if brighter than this (outside the fan is 0)
LINEAR_APEX = 100.0  # apex this many frame heights above the top = parallel beams


class _Boundary:
    """The fan's outline as vectors: per row the first/last imaged column, per
    column the first/last imaged row. Everything geometric is computed from
    these O(H + W) numbers, never from full-resolution passes (cheap in a batch)."""

    def __init__(self, xp, x):
        on = x[..., 0] > _ON
        h, w = on.shape
        self.h, self.w = h, w
        self.rows_on, self.cols_on = on.any(axis=1), on.any(axis=0)
        self.ys = xp.arange(h, dtype=xp.float32)
        self.xs = xp.arange(w, dtype=xp.float32)
        self.xl = xp.argmax(on, axis=1).astype(xp.float32)
        self.xr = (w - 1 - xp.argmax(on[:, ::-1], axis=1)).astype(xp.float32)
        self.ytop = xp.argmax(on, axis=0).astype(xp.float32)
        self.ybot = (h - 1 - xp.argmax(on[::-1], axis=0)).astype(xp.float32)
        self.top = xp.argmax(self.rows_on).astype(xp.float32)


def _extent(xp, b: _Boundary, ay, ax, fit_angles: bool, theta_l=-1.0, theta_r=1.0) -> Geometry:
    """r0 / r_max from the top and bottom outline (along a column r grows downward,
    so a column's nearest and farthest imaged pixels are its first and last);
    with fit_angles, the edge angles from the side outline below the near field."""
    any_on = b.cols_on.any()
    r_top = xp.sqrt((b.ytop - ay) ** 2 + (b.xs - ax) ** 2)
    r_bot = xp.sqrt((b.ybot - ay) ** 2 + (b.xs - ax) ** 2)
    r0 = xp.where(any_on, xp.min(xp.where(b.cols_on, r_top, xp.inf)), 0.0)
    r_max = xp.where(any_on, xp.max(xp.where(b.cols_on, r_bot, 0.0)), float(b.h + b.w))
    r_max = xp.maximum(r_max, r0 + 1.0)
    if fit_angles:  # the near field is left out: a few pixels there swing the angle widely
        near = r0 + 0.25 * (r_max - r0)
        deep_l = b.rows_on & (xp.sqrt((b.xl - ax) ** 2 + (b.ys - ay) ** 2) > near)
        deep_r = b.rows_on & (xp.sqrt((b.xr - ax) ** 2 + (b.ys - ay) ** 2) > near)
        tl = xp.min(xp.where(deep_l, xp.arctan2(b.xl - ax, b.ys - ay), 0.0))
        tr = xp.max(xp.where(deep_r, xp.arctan2(b.xr - ax, b.ys - ay), 0.0))
        theta_l, theta_r = xp.minimum(tl, -0.05), xp.maximum(tr, 0.05)
    return Geometry(ay, ax, r0, r_max, theta_l, theta_r)


def fixed_geometry(xp, x, apex_y: float) -> Geometry:
    """Apex at (apex_y * H, centre); radii and edge angles from the imaged pixels."""
    h, w = x.shape[0], x.shape[1]
    ay, ax = xp.float32(apex_y * h - 0.5), xp.float32((w - 1) / 2.0)
    return _extent(xp, _Boundary(xp, x), ay, ax, fit_angles=True)


_PICK = 16  # candidate rows per edge for the line search (120 candidate lines)
_PAIRS = np.array([(i, j) for i in range(_PICK) for j in range(i + 1, _PICK)], np.int32)


def _fit_edge(xp, ys, xs, use, outward: float, tol: float = 1.0):
    """Line x = a + b y along a straight side edge of the fan: (a, b, inlier rows).

    The measured edge (first/last imaged column per row) is a straight segment
    plus parts that lie *inward* of it: the curved skin line and bottom, black
    regions touching the edge (an effusion, a rib shadow). So: lines through
    pairs of 16 evenly spread rows are scored by their rows within `tol`
    pixels, minus twice the rows lying clearly *outward* of them (the true edge
    is outermost); the best one is refitted by least squares on its inliers.
    `outward` is -1 for the left edge, +1 for the right.
    """
    count = xp.cumsum(use.astype(xp.int32))
    total = count[-1].astype(xp.float32)
    q = xp.ceil((xp.arange(_PICK, dtype=xp.float32) + 0.5) / _PICK * total)
    # Index of the q-th used row: the first row whose running count reaches q.
    pick = xp.argmax(count[None, :] >= q[:, None], axis=1)
    yp, xq = ys[pick], xs[pick]
    i, j = _PAIRS[:, 0], _PAIRS[:, 1]
    dy = yp[j] - yp[i]
    b = (xq[j] - xq[i]) / xp.where(dy > 0, dy, 1.0)
    a = xq[i] - b * yp[i]
    res = xs[None, :] - (a[:, None] + b[:, None] * ys[None, :])  # [pairs, rows]
    inlier = use[None, :] & (xp.abs(res) <= tol)
    beyond = use[None, :] & (outward * res > 2.0 * tol)
    score = inlier.sum(1) - 2 * beyond.sum(1) - 10**6 * (dy <= 0)
    wt = inlier[xp.argmax(score)].astype(xp.float32)
    n = wt.sum()
    ym = (wt * ys).sum() / xp.maximum(n, 1.0)
    xm = (wt * xs).sum() / xp.maximum(n, 1.0)
    var = (wt * (ys - ym) ** 2).sum()
    b = (wt * (ys - ym) * (xs - xm)).sum() / xp.maximum(var, 1e-6)
    return xm - b * ym, b, n


def _fit_skin_arc(xp, b: _Boundary):
    """Circle through the fan's top outline (the skin line; Kasa's algebraic fit).

    Returns (ay, ax, radius, n_columns). For a convex probe the centre is the
    apex; a linear probe's flat top gives a huge radius. The 3x3 normal
    equations are solved by Cramer's rule (elementwise: no batched solver).
    """
    use = (b.cols_on & (b.ytop > 0)).astype(xp.float32)
    cx, cy = (b.w - 1) / 2.0, b.h / 2.0  # centred for conditioning
    u, v = b.xs - cx, b.ytop - cy
    # x^2 + y^2 + D x + E y + F = 0, least squares in (D, E, F).
    suu, svv, suv = (use * u * u).sum(), (use * v * v).sum(), (use * u * v).sum()
    su, sv, n = (use * u).sum(), (use * v).sum(), use.sum()
    rr = -(u * u + v * v) * use
    r1, r2, r3 = (rr * u).sum(), (rr * v).sum(), rr.sum()
    a11, a12, a13, a22, a23, a33 = suu + 1e-3, suv, su, svv + 1e-3, sv, n + 1e-3
    det = (
        a11 * (a22 * a33 - a23 * a23)
        - a12 * (a12 * a33 - a23 * a13)
        + a13 * (a12 * a23 - a22 * a13)
    )
    det = xp.where(xp.abs(det) > 1e-9, det, 1e-9)
    d = (
        r1 * (a22 * a33 - a23 * a23) - a12 * (r2 * a33 - a23 * r3) + a13 * (r2 * a23 - a22 * r3)
    ) / det
    e = (
        a11 * (r2 * a33 - a23 * r3) - r1 * (a12 * a33 - a23 * a13) + a13 * (a12 * r3 - r2 * a13)
    ) / det
    f = (
        a11 * (a22 * r3 - r2 * a23) - a12 * (a12 * r3 - r2 * a13) + r1 * (a12 * a23 - a22 * a13)
    ) / det
    radius = xp.sqrt(xp.maximum(d * d / 4.0 + e * e / 4.0 - f, 0.0))
    # Collinear points (a flat skin line) fit no circle: call that infinite.
    sag = xp.max(xp.where(use > 0, b.ytop, -xp.inf)) - xp.min(xp.where(use > 0, b.ytop, xp.inf))
    radius = xp.where(sag <= 2.0, xp.inf, radius)
    return cy - e / 2.0, cx - d / 2.0, radius, n


def estimate_geometry(xp, x, fallback_apex_y: float = 0.0) -> Geometry:
    """Fan geometry from the frame itself: straight lines through the fan's side edges.

    Lines are fitted to the first / last imaged column of every row
    (`_fit_edge`: a robust search that ignores the curved skin line and bottom
    and black regions at the edge); the apex is where the two lines meet
    (parallel lines: a linear probe, apex LINEAR_APEX heights up). Rows whose
    edge touches the frame's border say nothing and are left out; with fewer
    than 4 rows left (a fan wider than the frame), the apex is the centre of
    the circle through the skin line (flat: linear), else at
    (fallback_apex_y * H, centre).
    """
    b = _Boundary(xp, x)
    h, w = b.h, b.w
    a_l, b_l, n_l = _fit_edge(xp, b.ys, b.xl, b.rows_on & (b.xl > 0), outward=-1.0)
    a_r, b_r, n_r = _fit_edge(xp, b.ys, b.xr, b.rows_on & (b.xr < w - 1), outward=1.0)
    spread = b_r - b_l  # d(width)/dy: > 0 for a sector, ~0 for parallel edges
    far = -LINEAR_APEX * h
    sector = spread > 1e-3
    ay_fit = xp.clip(xp.where(sector, (a_l - a_r) / xp.where(sector, spread, 1.0), far), far, b.top)
    y1 = b.top + 0.7 * (b.h - b.top)
    ax_fit = xp.where(sector, a_l + b_l * ay_fit, 0.5 * (a_l + a_r + (b_l + b_r) * y1))
    # The fitted edges' angles, seen from the apex at a deep row.
    tl = xp.arctan2(a_l + b_l * y1 - ax_fit, y1 - ay_fit)
    tr = xp.arctan2(a_r + b_r * y1 - ax_fit, y1 - ay_fit)

    # No usable side edges (the fan is wider than the frame): the skin line's
    # circle, or the fixed fallback. A nearly flat skin line = a linear probe.
    sy, sx, radius, n_top = _fit_skin_arc(xp, b)
    flat = (n_top >= 8) & (radius > LINEAR_APEX * h / 2)
    arc = (n_top >= 8) & (sy <= b.top) & ~flat
    ok = xp.minimum(n_l, n_r) >= 4
    ay = xp.where(ok, ay_fit, xp.where(flat, far, xp.where(arc, sy, fallback_apex_y * h - 0.5)))
    ax = xp.where(ok, ax_fit, xp.where(arc, sx, (w - 1) / 2.0))
    ay, ax = ay.astype(xp.float32), ax.astype(xp.float32)
    fb = _extent(xp, b, ay, ax, fit_angles=True)  # angles from the outline, if no fit
    return Geometry(
        ay, ax, fb.r0, fb.r_max, xp.where(ok, tl, fb.theta_l), xp.where(ok, tr, fb.theta_r)
    )


def bilinear(xp, x, yy, xx):
    """Samples x [H, W, C] at float coordinates (yy, xx) [H', W']; zero outside."""
    h, w = x.shape[0], x.shape[1]
    y0, x0 = xp.floor(yy), xp.floor(xx)
    fy, fx = yy - y0, xx - x0
    out = 0.0
    for oy, wy in ((0, 1.0 - fy), (1, fy)):
        for ox, wx in ((0, 1.0 - fx), (1, fx)):
            yi, xi = y0 + oy, x0 + ox
            valid = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
            v = x[xp.clip(yi, 0, h - 1).astype(xp.int32), xp.clip(xi, 0, w - 1).astype(xp.int32)]
            out = out + (wy * wx * valid)[..., None] * v
    return out.astype(xp.float32)


def _smoothstep(xp, t):
    t = xp.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ----------------------------------------------------------------------------
# The operations, as functions of explicit parameters.
# ----------------------------------------------------------------------------


def depth_zoom(xp, x, zoom, g: Geometry):
    """Depth along each beam scaled by `zoom` (> 1: magnified) about the transducer face.

    r -> r0 + (r - r0) * zoom in polar coordinates about the apex: beams (and so
    the fan's edges) stay where they are, the skin line stays at r0.
    """
    h, w = x.shape[0], x.shape[1]
    dy, dx, r, _ = polar(xp, h, w, g)
    r_in = g.r0 + (r - g.r0) / zoom
    f = r_in / xp.maximum(r, 1e-6)
    out = bilinear(xp, x, g.ay + dy * f, g.ax + dx * f)
    # The display still ends at the skin line and the old bottom: nothing is
    # imaged above r0 or below r_max (what a zoom-in would pull there stays black).
    keep = xp.clip(r - g.r0 + 0.5, 0.0, 1.0) * xp.clip(g.r_max - r + 0.5, 0.0, 1.0)
    return out * keep[..., None]


def depth01(xp, h: int, w: int, g: Geometry):
    """Depth below the transducer face, 0 at r0 and 1 at r_max, [H, W]."""
    _, _, r, _ = polar(xp, h, w, g)
    return xp.clip((r - g.r0) / (g.r_max - g.r0), 0.0, 1.0)


def tgc_gain(xp, h: int, w: int, gains_db, g: Geometry):
    """[H, W] gain: the K slider gains (dB, evenly spaced in depth), C1-interpolated.

    Between sliders k and k + 1 the weights are 1 - s(t) and s(t), s the
    smoothstep; written as a sum of K bumps (no gather), it fuses on the GPU.
    """
    k = gains_db.shape[0]
    pos = depth01(xp, h, w, g) * (k - 1)
    db = 0.0
    for i in range(k):
        db = db + gains_db[i] * (1.0 - _smoothstep(xp, xp.abs(pos - i)))
    return (10.0 ** (db / 20.0)).astype(xp.float32)


def tgc(xp, x, gains_db, g: Geometry):
    """Time-gain compensation: x * gain(depth), clipped to [0, 1]."""
    gain = tgc_gain(xp, x.shape[0], x.shape[1], gains_db, g)
    return xp.clip(x * gain[..., None], 0.0, 1.0)


def shadow_factor(xp, h: int, w: int, center, half_width, onset, strength, g: Geometry):
    """[H, W] in [1 - strength, 1]: the beams |theta - center| < half_width, below depth
    `onset` (in [0, 1]), attenuated; soft edges of a quarter of the half-width in
    angle and 3% of the depth at the onset."""
    _, _, _, theta = polar(xp, h, w, g)
    d = depth01(xp, h, w, g)
    ang = _smoothstep(xp, (half_width - xp.abs(theta - center)) / (0.25 * half_width + 1e-6))
    dep = _smoothstep(xp, (d - onset) / 0.03)
    return 1.0 - strength * ang * dep


def rib_shadow(xp, x, center, half_width, onset, strength, g: Geometry):
    """Darkens the beams |theta - center| < half_width below depth `onset` (in [0, 1])."""
    f = shadow_factor(xp, x.shape[0], x.shape[1], center, half_width, onset, strength, g)
    return x * f[..., None]


def wedge_mask(xp, h: int, w: int, left, right, g: Geometry):
    """[H, W] in [0, 1]: the sector left < theta < right (radians), one-pixel soft edges."""
    _, _, r, theta = polar(xp, h, w, g)
    return xp.clip((right - theta) * r + 0.5, 0.0, 1.0) * xp.clip(
        (theta - left) * r + 0.5, 0.0, 1.0
    )


def fan_wedge(xp, x, left, right, g: Geometry):
    """Keeps the sector left < theta < right (radians)."""
    return x * wedge_mask(xp, x.shape[0], x.shape[1], left, right, g)[..., None]


def sigma_px(value: float, h: int) -> float:
    """A size in pixels of a 224-high frame, in pixels of this one (at least 0.5)."""
    return max(0.5, value * h / REFERENCE_SIZE)


def gaussian_taps(xp, sigma, radius: int):
    """[2 radius + 1] unnormalised gaussian weights; `sigma` may be traced (per example)."""
    k = xp.arange(-radius, radius + 1, dtype=xp.float32)
    return xp.exp(-k * k / (2.0 * xp.maximum(sigma, 1e-3) ** 2)).astype(xp.float32)


def radius_for(sigma: float) -> int:
    """Taps reach 3 sigma (the weight there is 1% of the centre's)."""
    return max(1, math.ceil(3.0 * sigma))


def conv_axis(xp, x, taps, axis: int):
    """Correlates `x` with `taps` along `axis`, zeros outside: shift-and-add.

    Per-example taps under vmap cost (2r + 1) fused elementwise passes, against
    a dense [n, n] matmul per example (20x the flops at 224 px) or dm-pix's
    per-example-sigma `gaussian_blur` (30x slower, NOTES-deps.md).
    """
    r = (taps.shape[0] - 1) // 2
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xpad = xp.pad(x, pad)
    out = 0.0
    for k in range(2 * r + 1):
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(k, k + n)
        out = out + taps[k] * xpad[tuple(idx)]
    return out


def gaussian_blur(xp, x, sigma_y, sigma_x, radius_y: int, radius_x: int):
    """Separable gaussian blur of [H, W, C] (or [H, W]), renormalised at the borders."""
    h, w = x.shape[0], x.shape[1]
    ty, tx = gaussian_taps(xp, sigma_y, radius_y), gaussian_taps(xp, sigma_x, radius_x)
    ny = conv_axis(xp, xp.ones((h,), xp.float32), ty, 0)
    nx = conv_axis(xp, xp.ones((w,), xp.float32), tx, 0)
    extra = (1,) * (x.ndim - 2)
    y = conv_axis(xp, x, ty, 0) / ny.reshape((h, 1) + extra)
    return (conv_axis(xp, y, tx, 1) / nx.reshape((1, w) + extra)).astype(xp.float32)


def speckle_field(xp, normal2, psf: tuple[float, float]):
    """Unit-mean Rayleigh speckle [H, W] from two standard normal fields [2, H, W].

    The complex gaussian field is filtered by the PSF (axial, lateral sigma in
    pixels) and renormalised per pixel to unit variance, so |field| is Rayleigh
    everywhere (also at the borders), with the PSF's grain size.
    """
    h, w = normal2.shape[1], normal2.shape[2]
    ta = gaussian_taps(np, psf[0], radius_for(psf[0]))
    tl = gaussian_taps(np, psf[1], radius_for(psf[1]))
    var = (
        conv_axis(np, np.ones(h, np.float32), ta**2, 0)[:, None]
        * conv_axis(np, np.ones(w, np.float32), tl**2, 0)[None, :]
    )
    norm = xp.asarray((1.0 / np.sqrt(var)).astype(np.float32))
    f = conv_axis(xp, conv_axis(xp, normal2, xp.asarray(ta), 1), xp.asarray(tl), 2) * norm
    return xp.sqrt(f[0] * f[0] + f[1] * f[1]) * (1.0 / math.sqrt(math.pi / 2.0))


def speckle(xp, x, strength, normal2, psf: tuple[float, float], envelope_sigma: float):
    """Blends in re-synthesised speckle: (1 - a) x + a * smooth(x) * rayleigh; 0 stays 0."""
    r = radius_for(envelope_sigma)
    env = gaussian_blur(xp, x, envelope_sigma, envelope_sigma, r, r)
    field = speckle_field(xp, normal2, psf)[..., None]
    out = (1.0 - strength) * x + strength * env * field
    return xp.where(x > 0, xp.clip(out, 0.0, 1.0), 0.0).astype(xp.float32)
