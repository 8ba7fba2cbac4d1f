"""Backbones: reference parameter counts, the shared API, precision, BN modes, synced BN.

Parameter counts use `jax.eval_shape` (no compute), so even ResNet-50 is cheap.
References are torchvision's models without the classifier (3-channel input):
resnet18/50 minus `fc`, and mobilenet_v3_small/large `.features`.
"""

from __future__ import annotations

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lusjax import models, sharding
from lusjax.errors import UserError
from lusjax.models import layers, mobilenetv3, resnet

REFERENCE_PARAMS = {
    "resnet18": 11_176_512,  # torchvision 11,689,512 - fc (512*1000 + 1000)
    "resnet50": 23_508_032,  # torchvision 25,557,032 - fc (2048*1000 + 1000)
    "mobilenetv3_small": 927_008,  # torchvision features; whole model 2,542,856
    "mobilenetv3_large": 2_971_952,  # torchvision features; whole model 5,483,032
}
NUM_FEATURES = {
    "resnet18": 512,
    "resnet50": 2048,
    "resnet_tiny": 32,
    "mobilenetv3_small": 576,
    "mobilenetv3_large": 960,
}


def _abstract_init(model, channels: int, size: int = 64):
    x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _n_params(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_param_count_matches_reference(name):
    model = models.get(name, num_channels=3, dtype="float32")
    variables = _abstract_init(model, 3)
    assert _n_params(variables["params"]) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", models.NAMES)
def test_num_features_before_init_and_grayscale_only_changes_first_conv(name):
    model1 = models.get(name, num_channels=1)
    model3 = models.get(name, num_channels=3)
    assert model1.num_features == NUM_FEATURES[name]  # available before init
    p1 = _abstract_init(model1, 1)["params"]
    p3 = _abstract_init(model3, 3)["params"]
    flat1 = {"/".join(map(str, k)): v.shape for k, v in jax.tree_util.tree_leaves_with_path(p1)}
    flat3 = {"/".join(map(str, k)): v.shape for k, v in jax.tree_util.tree_leaves_with_path(p3)}
    assert flat1.keys() == flat3.keys()
    diff = [k for k in flat1 if flat1[k] != flat3[k]]
    assert len(diff) == 1 and "conv" in diff[0] and "kernel" in diff[0], diff
    kh, kw, cin3, out = flat3[diff[0]]
    cin1 = flat1[diff[0]][2]
    assert cin3 == 3 * cin1  # 1 -> 3 channels (x16 each after the patch stem's space-to-depth)
    assert _n_params(p3) - _n_params(p1) == kh * kw * (cin3 - cin1) * out


def test_unknown_name_and_wrong_channels_are_user_errors():
    with pytest.raises(UserError, match="unknown backbone"):
        models.get("resnet19")
    model = models.get("resnet_tiny", num_channels=1)
    with pytest.raises(UserError, match="num_channels=1"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


# --- width multiplier: closed-form counts, checked at width 1 against the references ---


def _resnet18_count(width: float, channels: int = 3) -> int:
    w = [round(64 * width) * 2**i for i in range(4)]
    n = 49 * channels * w[0] + 2 * w[0]  # stem conv + BN
    c_in = w[0]
    for c in w:
        for _ in range(2):
            n += 9 * c_in * c + 9 * c * c + 4 * c  # two 3x3 convs + two BNs
            if c_in != c:
                n += c_in * c + 2 * c  # 1x1 downsample + BN
            c_in = c
    return n


def _mobilenetv3_count(blocks, stem: int, width: float, channels: int = 3) -> int:
    ch = lambda c: mobilenetv3.make_divisible(c * width)
    c_in = ch(stem)
    n = 9 * channels * c_in + 2 * c_in
    for b in blocks:
        exp, out = ch(b.expanded), ch(b.out)
        if exp != c_in:
            n += c_in * exp + 2 * exp
        n += b.kernel**2 * exp + 2 * exp  # depthwise
        if b.use_se:
            sq = mobilenetv3.make_divisible(exp // 4)
            n += exp * sq + sq + sq * exp + exp
        n += exp * out + 2 * out
        c_in = out
    return n + c_in * 6 * c_in + 2 * 6 * c_in


def test_closed_form_counts_agree_with_references():
    assert _resnet18_count(1.0) == REFERENCE_PARAMS["resnet18"]
    small = _mobilenetv3_count(mobilenetv3.SMALL, mobilenetv3.SMALL_STEM, 1.0)
    large = _mobilenetv3_count(mobilenetv3.LARGE, mobilenetv3.LARGE_STEM, 1.0)
    assert small == REFERENCE_PARAMS["mobilenetv3_small"]
    assert large == REFERENCE_PARAMS["mobilenetv3_large"]


@pytest.mark.parametrize(
    "name,width,expected_features,torchvision_params",
    [
        ("resnet18", 0.5, 256, None),
        ("resnet18", 2.0, 1024, None),
        ("resnet50", 0.5, 1024, None),
        # torchvision mobilenet_v3_*(width_mult=w).features, counted with torchvision 0.26.
        ("mobilenetv3_small", 0.75, 432, 552_376),  # 6 * make_divisible(96 * 0.75) = 6 * 72
        ("mobilenetv3_large", 0.5, 480, 785_736),  # 6 * make_divisible(160 * 0.5) = 6 * 80
    ],
)
def test_width_multiplier(name, width, expected_features, torchvision_params):
    model = models.get(name, num_channels=3, width=width)
    assert model.num_features == expected_features
    n = _n_params(_abstract_init(model, 3)["params"])
    if name == "resnet18":
        assert n == _resnet18_count(width)
    elif name == "mobilenetv3_small":
        assert n == _mobilenetv3_count(mobilenetv3.SMALL, mobilenetv3.SMALL_STEM, width)
    elif name == "mobilenetv3_large":
        assert n == _mobilenetv3_count(mobilenetv3.LARGE, mobilenetv3.LARGE_STEM, width)
    else:  # convs scale ~quadratically with width
        assert 0.2 < n / REFERENCE_PARAMS[name] < 0.3
    if torchvision_params is not None:
        assert n == torchvision_params


# --- precision ---


@pytest.mark.parametrize("name", models.NAMES)
def test_bf16_compute_f32_params_and_output(name):
    model = models.get(name, num_channels=1, dtype="bfloat16")
    x = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)

    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        (feats, state) = model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: isinstance(mdl, (nn.Conv, nn.BatchNorm)),
        )
        return variables, feats, state

    variables, feats, state = jax.eval_shape(run, x)
    assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    assert {s.dtype for s in jax.tree.leaves(state["batch_stats"])} == {jnp.dtype("float32")}
    acts = jax.tree.leaves(state["intermediates"])
    assert len(acts) > 5 and {a.dtype for a in acts} == {jnp.dtype("bfloat16")}
    assert feats.shape == (2, model.num_features) and feats.dtype == jnp.float32


def test_dtype_spellings():
    assert layers.compute_dtype(jnp.bfloat16) == layers.compute_dtype("bfloat16")
    assert layers.compute_dtype("float32") == jnp.float32
    with pytest.raises(UserError, match="dtype"):
        layers.compute_dtype("bf17")


# --- real compute (small; initial values made on the host where init's own values do not
# matter, because compiling init's ~100 RNG calls costs tens of seconds on a shared CPU) ---


def _host_variables(model, x_shape, seed: int = 0):
    """Variables of init's shapes: fan-in-scaled normal kernels, BN at identity."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        leaf_name = path[-1].key
        if leaf_name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)
        return jnp.full(leaf.shape, 1.0 if leaf_name in ("scale", "var") else 0.0, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_batch_stats_update_only_in_train_mode():
    model = models.get("resnet_tiny", num_channels=1)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 1)) * 2 + 1
    variables = _host_variables(model, x.shape)

    @jax.jit
    def run(variables, x):
        train = model.apply(variables, x, train=True, mutable=["batch_stats"])
        evals = model.apply(variables, x, train=False, mutable=["batch_stats"])
        return train, evals, model.apply(variables, x[:1], train=False)

    (train_feats, train_state), (eval_feats, eval_state), one = run(variables, x)
    stats0 = variables["batch_stats"]
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), stats0, train_state["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # Eval leaves the statistics alone, needs no mutable collection and is per-example.
    same = jax.tree.map(lambda a, b: bool(np.all(a == b)), stats0, eval_state["batch_stats"])
    assert all(jax.tree.leaves(same))
    np.testing.assert_allclose(eval_feats[:1], one, rtol=1e-5, atol=1e-6)
    assert not np.allclose(train_feats, eval_feats)


def test_resnet_zero_init_residual_and_stems():
    def block_scales(zero_init_residual):
        block = resnet.BasicBlock(
            16,
            1,
            functools.partial(layers.conv, dtype=jnp.float32),
            layers.batch_norm(False, jnp.float32, None),
            zero_init_residual=zero_init_residual,
        )
        params = block.init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)))["params"]
        return params["bn1"]["scale"], params["bn2"]["scale"]

    (bn1_z, bn2_z), (bn1_o, bn2_o) = jax.jit(lambda: (block_scales(True), block_scales(False)))()
    assert not np.any(bn2_z) and np.all(bn1_z == 1)
    assert np.all(bn2_o == 1) and np.all(bn1_o == 1)
    assert resnet.ResNet.zero_init_residual  # the default, passed to every block

    x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
    init = lambda m: jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False), x)
    model = models.get("resnet_tiny", num_channels=1, stem="imagenet")
    small = models.get("resnet_tiny", num_channels=1, stem="small")
    patch = models.get("resnet_tiny", num_channels=1)
    assert init(model)["params"]["conv1"]["kernel"].shape == (7, 7, 1, 16)
    assert init(small)["params"]["conv1"]["kernel"].shape == (3, 3, 1, 16)
    assert init(patch)["params"]["conv1"]["kernel"].shape == (3, 3, 16, 16)
    # Stride: 32 px -> 8 (ImageNet and patch stems: /4) vs 32 (small stem: /1), then /2.
    for m, size in ((model, 4), (small, 16), (patch, 4)):
        _, inter = jax.eval_shape(
            lambda v, x, m=m: m.apply(
                v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
            ),
            init(m),
            x,
        )
        assert inter["intermediates"]["layer2_0"]["__call__"][0].shape == (2, size, size, 32)


def test_resnet_tiny_train_step_64x64_grayscale():
    """The quickstart path: real init, forward + backward + SGD update, on 64x64x1."""
    model = models.get("resnet_tiny", num_channels=1, dtype="float32")
    x = jax.random.uniform(jax.random.key(1), (8, 64, 64, 1))
    # rbg keys: init compiles in ~1.5 s of CPU instead of ~6 s with threefry.
    key = jax.random.key(0, impl="rbg")
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(key, x)

    @jax.jit
    def step(params, batch_stats, x):
        def loss_fn(params):
            feats, state = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.mean(jnp.square(feats - 1.0)), state["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return params, stats, loss, grads

    params, stats = variables["params"], variables["batch_stats"]
    params, stats, loss0, grads = step(params, stats, x)
    jax.block_until_ready(loss0)
    t0 = time.perf_counter()
    for _ in range(3):
        params, stats, loss, _ = step(params, stats, x)
    jax.block_until_ready(loss)
    per_step = (time.perf_counter() - t0) / 3
    print(f"resnet_tiny 8x64x64x1 train step: {per_step * 1e3:.1f} ms")
    assert np.isfinite(float(loss)) and float(loss) < float(loss0)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert per_step < 2.0  # ~10-20 ms measured; generous for a shared CPU


def test_mobilenetv3_blocks_run_bf16():
    # The first 4 Small blocks cover every block kind (SE or not, ReLU or hard-swish,
    # residual or strided); the full networks run in the slow test (compile time).
    model = mobilenetv3.MobileNetV3(blocks=mobilenetv3.SMALL[:4], num_channels=1, dtype="bfloat16")
    assert model.num_features == 240
    assert model.bn_epsilon == 1e-3  # torchvision's; 1e-5 does not reproduce its outputs
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    feats, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        _host_variables(model, x.shape), x
    )
    assert feats.shape == (2, 240) and feats.dtype == jnp.float32
    assert np.all(np.isfinite(feats)) and np.any(feats != 0)


def test_synced_bn_under_shard_map_equals_global_batch():
    mesh = sharding.make_mesh()
    n_dev = mesh.devices.size
    assert n_dev == 8
    synced = models.get("resnet_tiny", num_channels=1, bn_axis_name=sharding.AXIS)
    local = models.get("resnet_tiny", num_channels=1)
    # Per-device inputs with different statistics, so unsynced BN would differ (and
    # check_vma would reject device-varying batch_stats under out_specs P()).
    x = jax.random.normal(jax.random.key(1), (2 * n_dev, 32, 32, 1))
    x = x * jnp.repeat(jnp.arange(1.0, n_dev + 1), 2)[:, None, None, None]
    variables = _host_variables(local, x.shape)

    def loss_fn(params, batch_stats, x, model):
        feats, state = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(jnp.square(feats)), (feats, state["batch_stats"])

    def global_step(params, batch_stats, x):
        return jax.grad(loss_fn, has_aux=True)(params, batch_stats, x, local)

    def sharded_step(params, batch_stats, x):
        # params/stats replicated (invariant): their grad comes back summed over devices.
        return jax.grad(loss_fn, has_aux=True)(params, batch_stats, x, synced)

    sharded = jax.jit(
        jax.shard_map(
            sharded_step,
            mesh=mesh,
            in_specs=(P(), P(), P(sharding.AXIS)),
            out_specs=(P(), (P(sharding.AXIS), P())),
        )
    )
    args = (variables["params"], variables["batch_stats"], x)
    g_ref, (f_ref, s_ref) = jax.jit(global_step)(*args)
    g, (f, s) = sharded(*args)

    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    close(f, f_ref)
    jax.tree.map(close, s, s_ref)
    jax.tree.map(close, g, g_ref)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv3_small", "mobilenetv3_large"])
def test_full_size_train_step_224_bf16(name):
    model = models.get(name, num_channels=3, dtype="bfloat16")
    x = jax.random.uniform(jax.random.key(1), (2, 224, 224, 3))
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(0), x)

    def loss_fn(params):
        feats, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean(jnp.square(feats)), feats

    (_, feats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    assert feats.shape == (2, NUM_FEATURES[name]) and np.all(np.isfinite(feats))
    assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def _rel(a, b):
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


@pytest.mark.parametrize("block", [2, 4])
@pytest.mark.parametrize("k", [7, 3, 5])
@pytest.mark.parametrize("shape", [(2, 64, 64, 1), (2, 33, 30, 1), (1, 17, 9, 3), (1, 6, 10, 1)])
def test_space_to_depth_stem_equals_stride2_conv(shape, k, block):
    """Same parameter tree, outputs and kernel gradients as a plain kxk/2 conv (odd sides too)."""
    from lusjax.models import layers

    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    new = layers.StemConvS2(8, k, jnp.float32, block=block)
    ref = layers.conv(8, k, 2, dtype=jnp.float32)
    v = new.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, ref.init(jax.random.PRNGKey(1), x))
    assert _rel(new.apply(v, x), ref.apply(v, x)) < 1e-5
    g_new = jax.grad(lambda v: (new.apply(v, x) ** 2).sum())(v)["params"]["kernel"]
    g_ref = jax.grad(lambda v: (ref.apply(v, x) ** 2).sum())(v)["params"]["kernel"]
    assert _rel(g_new, g_ref) < 1e-5
    assert new.apply(v, x.astype(jnp.bfloat16)).dtype == jnp.float32  # module dtype decides


@pytest.mark.parametrize("block, size", [(2, 64), (4, 62)])
def test_stem_blocks_out_refuses_what_it_cannot_give(block, size):
    """blocks_out needs block 4 and an even output size; anything else is an error, not
    an NHWC output or a cropped one."""
    from lusjax.models import layers

    stem = layers.StemConvS2(8, 7, jnp.float32, block=block, blocks_out=True)
    with pytest.raises(ValueError, match="blocks_out needs block 4"):
        stem.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 1)))
