"""Ultrasound-specific augmentations that follow the physics of a B-mode frame.

Geometry: frames are fan-cropped, probe at the top, black (0) outside the fan
(data_prep masks it). Beams are rays from the probe's apex; depth is the
distance from the apex minus that of the transducer face (the shallowest imaged
pixel). `estimate_geometry` finds, per frame and inside jit, the apex and the
sector's edges by fitting straight lines to the fan's side edges (a convex
probe's virtual apex lies above the frame; parallel edges = a linear probe,
apex far above, beams vertical), so the geometric operations below map the fan
onto itself and keep the outside black. `aug.us.apex_y` is the fallback.

The five operations, each a pure function of explicit parameters plus a
random wrapper (probabilities and ranges in `default_config()`):
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
Applied in that order (geometry, then speckle formation, attenuation, receive
gain, display sector). All work on one float32 [H, W, C] frame in [0, 1] for
`xp` in (numpy, jax.numpy); `augment_batch` vmaps them on the device with
per-example keys, `lusjax.data.augment` calls `augment_one` as its first stage.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

_U_ZOOM, _U_ZOOM_V = 0, 1
_U_TGC = 2
_U_TGC_V = 3  # .. 3 + MAX_TGC_POINTS
MAX_TGC_POINTS = 8
_U_SPECKLE, _U_SPECKLE_V = 11, 12
_U_SHADOW, _U_SHADOW_C, _U_SHADOW_W, _U_SHADOW_D, _U_SHADOW_S = 13, 14, 15, 16, 17
_U_WEDGE, _U_WEDGE_L, _U_WEDGE_R = 18, 19, 20
NUM_UNIFORMS = 21

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


def fixed_geometry(xp, x, apex_y: float) -> Geometry:
    """Apex at (apex_y * H, centre); radii and edge angles from the non-zero pixels."""
    h, w = x.shape[0], x.shape[1]
    g = Geometry(xp.float32(apex_y * h - 0.5), xp.float32((w - 1) / 2.0), 0.0, 1.0, -1.0, 1.0)
    return _fill_extent(xp, x, g, fit_angles=True)


def _fill_extent(xp, x, g: Geometry, fit_angles: bool) -> Geometry:
    """r0 / r_max (and, if fit_angles, the edge angles) from the pixels that are on."""
    h, w = x.shape[0], x.shape[1]
    _, _, r, theta = polar(xp, h, w, g)
    on = x[..., 0] > _ON
    any_on = on.any()
    r0 = xp.where(any_on, xp.min(xp.where(on, r, xp.inf)), 0.0)
    r_max = xp.where(any_on, xp.max(xp.where(on, r, 0.0)), float(math.hypot(h, w)))
    r_max = xp.maximum(r_max, r0 + 1.0)
    if fit_angles:  # ignore the near field, where a few pixels swing the angle widely
        deep = on & (r > r0 + 0.25 * (r_max - r0))
        tl = xp.min(xp.where(deep, theta, 0.0))
        tr = xp.max(xp.where(deep, theta, 0.0))
        return Geometry(g.ay, g.ax, r0, r_max, xp.minimum(tl, -0.05), xp.maximum(tr, 0.05))
    return Geometry(g.ay, g.ax, r0, r_max, g.theta_l, g.theta_r)


_ON = 1.5 / 255.0  # a pixel is imaged if brighter than this (outside the fan is 0)
LINEAR_APEX = 100.0  # apex this many frame heights above the top = parallel beams


_PICK = 16  # candidate rows per edge for the line search (120 candidate lines)
_PAIRS = np.array([(i, j) for i in range(_PICK) for j in range(i + 1, _PICK)], np.int32)


def _fit_edge(xp, ys, xs, use, outward: float, tol: float = 1.0):
    """Line x = a + b y along a straight side edge of the fan: (a, b, inlier rows).

    The measured edge (leftmost/rightmost imaged pixel per row) is a straight
    segment plus parts that lie *inward* of it: the curved skin line and bottom,
    black regions touching the edge (an effusion, a rib shadow). So: lines
    through pairs of 16 evenly spread rows are scored by their rows within
    `tol` pixels, minus twice the rows lying clearly *outward* of them (the
    true edge is outermost); the best one is refitted by least squares on its
    inliers. `outward` is -1 for the left edge, +1 for the right.
    """
    count = xp.cumsum(use.astype(xp.int32))
    total = count[-1]
    q = (xp.arange(_PICK, dtype=xp.float32) + 0.5) / _PICK * total.astype(xp.float32)
    pick = xp.clip(xp.searchsorted(count, xp.ceil(q).astype(count.dtype)), 0, ys.shape[0] - 1)
    yp, xq = ys[pick], xs[pick]
    i, j = _PAIRS[:, 0], _PAIRS[:, 1]
    dy = yp[j] - yp[i]
    b = (xq[j] - xq[i]) / xp.where(dy > 0, dy, 1.0)
    a = xq[i] - b * yp[i]
    res = xs[None, :] - (a[:, None] + b[:, None] * ys[None, :])  # [pairs, rows]
    inlier = use[None, :] & (xp.abs(res) <= tol)
    beyond = use[None, :] & (outward * res > 2.0 * tol)
    score = inlier.sum(1) - 2 * beyond.sum(1) - 10**6 * (dy <= 0)
    best = xp.argmax(score)
    wt = inlier[best].astype(xp.float32)
    n = wt.sum()
    ym = (wt * ys).sum() / xp.maximum(n, 1.0)
    xm = (wt * xs).sum() / xp.maximum(n, 1.0)
    var = (wt * (ys - ym) ** 2).sum()
    b = (wt * (ys - ym) * (xs - xm)).sum() / xp.maximum(var, 1e-6)
    return xm - b * ym, b, n


def _fit_skin_arc(xp, on):
    """Circle through the fan's top boundary (the skin line; Kasa's algebraic fit).

    Returns (ay, ax, radius, n_columns). For a convex probe the centre is the
    apex; a linear probe's flat top gives a huge radius.
    """
    h, w = on.shape
    col_on = on.any(axis=0)
    ytop = xp.argmax(on, axis=0).astype(xp.float32)
    xs = xp.arange(w, dtype=xp.float32)
    use = (col_on & (ytop > 0)).astype(xp.float32)
    n = use.sum()
    # x^2 + y^2 + D x + E y + F = 0, least squares in (D, E, F); centred for conditioning.
    cx, cy = (w - 1) / 2.0, h / 2.0
    u, v = xs - cx, ytop - cy
    m = xp.stack([u, v, xp.ones_like(u)], axis=1) * use[:, None]
    rhs = -(u * u + v * v) * use
    ata = m.T @ m + 1e-3 * xp.eye(3, dtype=xp.float32)
    d, e, f = xp.linalg.solve(ata, m.T @ rhs)
    ax, ay = cx - d / 2.0, cy - e / 2.0
    radius = xp.sqrt(xp.maximum(d * d / 4.0 + e * e / 4.0 - f, 0.0))
    return ay, ax, radius, n


def estimate_geometry(xp, x, fallback_apex_y: float = 0.0) -> Geometry:
    """Fan geometry from the frame itself: straight lines through the fan's side edges.

    Lines are fitted to the leftmost / rightmost imaged pixel of every row
    (`_fit_edge`: a robust search that ignores the curved skin line and bottom
    and black regions at the edge); the apex is where the two
    lines meet (parallel lines: a linear probe, apex LINEAR_APEX heights up). Rows whose edge touches
    the frame's border say nothing and are left out; with fewer than 4 rows
    left (a fan wider than the frame), the apex is the centre of the circle
    through the skin line (flat: linear), else at (fallback_apex_y * H, centre).
    """
    h, w = x.shape[0], x.shape[1]
    on = x[..., 0] > _ON
    has = on.any(axis=1)
    ys = xp.arange(h, dtype=xp.float32)
    xl = xp.argmax(on, axis=1).astype(xp.float32)
    xr = (w - 1 - xp.argmax(on[:, ::-1], axis=1)).astype(xp.float32)
    top = xp.argmax(has).astype(xp.float32)
    bottom = (h - 1 - xp.argmax(has[::-1])).astype(xp.float32)
    ext = bottom - top
    rows = has
    a_l, b_l, n_l = _fit_edge(xp, ys, xl, rows & (xl > 0), outward=-1.0)
    a_r, b_r, n_r = _fit_edge(xp, ys, xr, rows & (xr < w - 1), outward=1.0)
    n = xp.minimum(n_l, n_r)
    spread = b_r - b_l  # d(width)/dy: > 0 for a sector, ~0 for parallel edges
    far = -LINEAR_APEX * h
    sector = spread > 1e-3
    ay_fit = xp.clip(xp.where(sector, (a_l - a_r) / xp.where(sector, spread, 1.0), far), far, top)
    y1 = top + 0.7 * ext
    ax_fit = xp.where(sector, a_l + b_l * ay_fit, 0.5 * (a_l + a_r + (b_l + b_r) * y1))
    # The fitted edges' angles, seen from the apex at the lowest fitted row.
    tl = xp.arctan2(a_l + b_l * y1 - ax_fit, y1 - ay_fit)
    tr = xp.arctan2(a_r + b_r * y1 - ax_fit, y1 - ay_fit)

    # No usable side edges (the fan is wider than the frame): the skin line's
    # circle, or the fixed fallback. A nearly flat skin line = a linear probe.
    sy, sx, radius, n_top = _fit_skin_arc(xp, on)
    arc = (n_top >= 8) & (sy <= top)
    flat = radius > LINEAR_APEX * h / 2
    ay_fb = xp.where(arc, xp.where(flat, far, sy), fallback_apex_y * h - 0.5)
    ax_fb = xp.where(arc & ~flat, sx, (w - 1) / 2.0)
    ok = n >= 4
    g = Geometry(
        xp.where(ok, ay_fit, ay_fb).astype(xp.float32),
        xp.where(ok, ax_fit, ax_fb).astype(xp.float32),
        0.0,
        1.0,
        tl,
        tr,
    )
    g = _fill_extent(xp, x, g, fit_angles=False)
    fb = _fill_extent(xp, x, g, fit_angles=True)  # fallback angles from the pixels
    return Geometry(
        g.ay, g.ax, g.r0, g.r_max, xp.where(ok, tl, fb.theta_l), xp.where(ok, tr, fb.theta_r)
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
    """[H, W] gain: the slider gains (dB, evenly spaced in depth) smoothly interpolated."""
    k = gains_db.shape[0]
    pos = depth01(xp, h, w, g) * (k - 1)
    i = xp.clip(xp.floor(pos), 0, k - 2).astype(xp.int32)
    s = _smoothstep(xp, pos - i)
    db = gains_db[i] * (1.0 - s) + gains_db[i + 1] * s
    return (10.0 ** (db / 20.0)).astype(xp.float32)


def tgc(xp, x, gains_db, g: Geometry):
    """Time-gain compensation: x * gain(depth), clipped to [0, 1]."""
    gain = tgc_gain(xp, x.shape[0], x.shape[1], gains_db, g)
    return xp.clip(x * gain[..., None], 0.0, 1.0)


def rib_shadow(xp, x, center, half_width, onset, strength, g: Geometry):
    """Darkens the beams |theta - center| < half_width below depth `onset` (in [0, 1])."""
    h, w = x.shape[0], x.shape[1]
    _, _, _, theta = polar(xp, h, w, g)
    d = depth01(xp, h, w, g)
    # Soft edges: a quarter of the half-width in angle, 3% of the depth at the onset.
    ang = _smoothstep(xp, (half_width - xp.abs(theta - center)) / (0.25 * half_width + 1e-6))
    dep = _smoothstep(xp, (d - onset) / 0.03)
    return x * (1.0 - strength * ang * dep)[..., None]


def fan_wedge(xp, x, left, right, g: Geometry):
    """Keeps the sector left < theta < right (radians), with a one-pixel soft edge."""
    h, w = x.shape[0], x.shape[1]
    _, _, r, theta = polar(xp, h, w, g)
    keep = xp.clip((right - theta) * r + 0.5, 0.0, 1.0) * xp.clip(
        (theta - left) * r + 0.5, 0.0, 1.0
    )
    return x * keep[..., None]


def _sigma_px(value: float, h: int) -> float:
    return max(0.5, value * h / REFERENCE_SIZE)


def _gauss_np(n: int, sigma: float) -> np.ndarray:
    pos = np.arange(n, dtype=np.float64)
    k = np.exp(-((pos[None, :] - pos[:, None]) ** 2) / (2 * sigma * sigma))
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def speckle_field(xp, normal2, psf: tuple[float, float]):
    """Unit-mean Rayleigh speckle [H, W] from two standard normal fields [2, H, W].

    The complex gaussian field is filtered by the PSF (axial, lateral sigma in
    pixels) and renormalised per pixel to unit variance, so |field| is Rayleigh
    everywhere (also at the borders), with the PSF's grain size.
    """
    h, w = normal2.shape[1], normal2.shape[2]
    ka, kl = _gauss_np(h, psf[0]), _gauss_np(w, psf[1])
    var = (ka**2).sum(1)[:, None] * (kl**2).sum(1)[None, :]
    norm = xp.asarray((1.0 / np.sqrt(var)).astype(np.float32))
    ka, kl = xp.asarray(ka), xp.asarray(kl)
    re = (ka @ normal2[0] @ kl.T) * norm
    im = (ka @ normal2[1] @ kl.T) * norm
    return xp.sqrt(re * re + im * im) * (1.0 / math.sqrt(math.pi / 2.0))


def speckle(xp, x, strength, normal2, psf: tuple[float, float], envelope_sigma: float):
    """Blends in re-synthesised speckle: (1 - a) x + a * smooth(x) * rayleigh; 0 stays 0."""
    h, w = x.shape[0], x.shape[1]
    eh, ew = xp.asarray(_gauss_np(h, envelope_sigma)), xp.asarray(_gauss_np(w, envelope_sigma))
    env = xp.einsum("ih,hwc->iwc", eh, x)
    env = xp.einsum("jw,iwc->ijc", ew, env)
    field = speckle_field(xp, normal2, psf)[..., None]
    out = (1.0 - strength) * x + strength * env * field
    return xp.where(x > 0, xp.clip(out, 0.0, 1.0), 0.0).astype(xp.float32)


# ----------------------------------------------------------------------------
# Random wrappers.
# ----------------------------------------------------------------------------


def _maybe(xp, cond, fn, x):
    """fn() where cond else x: a select under jax (vmapped), a real branch in numpy."""
    if xp is np:
        return fn() if cond else x
    return xp.where(cond, fn(), x)


def _u(u, lo, hi):
    return lo + (hi - lo) * u


def geometry_of(xp, x, cfg) -> Geometry:
    """The frame's geometry: estimated from its fan, or the fixed apex of cfg.apex_y."""
    if cfg.estimate_apex:
        return estimate_geometry(xp, x, cfg.apex_y)
    return fixed_geometry(xp, x, cfg.apex_y)


