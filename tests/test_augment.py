"""View augmentations and ultrasound augmentations: invariants, determinism, CPU == device.

Small frames and three compilations in all keep this file to ~30 s on 2 CPU cores:
the device path (`AUG_ALL`, every operation on) is compiled once and reused; the
ultrasound invariants are checked on the numpy path, which
`test_worker_path_reproduces_the_device_path_for_the_same_random_bits` ties to
the device path bit for bit (to float rounding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy import stats

from lusjax import sharding
from lusjax.data import augment, preprocess
from lusjax.data import us_augment as us
from lusjax.data.us_augment import Geometry


def synthetic(n: int, size: int, seed: int = 3):
    """(uint8 frames [n, size, size, 1], scenes, inside-fan masks) of synthetic clips."""
    from data_prep import synthetic as syn

    frames, scenes, masks = [], [], []
    for index in range(n):
        rng = np.random.default_rng([seed, 0, index])
        traits = syn.patient_traits(seed, index // 3)
        scene = syn.sample_scene(rng, traits["label"], size, traits, 1.0, 8)
        frames.append(syn.render(rng, scene, 1, size)[0])
        scenes.append(scene)
        masks.append(syn.fan_map(scene, size)[2])
    return np.stack(frames)[..., None], scenes, np.stack(masks)


@functools.cache
def frames48():
    return synthetic(8, 48)[0]


def all_on(size: int = 32):
    """Every operation, generic and ultrasound, at probability 1."""
    cfg = augment.default_config()
    for k in list(cfg.keys()):
        if k.endswith("_prob"):
            cfg[k] = 1.0
    for k in us._PROBS:
        cfg.us[k] = 1.0
    cfg.size = size
    return cfg


# ----------------------------------------------------------------------------
# augment_batch: the on-device path.
# ----------------------------------------------------------------------------

CFG_ALL = all_on(32)
AUG_ALL = jax.jit(lambda key, x, ids: augment.augment_batch(key, x, ids, CFG_ALL))


def test_dtype_shape_range_and_determinism():
    x = frames48()
    ids = jnp.arange(8)
    out = AUG_ALL(jax.random.key(0), x, ids)
    assert out.dtype == jnp.float32 and out.shape == (8, 32, 32, 1)
    out = np.asarray(out)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.01
    np.testing.assert_array_equal(out, AUG_ALL(jax.random.key(0), x, ids))
    assert not np.allclose(out, AUG_ALL(jax.random.key(1), x, ids))
    # Different examples of the same image get different views.
    same = np.repeat(x[:1], 8, axis=0)
    views = np.asarray(AUG_ALL(jax.random.key(0), same, ids))
    assert np.abs(views[0] - views[1]).mean() > 0.01


def test_per_example_result_depends_only_on_key_id_and_image():
    x = frames48()
    ids = jnp.arange(8)
    out = np.asarray(AUG_ALL(jax.random.key(4), x, ids))
    perm = np.array([5, 2, 7, 0, 1, 6, 3, 4])
    shuffled = np.asarray(AUG_ALL(jax.random.key(4), x[perm], ids[perm]))
    np.testing.assert_allclose(shuffled, out[perm], atol=1e-6)


def test_sharded_over_devices_equals_unsharded():
    """As in train.py: each device augments its slice with ids = device_index * b + arange(b)."""
    n_dev = jax.device_count()
    x = np.concatenate([frames48()] * n_dev)[: 2 * n_dev]
    mesh = sharding.make_mesh()
    cfg = augment.none_config(16)  # a small program: the point is the keys
    cfg.crop_prob = cfg.brightness_prob = cfg.noise_prob = 1.0

    def per_device(key, images):
        b = images.shape[0]
        ids = sharding.device_index(sharding.AXIS) * b + jnp.arange(b)
        return augment.augment_batch(key, images, ids, cfg)

    sharded = jax.jit(
        jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P(sharding.AXIS)), out_specs=P(sharding.AXIS)
        )
    )
    got = np.asarray(sharded(jax.random.key(9), x))
    want = np.asarray(
        jax.jit(lambda k, im: augment.augment_batch(k, im, None, cfg))(jax.random.key(9), x)
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_float_views_pass_through():
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(augment.augment_batch(jax.random.key(0), x, None, CFG_ALL), x)


# ----------------------------------------------------------------------------
# Worker side (numpy) == device side (jax).
# ----------------------------------------------------------------------------


class ReplayJaxDraws:
    """The device path's draws for one example (JaxRandom of its key), as numpy arrays."""

    def __init__(self, key):
        self._jax = augment.JaxRandom(key)

    def uniform(self, shape):
        return np.asarray(self._jax.uniform(shape))

    def normal(self, shape):
        return np.asarray(self._jax.normal(shape))


