"""The synthetic LUS generator: deterministic, well-formed, and its findings are visible."""

import collections

import numpy as np
import pytest

from data_prep import synthetic
from lusjax.data.format import FINDINGS

REGULAR, B_LINES, CONSOLIDATION = 0, 1, 2


def _scene(label, i, size=64, **overrides):
    rng = np.random.default_rng([99, label, i])
    scene = synthetic.sample_scene(rng, label, size, synthetic.patient_traits(99, i))
    for k, v in overrides.items():
        setattr(scene, k, v)
    return rng, scene


def _below_pleura(scene, scan, top=0.04, bottom=0.95):
    """Scan rows well below the pleura (deepest pleura point + margin) to the bottom."""
    n = scan.shape[1]
    deepest = scene.pleura_depth + abs(scene.pleura_tilt) + abs(scene.pleura_curve) + 0.015
    return scan[:, int((deepest + top) * n) : int(bottom * n)]


def test_deterministic_and_prefix_stable():
    a = list(synthetic.generate_clips(4, n_frames=3, size=32, seed=3))
    b = list(synthetic.generate_clips(6, n_frames=3, size=32, seed=3))
    c = list(synthetic.generate_clips(2, n_frames=3, size=32, seed=3, start=2))
    d = list(synthetic.generate_clips(4, n_frames=3, size=32, seed=4))
    for x, y in zip(a, b[:4]):
        assert x.video_id == y.video_id and np.array_equal(x.frames, y.frames)
        assert x.findings == y.findings and x.label_name == y.label_name
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a[2:], c))
    assert not any(np.array_equal(x.frames, y.frames) for x, y in zip(a, d))


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_dtype_metadata(size):
    for clip in synthetic.generate_clips(3, n_frames=5, size=size, seed=0):
        assert clip.frames.dtype == np.uint8 and clip.frames.shape == (5, size, size)
        assert list(clip.frame_idx) == list(range(5))
        assert np.all(np.diff(clip.timestamp) > 0)
        assert clip.probe in ("convex", "linear") and clip.source == "synthetic"
        assert clip.label_name in synthetic.CLASS_NAMES
        assert set(clip.findings) == set(FINDINGS)
        assert set(clip.findings.values()) <= {0, 1}
        lit = clip.frames[clip.frames > 0]
        assert 15 < lit.mean() < 200 and (lit == 255).mean() < 0.2  # not black, not saturated


def test_outside_the_fan_is_black_and_inside_is_not():
    probes = set()
    for i in range(8):
        rng, scene = _scene(i % 3, i)
        frames = synthetic.render(rng, scene, 2, 64)
        _, _, inside = synthetic.fan_map(scene, 64)
        probes.add(scene.probe)
        assert 0.3 < inside.mean() < 0.95
        assert frames[:, ~inside].max() == 0
        assert (frames[:, inside] > 0).mean() > 0.75  # dark lung, shadows may hit 0
        if scene.probe == "convex":  # a sector: narrower at the top than at the bottom
            rows = np.flatnonzero(inside.any(1))
            quarter = len(rows) // 4
            assert inside[rows[quarter]].sum() < inside[rows[-quarter]].sum()
    assert probes == {"convex", "linear"}


def test_labels_balanced_follow_findings_and_patients():
    clips = list(synthetic.generate_clips(30, n_frames=1, size=32, seed=0, clips_per_patient=1))
    counts = collections.Counter(c.label_name for c in clips)
    assert counts == dict.fromkeys(synthetic.CLASS_NAMES, 10)
    for c in clips:
        label = synthetic.CLASS_NAMES.index(c.label_name)
        assert synthetic.label_from_findings(c.findings) == label
        assert c.findings["b_lines"] == (label == B_LINES) or label == CONSOLIDATION
        assert c.findings["consolidation"] == (label == CONSOLIDATION)
    grouped = list(synthetic.generate_clips(30, n_frames=1, size=32, seed=0, clips_per_patient=3))
    by_patient = collections.defaultdict(set)
    for c in grouped:
        by_patient[c.patient_id].add(c.label_name)
    assert len(by_patient) == 10 and all(len(v) == 1 for v in by_patient.values())


def test_b_lines_are_vertical_and_a_lines_horizontal():
    """Below the pleura, B-line clips vary across columns, regular clips across rows."""

    def scores(label):
        lateral, axial = [], []
        for i in range(12):
            rng, scene = _scene(label, i, rib=None, effusion=None)
            lung = _below_pleura(scene, synthetic.render_scan(rng, scene, 2, 64))
            columns, rows = lung.mean((0, 1)), lung.mean((0, 2))
            lateral.append(columns.std() / columns.mean())
            axial.append(rows.std() / rows.mean())
        return np.mean(lateral), np.mean(axial)

    b_lateral, b_axial = scores(B_LINES)
    r_lateral, r_axial = scores(REGULAR)
    assert b_lateral > 1.4 * r_lateral  # (2-3.4x over seeds; regular lungs may have 2 B-lines)
    assert r_axial > 1.2 * b_axial


def test_consolidation_is_tissue_like_below_the_pleura():
    def band(label):
        ratios = []
        for i in range(12):
            rng, scene = _scene(
                label,
                i,
                rib=None,
                effusion=None,
                b_pos=np.zeros(0),
                b_width=np.zeros(0),
                b_amp=np.zeros(0),
            )
            scan = synthetic.render_scan(rng, scene, 1, 64)[0]
            u0, u1 = scene.consolidation[:2] if scene.consolidation else (-0.2, 0.2)
            cols = slice(int((u0 + 0.1 + 1) * 32), int((u1 - 0.1 + 1) * 32) + 1)
            p = int((scene.pleura_depth + 0.04) * 64)
            below = scan[p : p + 4, cols].mean()
            wall = scan[int(scene.pleura_depth * 32) : int(scene.pleura_depth * 48)].mean()
            ratios.append(below / wall)
        return np.median(ratios)

    assert band(CONSOLIDATION) > 1.5 * band(REGULAR)  # (2.1-3.8x over seeds)


def test_effusion_is_anechoic():
    rng, scene = _scene(
        CONSOLIDATION, 0, effusion=(-0.5, 0.5, 0.2), rib=None, noise=0.0, consolidation=None
    )
    scan = synthetic.render_scan(rng, scene, 1, 64)[0]
    p = int((scene.pleura_depth + 0.06) * 64)
    assert scan[p : p + 3, 28:36].mean() < 0.05
    assert scan[p : p + 3, 28:36].mean() < 0.2 * scan[: int(scene.pleura_depth * 48), 28:36].mean()


def test_lung_slides_chest_wall_stays():
    rng, scene = _scene(REGULAR, 1, noise=0.0, slide_px=2.0, period=8.0, phase=0.0, rib=None)
    scan = synthetic.render_scan(rng, scene, 3, 64)  # frames 0, 1, 2 of a 8-frame breath
    shallowest = scene.pleura_depth - abs(scene.pleura_tilt) - abs(scene.pleura_curve) - 0.015
    wall = scan[:, : int((shallowest - 0.06) * 64)]
    assert wall.shape[1] >= 4
    lung = _below_pleura(scene, scan)
    assert np.abs(wall[2] - wall[0]).max() < 1e-3  # < 1/4 grey level: only the pleura tail
    assert np.abs(lung[2] - lung[0]).mean() > 0.05 * lung.mean()