def augment_one(x, rand, cfg, xp):
    """One float32 frame [H, W, C] in [0, 1] through the enabled operations.

    `rand` has .uniform(shape) / .normal(shape) (see lusjax.data.augment).
    """
    h, w = x.shape[0], x.shape[1]
    u = rand.uniform((NUM_UNIFORMS,))
    g = geometry_of(xp, x, cfg)  # the geometric ops keep the apex, edges and r0
    if cfg.zoom_prob > 0:
        z = xp.exp(_u(u[_U_ZOOM_V], math.log(cfg.zoom[0]), math.log(cfg.zoom[1])))
        x = _maybe(xp, u[_U_ZOOM] < cfg.zoom_prob, lambda: depth_zoom(xp, x, z, g), x)
    if cfg.speckle_prob > 0:
        normal2 = rand.normal((2, h, w))
        a = _u(u[_U_SPECKLE_V], 0.5, 1.0) * cfg.speckle_strength
        psf = (_sigma_px(cfg.speckle_psf[0], h), _sigma_px(cfg.speckle_psf[1], h))
        env = _sigma_px(cfg.speckle_envelope, h)
        x = _maybe(
            xp, u[_U_SPECKLE] < cfg.speckle_prob, lambda: speckle(xp, x, a, normal2, psf, env), x
        )
    if cfg.shadow_prob > 0:
        center = g.center + _u(u[_U_SHADOW_C], -0.8, 0.8) * g.half
        width = _u(u[_U_SHADOW_W], *cfg.shadow_width) * g.half
        onset = _u(u[_U_SHADOW_D], *cfg.shadow_depth)
        strength = _u(u[_U_SHADOW_S], *cfg.shadow_strength)
        x = _maybe(
            xp,
            u[_U_SHADOW] < cfg.shadow_prob,
            lambda: rib_shadow(xp, x, center, width, onset, strength, g),
            x,
        )
    if cfg.tgc_prob > 0:
        k = int(cfg.tgc_points)
        if not 2 <= k <= MAX_TGC_POINTS:
            raise ValueError(f"aug.us.tgc_points must be in [2, {MAX_TGC_POINTS}], got {k}")
        gains = _u(u[_U_TGC_V : _U_TGC_V + k], -cfg.tgc_db, cfg.tgc_db)
        x = _maybe(xp, u[_U_TGC] < cfg.tgc_prob, lambda: tgc(xp, x, gains, g), x)
    if cfg.wedge_prob > 0:
        left = g.theta_l + u[_U_WEDGE_L] * cfg.wedge_max * g.half
        right = g.theta_r - u[_U_WEDGE_R] * cfg.wedge_max * g.half
        x = _maybe(xp, u[_U_WEDGE] < cfg.wedge_prob, lambda: fan_wedge(xp, x, left, right, g), x)
    return x.astype(xp.float32)


def augment_batch(
    rng: jax.Array, x: jax.Array, example_ids: jax.Array | None, cfg: ml_collections.ConfigDict
) -> jax.Array:
    """float32 [B, H, W, C] in [0, 1] -> same shape, on the device (jittable).

    key_i = fold_in(rng, example_ids[i]), as in `lusjax.data.augment`.
    """
    from lusjax.data.augment import JaxRandom  # the shared random source

    if example_ids is None:
        example_ids = jnp.arange(x.shape[0])
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids)
    return jax.vmap(lambda k, xi: augment_one(xi, JaxRandom(k), cfg, jnp))(keys, x)