def test_worker_path_reproduces_the_device_path_for_the_same_random_bits():
    x, ids, key = frames48(), jnp.arange(8) + 100, jax.random.key(3)
    device = np.asarray(AUG_ALL(key, x, ids))
    for i in (0, 5):
        draws = ReplayJaxDraws(jax.random.fold_in(key, ids[i]))
        worker = augment.augment_example_with_draws(x[i], draws, CFG_ALL, "numpy")
        assert worker.dtype == np.float32 and worker.shape == (32, 32, 1)
        np.testing.assert_allclose(worker, device[i], atol=1e-4)  # XLA fuses and reorders


def _summaries(views: np.ndarray) -> dict[str, np.ndarray]:
    w = views.shape[2]
    return {
        "mean": views.mean(axis=(1, 2, 3)),
        "std": views.std(axis=(1, 2, 3)),
        "left_minus_right": (
            views[:, :, : w // 2].mean(axis=(1, 2, 3)) - views[:, :, w // 2 :].mean(axis=(1, 2, 3))
        ),
        "dark_fraction": (views < 0.02).mean(axis=(1, 2, 3)),
        "edge_energy": np.abs(np.diff(views, axis=2)).mean(axis=(1, 2, 3)),
    }


def test_worker_side_and_device_side_sample_the_same_distribution():
    n_calls, img = 40, frames48()[0]
    batch, ids = np.repeat(img[None], 8, axis=0), jnp.arange(8)
    device = np.concatenate(
        [np.asarray(AUG_ALL(jax.random.key(1000 + k), batch, ids)) for k in range(n_calls)]
    )
    rng = np.random.default_rng(1)
    worker = np.stack([augment.augment_example_np(img, rng, CFG_ALL) for _ in range(len(device))])
    assert worker.dtype == device.dtype and worker.shape == device.shape
    dev, wrk = _summaries(device), _summaries(worker)
    for name in dev:
        assert stats.ks_2samp(dev[name], wrk[name]).pvalue > 1e-3, name
    # ...and the check has teeth: a stronger brightness jitter is detected.
    cfg = all_on(32)
    cfg.brightness = 0.5
    other = np.stack([augment.augment_example_np(img, rng, cfg) for _ in range(len(device))])
    assert stats.ks_2samp(dev["mean"], _summaries(other)["mean"]).pvalue < 1e-3


# ----------------------------------------------------------------------------
# Building blocks.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("start,extent,n_out", [(3.2, 30.5, 20), (5.5, 40.0, 64)])
def test_resample_matrix_equals_scale_and_translate(start, extent, n_out):
    x = np.random.default_rng(1).random((50, 60)).astype(np.float32)
    ours = augment.resample_matrix(np, 60, n_out, start, extent) @ x.T
    scale = n_out / extent
    ref = jax.image.scale_and_translate(
        jnp.asarray(x),
        (50, n_out),
        (1,),
        jnp.array([scale]),
        jnp.array([-start * scale]),
        "linear",
        antialias=True,
    )
    np.testing.assert_allclose(ours.T, np.asarray(ref), atol=1e-5)


def test_separable_blur_is_a_gaussian_filter():
    from scipy import ndimage

    x = np.random.default_rng(2).random((40, 50)).astype(np.float32)
    r = us.radius_for(1.5)
    ours = us.gaussian_blur(np, x, 1.5, 1.5, r, r)
    ref = ndimage.gaussian_filter(x.astype(np.float64), 1.5, mode="constant", truncate=r / 1.5)
    np.testing.assert_allclose(ours[r:-r, r:-r], ref[r:-r, r:-r], atol=1e-5)  # interior
    ones = us.gaussian_blur(np, np.ones((12, 9), np.float32), 2.0, 1.0, 6, 3)
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)  # renormalised at the borders


