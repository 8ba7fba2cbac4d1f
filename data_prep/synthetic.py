"""Synthetic lung-ultrasound clips: fast, seeded, numpy only.

A clip is drawn in two steps: `sample_scene` draws what is in it (a `Scene`:
fan geometry, pleura, findings, motion, gain), `render` draws its frames.
Everything is computed in *scan coordinates* (depth d in [0, 1) along the
beam, lateral position u in [-1, 1] across the fan) on a [T, size, size] grid,
then looked up into the image through a per-clip pixel -> (d, u) map: that map
is what makes a convex probe's fan a sector and a linear one a rectangle, and
everything outside the fan black.

What a frame shows (scan space, top to bottom):
  chest wall   soft tissue with fascia lines, static speckle;
  pleura       a bright line at a depth that varies per patient and per clip,
               tilted/curved; thick and broken when irregular;
  lung         dark, shimmering reverberation below the pleura whose texture
               slides laterally over time (lung sliding, a breathing cycle);
  A-lines      fading repetitions of the pleura at 2, 3, 4... times its depth;
  B-lines      bright vertical comet tails from the pleura to the bottom, which
               erase the A-lines and move a little with sliding;
  consolidation a hepatised, tissue-like patch under the pleura with an
               irregular (shred) lower border and bright air bronchograms;
  effusion     an anechoic (black) lens under the parietal pleura;
  rib          optionally, a bright arc with a black acoustic shadow below.
Nuisance on top: depth setting, gain, time-gain slope, attenuation, gamma,
speckle size, fan type/size/position, noise.

Classes (`CLASS_NAMES`), derived from the findings like a clinician would:
  0 "regular"        A-line pattern, at most 2 B-lines (healthy, aerated lung);
  1 "b_lines"        >= 3 B-lines, no consolidation (interstitial, COVID-like);
  2 "consolidation"  a subpleural consolidation (bacterial-pneumonia-like),
                     often with effusion, some B-lines or an irregular pleura.
Patients hold one class and body traits (chest-wall depth, tissue layers), so
clips of a patient are alike; a clip adds probe, depth, gain, findings' layout.

Everything is deterministic: clip `i` of seed `s` depends only on (s, i).

Learnability (600 clips x 16 frames, 64x64, patient-grouped 70/30 split,
linear probe on frozen ResNet-18 features of every 4th frame; one H100):
random init 44-47% (chance 33%); SimCLR on temporal pairs + crop/gain/
contrast/gamma augmentation, 1,500 steps of batch 256 (~100 s), 92-93%;
supervised ResNet-18, 750 steps, 92%. The class is visible in single frames,
but gain, depth, fan and speckle hide it from random features.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from data_prep.clip import Clip
from lusjax.data.format import FINDINGS
from lusjax.errors import UserError

CLASS_NAMES = ("regular", "b_lines", "consolidation")
# Bump when the same (seed, index) would draw different frames, so caches of
# generated datasets (keyed by their arguments) can tell.
VERSION = 2  # 2: dataset.json records each clip's stored fps
FPS = 20.0  # nominal frame rate, for timestamps


@dataclasses.dataclass
class Scene:
    """What one synthetic clip shows: sampled by `sample_scene`, drawn by `render`.

    Depths are in scan units (0 = skin, 1 = bottom of the image), lateral
    positions in [-1, 1] across the fan, sizes in pixels where they say so.
    """

    label: int
    probe: str  # "convex" | "linear"
    # Fan geometry in pixels: apex/top, radius at the skin, depth, spread.
    center_x: float
    top: float  # y of the skin line (linear) / of the apex (convex)
    radius0: float  # convex: radius at the skin (0 for linear)
    depth_px: float
    half_width: float  # convex: half-angle (rad); linear: half-width (px)
    # Anatomy.
    pleura_depth: float
    pleura_tilt: float
    pleura_curve: float
    pleura_amp: float
    pleura_px: float  # line thickness (pixels)
    irregular: bool
    tissue_level: float
    fascia: np.ndarray  # [k, 2] (depth, amplitude) of chest-wall layers
    lung_level: float
    a_amp: float
    a_decay: float
    b_pos: np.ndarray  # [n_b] lateral positions
    b_width: np.ndarray  # [n_b] half-widths (lateral units)
    b_amp: np.ndarray  # [n_b]
    consolidation: tuple | None  # (u0, u1, depth below pleura, level)
    effusion: tuple | None  # (u0, u1, depth below pleura)
    rib: tuple | None  # (u center, half-width)
    # Motion.
    slide_px: float  # lateral texture shift amplitude (pixels)
    bob_px: float  # vertical breathing motion of the whole scene (pixels)
    period: float  # breathing period (frames)
    phase: float
    # Acquisition nuisance.
    gain: float
    tgc: float  # log-gain slope with depth
    atten: float
    gamma: float
    speckle_px: float
    noise: float

    @property
    def findings(self) -> dict[str, int]:
        n_b = len(self.b_pos)
        return {
            "b_lines": int(n_b >= 3),
            "a_lines": int(self.a_amp * self.a_decay > 0.12 and n_b < 5),
            "effusion": int(self.effusion is not None),
            "consolidation": int(self.consolidation is not None),
            "pleural_irregular": int(self.irregular),
        }


def label_from_findings(findings: dict[str, int]) -> int:
    """The class rule: consolidation beats B-lines beats regular."""
    if findings.get("consolidation") == 1:
        return 2
    if findings.get("b_lines") == 1:
        return 1
    return 0


def patient_traits(seed: int, patient: int, n_classes: int = 3) -> dict:
    """A patient's class (balanced over blocks of patients) and body traits."""
    block_perm = np.random.default_rng([seed, 1, patient // n_classes]).permutation(n_classes)
    rng = np.random.default_rng([seed, 2, patient])
    return {
        "label": int(block_perm[patient % n_classes]),
        "wall_cm": float(rng.uniform(0.8, 3.0)),  # chest-wall thickness
        "tissue_level": float(rng.uniform(0.25, 0.5)),
        "fascia": rng.uniform([0.15, 0.2], [0.9, 0.7], size=(int(rng.integers(1, 4)), 2)),
    }


def sample_scene(
    rng: np.random.Generator,
    label: int,
    size: int,
    traits: dict,
    nuisance: float = 1.0,
    max_b_lines: int = 8,
) -> Scene:
    """Draws a clip's content for class `label` (see the module docstring)."""
    nz = float(nuisance)

    def jitter(center, spread):  # nuisance-scaled uniform draw around `center`
        return float(center + nz * rng.uniform(-spread, spread))

    probe = "linear" if rng.random() < 0.35 else "convex"
    # Depth setting: linear probes image shallower. The pleura's scan depth is
    # wall thickness over depth setting, so it varies with patient and clip.
    depth_cm = rng.uniform(4.0, 7.0) if probe == "linear" else rng.uniform(7.0, 14.0)
    pleura_depth = float(np.clip(traits["wall_cm"] / depth_cm, 0.1, 0.4))
    if probe == "convex":
        top = jitter(-0.25 * size, 0.15 * size)
        radius0 = float(rng.uniform(0.2, 0.45) * size)
        half_width = jitter(0.55, 0.12)
        depth_px = size - 1 - (top + radius0) - abs(jitter(0, 0.05 * size))
    else:
        top = abs(jitter(0, 0.08 * size))
        radius0 = 0.0
        half_width = jitter(0.42 * size, 0.07 * size)
        depth_px = size - 1 - top - abs(jitter(0, 0.05 * size))

    # B-lines: a regular lung may show up to 2, >= 3 define the "b_lines" class.
    if label == 0:
        n_b = int(rng.choice(3, p=[0.6, 0.25, 0.15]))
    elif label == 1:
        n_b = int(rng.integers(3, max(max_b_lines, 3) + 1))
    else:
        n_b = int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))
    b_pos = rng.uniform(-0.85, 0.85, n_b)
    b_width = rng.uniform(0.02, 0.06, n_b)
    b_amp = rng.uniform(0.45, 0.95, n_b)

    consolidation = None
    effusion = None
    irregular = bool(rng.random() < {0: 0.05, 1: 0.6, 2: 0.5}[label])
    if label == 2:
        width = rng.uniform(0.25, 0.9)
        u0 = rng.uniform(-0.9, 0.9 - width)
        depth = min(0.4, width * rng.uniform(0.2, 0.5))  # a lens, wider than deep
        consolidation = (u0, u0 + width, depth, rng.uniform(0.35, 0.6))
    if rng.random() < {0: 0.03, 1: 0.1, 2: 0.4}[label]:
        width = rng.uniform(0.3, 0.9)
        u0 = rng.uniform(-0.95, 0.95 - width)
        effusion = (u0, u0 + width, rng.uniform(0.08, 0.25))
    rib = None
    if rng.random() < 0.4:
        side = rng.choice([-1.0, 1.0])
        rib = (side * rng.uniform(0.55, 0.9), rng.uniform(0.1, 0.22))

    return Scene(
        label=label,
        probe=probe,
        center_x=jitter((size - 1) / 2, 0.06 * size),
        top=top,
        radius0=radius0,
        depth_px=depth_px,
        half_width=half_width,
        pleura_depth=pleura_depth,
        pleura_tilt=float(rng.uniform(-0.04, 0.04)),
        pleura_curve=float(rng.uniform(-0.03, 0.03)),
        pleura_amp=float(rng.uniform(0.7, 1.0)),
        pleura_px=float(
            rng.uniform(0.7, 1.4) * max(size / 64, 1) ** 0.5 * (1.6 if irregular else 1)
        ),
        irregular=irregular,
        tissue_level=traits["tissue_level"],
        fascia=traits["fascia"],
        lung_level=float(rng.uniform(0.08, 0.2)),
        a_amp=float(rng.uniform(0.35, 0.8) * (1.0 if label == 0 else rng.uniform(0.2, 0.9))),
        a_decay=float(rng.uniform(0.45, 0.8)),
        b_pos=b_pos,
        b_width=b_width,
        b_amp=b_amp,
        consolidation=consolidation,
        effusion=effusion,
        rib=rib,
        slide_px=float(rng.uniform(0.3, 2.0) * size / 64),
        bob_px=float(rng.uniform(0, 1) * size / 64),
        period=float(rng.uniform(20, 60)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        gain=float(np.exp(nz * rng.uniform(-0.45, 0.45))),
        tgc=jitter(0.0, 1.0),
        atten=float(rng.uniform(0.3, 1.2)),
        gamma=float(np.exp(nz * rng.uniform(-0.35, 0.35))),
        speckle_px=float(rng.uniform(0.5, 1.3) * max(size / 64, 1) ** 0.5),
        noise=float(rng.uniform(0.01, 0.05) * nz),
    )


def fan_map(scene: Scene, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel -> scan-grid indices: (depth index [H, W], lateral index [H, W], inside mask)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if scene.probe == "convex":
        dx, dy = x - scene.center_x, y - scene.top
        radius = np.hypot(dx, dy)
        d = (radius - scene.radius0) / scene.depth_px
        u = np.arctan2(dx, dy) / scene.half_width
    else:
        d = (y - scene.top) / scene.depth_px
        u = (x - scene.center_x) / scene.half_width
    inside = (d >= 0) & (d < 1) & (np.abs(u) <= 1)
    di = np.clip((d * size).astype(np.int32), 0, size - 1)
    ui = np.clip(((u + 1) * 0.5 * (size - 1) + 0.5).astype(np.int32), 0, size - 1)
    return di, ui, inside


_BANK_SIZE = 1024
_BANK_CELLS = (0.5, 0.7, 1.0, 1.4, 2.0)  # speckle cell sizes (pixels) in the bank


def _make_speckle(rng: np.random.Generator, shape: tuple[int, int], px: float) -> np.ndarray:
    """Rayleigh speckle of mean 1, spatially correlated over ~`px` pixels (float32)."""
    re_im = rng.standard_normal((2, *shape), dtype=np.float32)
    # Speckle cells are longer laterally than axially in ultrasound.
    re_im = ndimage.gaussian_filter(re_im, (0, px * 0.6, px * 1.2), mode="wrap", truncate=2.5)
    amp = np.hypot(re_im[0], re_im[1])
    return amp / amp.mean()


@functools.cache
def _speckle_bank(level: int) -> np.ndarray:
    """A large speckle texture, made once per process from a fixed seed."""
    bank = _make_speckle(
        np.random.default_rng([7321, level]), (_BANK_SIZE,) * 2, _BANK_CELLS[level]
    )
    bank.flags.writeable = False
    return bank


def _speckle(rng: np.random.Generator, shape: tuple[int, int], px: float) -> np.ndarray:
    """Speckle of cell size ~`px`: a random crop (and flip) of a cached texture.

    Drawing fresh speckle costs most of a clip's time; crops of a 1024^2 bank
    are as good for a model (the crop is at one of ~10^6 places) and free.
    Read-only view: multiply it, never write to it.
    """
    if max(shape) > _BANK_SIZE // 2:
        return _make_speckle(rng, shape, px)
    level = int(np.argmin(np.abs(np.log(np.array(_BANK_CELLS) / px))))
    y, x = rng.integers(0, _BANK_SIZE - shape[0] + 1), rng.integers(0, _BANK_SIZE - shape[1] + 1)
    flip_y, flip_x = rng.integers(0, 2, size=2) * -2 + 1
    return _speckle_bank(level)[y : y + shape[0], x : x + shape[1]][::flip_y, ::flip_x]


def _smooth_noise(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """1-D smooth noise of std ~1 over `n` samples, correlated over `scale` samples."""
    x = ndimage.gaussian_filter1d(rng.standard_normal(n + 1), max(scale, 0.5), mode="wrap")[:n]
    return (x / (x.std() + 1e-6)).astype(np.float32)


def render_scan(rng: np.random.Generator, scene: Scene, n_frames: int, size: int) -> np.ndarray:
    """The clip in scan space: float32 [T, depth, lateral], linear intensity in [0, 1].

    Everything that does not change over time (anatomy, findings, rib shadow,
    gain profile) is folded into four static [N, N] layers once; a frame is
        speckle_t * (lung + b_lines_t * b_gain + pleura) + wall
    so the per-frame cost is a handful of array passes.
    """
    T, N = n_frames, size
    d = (np.arange(N, dtype=np.float32) / N)[:, None]  # [N, 1] depth
    u = np.linspace(-1, 1, N, dtype=np.float32)[None, :]  # [1, N] lateral
    t = np.arange(T, dtype=np.float32)
    breath = np.sin(2 * np.pi * t / scene.period + scene.phase).astype(np.float32)  # [T]

    # Pleura depth per column: tilt, curve and, when irregular, wiggle and gaps.
    pleura = scene.pleura_depth + scene.pleura_tilt * u + scene.pleura_curve * u**2
    pleura_amp = np.full((1, N), scene.pleura_amp, np.float32)
    if scene.irregular:
        pleura = pleura + 0.012 * _smooth_noise(rng, N, N / 24)[None, :]
        pleura_amp = pleura_amp * np.where(_smooth_noise(rng, N, N / 40) > 0.6, 0.25, 1.0)
    line_w = scene.pleura_px / N
    below = d > pleura  # [N, N]
    depth_below = np.maximum(d - pleura, 0)
    wall_field = _speckle(rng, (N, N), scene.speckle_px)

    # Chest wall: tissue level plus fascia lines, static speckle.
    wall = np.full((N, 1), scene.tissue_level, np.float32)
    for depth, amp in scene.fascia:
        wall = wall + amp * np.exp(-(((d - depth * scene.pleura_depth) * N / 1.2) ** 2))
    wall = np.where(below, 0.0, wall * wall_field)

    # Lung: reverberation background plus A-lines, periodic in depth / pleura depth.
    ratio = d / pleura
    sharp = (pleura / (2 * np.pi * line_w)) ** 2  # cos peak width = the pleura's
    a_lines = scene.a_amp * np.exp(
        (ratio - 2) * np.log(scene.a_decay) + sharp * (np.cos(2 * np.pi * ratio) - 1)
    )
    lung = scene.lung_level * (1 + 0.5 * np.exp(-8 * depth_below)) + np.where(
        ratio > 1.5, a_lines, 0
    )
    # A B-line of strength b replaces the lung by a bright tail: lung + b * b_gain.
    b_gain = 0.55 + 0.45 * np.exp(-1.5 * depth_below) - 0.85 * lung
    lung, b_gain = lung * below, b_gain * below
    pleura_line = pleura_amp * np.exp(-(((d - pleura) / line_w) ** 2))

    if scene.consolidation is not None:
        u0, u1, depth, level = scene.consolidation
        across = np.clip(1 - ((2 * u - u0 - u1) / (u1 - u0)) ** 2, 0, 1)
        # A half-ellipse hanging from the pleura, its lower ("shred") border ragged.
        ragged = 1 + 0.12 * _smooth_noise(rng, N, N / 12) + 0.08 * _smooth_noise(rng, N, N / 60)
        bottom = pleura + depth * np.sqrt(across) * ragged
        inside = below & (across > 0) & (d < bottom)
        blobs = ndimage.gaussian_filter(rng.standard_normal((N, N)).astype(np.float32), N / 50)
        bronchograms = (blobs > 2.0 * blobs.std()) * 0.6  # bright air spots
        wall = np.where(inside, (level + bronchograms) * wall_field, wall)
        lung, b_gain = np.where(inside, 0.0, lung), np.where(inside, 0.0, b_gain)
        shred = (across > 0) & (np.abs(d - bottom) < 1.5 / N) & below
        lung = np.where(shred, 0.8, lung)

    if scene.effusion is not None:
        u0, u1, depth = scene.effusion
        lens = depth * np.sqrt(np.clip(1 - ((2 * u - u0 - u1) / (u1 - u0)) ** 2, 0, 1))
        fluid = below & (d < pleura + lens)
        wall = np.where(fluid, 0.02 * wall_field, wall)
        lung, b_gain = np.where(fluid, 0.0, lung), np.where(fluid, 0.0, b_gain)
        lung = np.where((lens > 0) & (np.abs(d - pleura - lens) < 1.5 / N), 0.8, lung)  # visceral

    # Acquisition gain profile (gain, TGC, attenuation) and the rib, as one
    # static factor on every layer.
    static_gain = scene.gain * np.exp((scene.tgc - scene.atten) * d) * np.ones((1, N), np.float32)
    if scene.rib is not None:
        center, half = scene.rib
        across = np.clip(1 - ((u - center) / half) ** 2, 0, 1)
        rib_top = scene.pleura_depth - 0.03 - 0.04 * across
        shadow = (d > rib_top) & (across > 0)
        static_gain = static_gain * np.where(shadow, 0.08 + 0.3 * (1 - across) ** 4, 1.0)
        arc = 0.8 * np.exp(-(((d - rib_top) * N / 1.2) ** 2)) * (across > 0)
        wall = wall + arc * wall_field * scene.gain
    lung, b_gain = lung * static_gain, b_gain * static_gain
    pleura_line, wall = pleura_line * static_gain, wall * static_gain

    # B-lines: lateral profiles [T, N], sliding a little and flickering.
    shift_u = 2 * scene.slide_px * breath / N  # lateral units
    b = np.zeros((T, N), np.float32)
    for k, (pos, width, amp) in enumerate(zip(scene.b_pos, scene.b_width, scene.b_amp)):
        flicker = 1 + 0.12 * np.sin(2 * np.pi * t / 7.0 + 2.3 * k)
        b += amp * flicker[:, None] * np.exp(-(((u - pos - 0.3 * shift_u[:, None]) / width) ** 2))
    b = np.clip(b, 0, 1)[:, None, :]  # [T, 1, N]

    # Lung speckle slides laterally with breathing (lung sliding); a second,
    # counter-moving layer makes it shimmer. The chest wall stays still.
    pad = int(np.ceil(scene.slide_px)) + 2
    offset = np.rint(scene.slide_px * breath).astype(np.int32) + pad
    slide = 0.7 * _speckle(rng, (N, N + 2 * pad), scene.speckle_px)
    shimmer = 0.3 * _speckle(rng, (N, N + 2 * pad), scene.speckle_px)
    # Sensor noise: windows of one long noise strip, a different window per
    # frame (as good as fresh noise to a model, and 15x cheaper to draw).
    strip = rng.standard_normal(N * N + 211 * T, dtype=np.float32) * scene.noise

    base = lung + pleura_line
    scan = np.empty((T, N, N), np.float32)
    for i, o in enumerate(offset):  # frame by frame: stays in cache
        frame = np.multiply(b[i], b_gain, out=scan[i])
        frame += base
        frame *= slide[:, o : o + N] + shimmer[:, 2 * pad - o : 2 * pad - o + N]
        frame += wall
        frame += strip[211 * i : 211 * i + N * N].reshape(N, N)
    return np.clip(scan, 0, 1, out=scan)


def render(rng: np.random.Generator, scene: Scene, n_frames: int, size: int) -> np.ndarray:
    """The clip's frames, uint8 [T, size, size]: scan -> gamma -> fan, black outside."""
    scan = render_scan(rng, scene, n_frames, size)
    # Gamma through a lookup table: an integer gather instead of a float pow.
    lut = (np.linspace(0, 1, 1024, dtype=np.float32) ** scene.gamma * 255 + 0.5).astype(np.uint8)
    lut = np.append(lut, np.uint8(0))  # index 1024: outside the fan
    di, ui, inside = fan_map(scene, size)
    # The probe sits still but the body moves a little with breathing.
    t = np.arange(n_frames, dtype=np.float32)
    bob = np.rint(scene.bob_px * np.sin(2 * np.pi * t / scene.period + scene.phase + 0.6))
    flat = {}
    frames = np.empty((n_frames, size, size), np.uint8)
    for i in range(n_frames):
        if bob[i] not in flat:
            idx = np.clip(di - int(bob[i]), 0, size - 1) * size + ui
            flat[bob[i]] = np.where(inside, idx, size * size)
        scan_i = scan[i].reshape(-1)
        scan_i *= 1023
        scan_i += 0.5
        q = np.append(scan_i.astype(np.int16), np.int16(1024))
        frames[i] = lut[q[flat[bob[i]]]]
    return frames


def make_clip(
    rng: np.random.Generator,
    index: int,
    *,
    n_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    clips_per_patient: int = 3,
    nuisance: float = 1.0,
    max_b_lines: int = 8,
) -> Clip:
    """Draws synthetic clip number `index` (its patient is index // clips_per_patient)."""
    patient = index // max(clips_per_patient, 1)
    traits = patient_traits(seed, patient)
    scene = sample_scene(rng, traits["label"], size, traits, nuisance, max_b_lines)
    findings = scene.findings
    assert label_from_findings(findings) == scene.label, (findings, scene.label)
    frames = render(rng, scene, n_frames, size)
    return Clip(
        video_id=f"synthetic/p{patient:05d}/c{index:06d}",
        frames=frames,
        frame_idx=np.arange(n_frames, dtype=np.int32),
        timestamp=(np.arange(n_frames) / FPS).astype(np.float32),
        patient_id=f"synthetic/p{patient:05d}",
        probe=scene.probe,
        label_name=CLASS_NAMES[scene.label],
        findings={k: findings[k] for k in FINDINGS},
        source="synthetic",
    )


def generate_clips(
    n_clips: int,
    n_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    *,
    clips_per_patient: int = 3,
    nuisance: float = 1.0,
    max_b_lines: int = 8,
    start: int = 0,
) -> Iterator[Clip]:
    """Yields clips start..start+n_clips-1 of the synthetic corpus of `seed`.

    Clip i depends only on (seed, i), so corpora of different sizes share their
    first clips and generation can be split across processes by `start`.
    """
    if size < 16 or n_frames < 1 or clips_per_patient < 1:
        raise UserError(
            f"Synthetic clips need size >= 16, n_frames >= 1 and clips_per_patient "
            f">= 1; got {size}, {n_frames}, {clips_per_patient}."
        )
    for index in range(start, start + n_clips):
        rng = np.random.default_rng([seed, 0, index])
        yield make_clip(
            rng,
            index,
            n_frames=n_frames,
            size=size,
            seed=seed,
            clips_per_patient=clips_per_patient,
            nuisance=nuisance,
            max_b_lines=max_b_lines,
        )