def test_no_augmentation_is_the_eval_resize():
    img = frames48()[2]
    out = augment.augment_example_np(img, np.random.default_rng(0), augment.none_config(32))
    ref = preprocess.resize(preprocess.to_unit(jnp.asarray(img[None])), 32)[0]
    np.testing.assert_allclose(out, np.asarray(ref), atol=1e-5)


# ----------------------------------------------------------------------------
# Ultrasound augmentations (numpy backend, explicit parameters).
# ----------------------------------------------------------------------------

SCENE_FRAMES, SCENES, MASKS = synthetic(16, 96, seed=11)


def _unit(i):
    return SCENE_FRAMES[i].astype(np.float32) / 255.0


def _outside(i, margin: int = 2):
    """Pixels at least `margin` pixels outside the fan."""
    from scipy import ndimage

    return ~ndimage.binary_dilation(MASKS[i], iterations=margin)


def test_geometry_is_estimated_from_the_frame():
    for i, scene in enumerate(SCENES):
        g = us.estimate_geometry(np, _unit(i))
        if scene.probe == "convex":
            assert abs(float(g.ay) - scene.top) < 2.5, i
            assert abs(float(g.ax) - scene.center_x) < 1.5, i
            assert abs(float(g.half) - scene.half_width) < 0.03, i
        else:  # parallel edges: the apex is far above
            assert float(g.ay) < -10 * 96, i
    assert any(s.probe == "convex" for s in SCENES) and any(s.probe == "linear" for s in SCENES)


@pytest.mark.parametrize("zoom", [0.8, 1.25])
def test_depth_zoom_keeps_fan_apex_and_face(zoom):
    for i in range(6):
        x = _unit(i)
        g = us.estimate_geometry(np, x)
        out = us.depth_zoom(np, x, zoom, g)
        assert out.min() >= 0 and out.max() <= 1
        assert np.abs(out[_outside(i)]).max() < 1e-6  # black outside the fan stays black
    # A dot at depth r0 + 20 along a beam moves to r0 + 20 * zoom on the same beam.
    g = Geometry(
        ay=np.float32(-30.0), ax=np.float32(47.5), r0=40.0, r_max=130.0, theta_l=-0.6, theta_r=0.6
    )
    _, _, r, theta = us.polar(np, 96, 96, g)
    dot = np.exp(-((r - 60.0) ** 2 + (r * (theta - 0.3)) ** 2) / 2.0)[..., None]
    out = us.depth_zoom(np, dot.astype(np.float32), zoom, g)[..., 0]
    w = out / out.sum()
    assert abs((w * r).sum() - (40.0 + 20.0 * zoom)) < 0.5
    assert abs((w * theta).sum() - 0.3) < 0.01
    # The transducer face (depth 0) does not move: the apex end of every beam is fixed.
    face = (np.exp(-((r - 42.0) ** 2) / 2.0) * (np.abs(theta) < 0.5))[..., None]
    moved = us.depth_zoom(np, face.astype(np.float32), zoom, g)[..., 0]
    w = moved / moved.sum()
    assert abs((w * r).sum() - (40.0 + 2.0 * zoom)) < 0.2


def test_tgc_scales_by_a_smooth_positive_function_of_depth():
    x = _unit(0) * 0.5  # dim: no clipping, so out / in is the gain itself
    g = us.estimate_geometry(np, x)
    gains = np.array([-4.0, 3.0, -2.0, 4.0, 0.0], np.float32)
    out = us.tgc(np, x, gains, g)
    gain = us.tgc_gain(np, 96, 96, gains, g)
    on = x[..., 0] > 0.01
    np.testing.assert_allclose(out[..., 0][on] / x[..., 0][on], gain[on], rtol=1e-4)
    assert gain.min() > 10 ** (-4.01 / 20) and gain.max() < 10 ** (4.01 / 20)
    # A function of depth only, smooth in depth.
    d = us.depth01(np, 96, 96, g)
    order = np.argsort(d.ravel())
    profile = gain.ravel()[order]
    depth = d.ravel()[order]
    same_depth = np.abs(np.diff(depth)) < 1e-6
    assert np.abs(np.diff(profile))[same_depth].max(initial=0) < 1e-4
    fine = np.interp(np.linspace(0, 1, 1001), depth, profile)
    assert np.abs(np.diff(fine, 2)).max() < 5e-3  # no kinks
    # Rows of a linear-probe frame (vertical beams) get one gain each.
    lin = next(i for i, s in enumerate(SCENES) if s.probe == "linear")
    gl = us.estimate_geometry(np, _unit(lin))
    row_gain = us.tgc_gain(np, 96, 96, gains, gl)
    assert np.ptp(row_gain[:, 20:76], axis=1).max() < 3e-3


def test_rib_shadow_only_darkens_a_band_below_its_onset():
    x = _unit(1)
    g = us.estimate_geometry(np, x)
    out = us.rib_shadow(np, x, 0.1, 0.15, 0.3, 0.9, g)
    assert np.all(out <= x + 1e-7) and out.min() >= 0
    _, _, _, theta = us.polar(np, 96, 96, g)
    d = us.depth01(np, 96, 96, g)
    away = (np.abs(theta - 0.1) > 0.16) | (d < 0.29)
    np.testing.assert_array_equal(out[away], x[away])
    core = (np.abs(theta - 0.1) < 0.1) & (d > 0.4) & (x[..., 0] > 0.05)
    np.testing.assert_allclose(out[core], 0.1 * x[core], rtol=1e-4)


def test_fan_wedge_masks_a_narrower_sector():
    x = _unit(2)
    g = us.estimate_geometry(np, x)
    left, right = float(g.theta_l) + 0.2, float(g.theta_r) - 0.1
    out = us.fan_wedge(np, x, left, right, g)
    assert np.all(out <= x) and np.all(out[x == 0] == 0)
    _, _, r, theta = us.polar(np, 96, 96, g)
    inside = (theta > left + 2 / r) & (theta < right - 2 / r)
    outside = (theta < left - 1 / r) | (theta > right + 1 / r)
    np.testing.assert_array_equal(out[inside], x[inside])
    assert np.all(out[outside] == 0)


def test_speckle_keeps_zero_range_and_mean():
    x = _unit(3)
    normal2 = np.random.default_rng(0).standard_normal((2, 96, 96), dtype=np.float32)
    out = us.speckle(np, x, 1.0, normal2, (1.0, 2.0), 1.5)
    assert np.all(out[x == 0] == 0) and out.min() >= 0 and out.max() <= 1
    field = us.speckle_field(
        np, np.random.default_rng(1).standard_normal((2, 256, 256), dtype=np.float32), (1.0, 2.0)
    )
    assert abs(field.mean() - 1.0) < 0.03  # unit-mean Rayleigh...
    assert abs(field.std() / field.mean() - np.sqrt(4 / np.pi - 1)) < 0.03  # ...speckle contrast
    inside = MASKS[3] & (x[..., 0] > 0.05)
    assert abs(out[inside].mean() / x[inside].mean() - 1.0) < 0.1


def test_all_us_augmentations_keep_range_and_black_outside_the_fan():
    cfg = us.none_config()
    for k in us._PROBS:
        cfg[k] = 1.0
    rng = np.random.default_rng(0)
    for i in range(8):
        for _ in range(2):
            out = augment._us_augment_one(_unit(i), augment.NumpyRandom(rng), cfg, np)
            assert out.dtype == np.float32 and out.shape == (96, 96, 1)
            assert out.min() >= 0 and out.max() <= 1
            assert np.abs(out[_outside(i)]).max() < 1e-6, i
            assert not np.allclose(out, _unit(i))
