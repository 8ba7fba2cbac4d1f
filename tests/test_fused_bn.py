"""The fused BatchNorm(+add)(+ReLU) of `lusjax.models.fused_bn` computes nn.BatchNorm's
values, gradients and running statistics (single device and synced over shard_map),
lowers to Triton kernels for GPUs, and swaps into ResNet through `layers.bn_act`.

On CPUs the Pallas kernels run in interpret mode. On a GPU host the same tests run the
compiled kernels (`interpret=None` picks them on GPUs), the shard_map ones on CPU devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cuda,cpu \\
        python -m pytest -q tests/test_fused_bn.py
"""

import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lusjax import models, sharding
from lusjax.models import fused_bn, layers

_spec = importlib.util.spec_from_file_location(
    "ab_step", Path(__file__).resolve().parent.parent / "benchmarks" / "ab_step.py"
)
ab_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab_step)

ON_GPU = jax.default_backend() == "gpu"
# 70 rows (not a multiple of any tile) and 24 channels (not a power of two): every
# tile is partial in the channels, the last also in the rows.
SHAPE = (2, 5, 7, 24)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 8 x 32 and 4 row tiles per reduction program: the reductions loop, and
    their last program holds row tiles wholly past the end."""
    monkeypatch.setattr(fused_bn, "TILE", 256)
    monkeypatch.setattr(fused_bn, "REDUCE_PROGRAMS", 2)


def _inputs(shape, dtype, seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    c = shape[-1]
    # A channel mean far from 0 and varied scales: the statistics matter.
    x = jax.random.normal(k[0], shape) * jnp.linspace(0.5, 3.0, c) + jnp.linspace(-2, 2, c)
    scale = 1 + 0.5 * jax.random.normal(k[1], (c,))
    bias = 0.5 * jax.random.normal(k[2], (c,))
    res = jax.random.normal(k[3], shape)
    g = jax.random.normal(k[4], shape)
    return x.astype(dtype), scale, bias, res.astype(dtype), g.astype(dtype)


def _flax_bn(x, scale, bias, res, relu, axis_name=None):
    """nn.BatchNorm (+ residual) (+ ReLU) as ResNet computes it; -> (y, mean, var)."""
    c = x.shape[-1]
    bn = nn.BatchNorm(
        use_running_average=False,
        momentum=0.0,  # the new running statistics are the batch's
        epsilon=layers.BN_EPSILON,
        dtype=x.dtype,
        axis_name=axis_name,
    )
    variables = {
        "params": {"scale": scale, "bias": bias},
        "batch_stats": {"mean": jnp.zeros(c), "var": jnp.ones(c)},
    }
    y, state = bn.apply(variables, x, mutable=["batch_stats"])
    if res is not None:
        y = y + res
    if relu:
        y = nn.relu(y)
    return y, state["batch_stats"]["mean"], state["batch_stats"]["var"]


def _close(a, b, tol):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b))))
    assert err <= tol, f"max error {err:.2e} > {tol:.0e}"


def _close_l2(a, b, tol):
    """Relative L2 error: for bf16, where a pre-activation that rounds to the other side
    of 0 flips the ReLU's gradient for that element (rare, but large)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    err = np.linalg.norm(a - b) / max(1e-30, float(np.linalg.norm(b)))
    assert err <= tol, f"relative L2 error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("impl", fused_bn.IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("relu", "with_res"), [(False, False), (True, False), (True, True)])
def test_values_and_gradients_match_flax(impl, dtype, relu, with_res, small_tiles):
    _check_against_flax(SHAPE, impl, dtype, relu, with_res)


def test_whole_row_tiles_past_the_end(small_tiles):
    """88 rows: 11 whole row tiles (a prime count), 5 per reduction program; the last
    program's last four tiles lie past the end."""
    _check_against_flax((2, 4, 11, 24), "pallas", "float32", True, True)


def test_reduction_steps():
    # whole tiles: a divisor of their count near the target when there is one
    assert fused_bn._steps(512 * 49, 32, 16) == 4  # ResNet-50's last stage: 784 tiles
    assert fused_bn._steps(512 * 112 * 112, 64, 1) == 49  # the stem: 100352 tiles
    assert fused_bn._steps(64 * 11, 64, 1024) == 5  # 11 tiles (prime), target 5
    assert fused_bn._steps(70, 8, 1) == 1


def _check_against_flax(shape, impl, dtype, relu, with_res):
    x, scale, bias, res, g = _inputs(shape, jnp.dtype(dtype))
    res = res if with_res else None
    f32 = lambda v: None if v is None else v.astype(jnp.float32)

    def ref(x, scale, bias, res):
        return _flax_bn(x, scale, bias, res, relu)

    def new(x, scale, bias, res):
        return fused_bn.fused_bn(x, scale, bias, res, relu=relu, impl=impl)

    def vjp(f, x, res, g):
        (y, mean, var), back = jax.vjp(f, x, scale, bias, res)
        return y, mean, var, back((g, jnp.zeros_like(mean), jnp.zeros_like(var)))

    @jax.jit
    def run(x, res, g):
        # nn.BatchNorm in the input's dtype and in float32 (on the same values), fused.
        return vjp(ref, x, res, g), vjp(ref, f32(x), f32(res), f32(g)), vjp(new, x, res, g)

    (y0, m0, v0, g0), (y32, _, _, g32), (y1, m1, v1, g1) = run(x, res, g)
    assert y1.dtype == x.dtype and m1.dtype == v1.dtype == jnp.float32
    _close(m1, m0, 1e-5)
    _close(v1, v0, 1e-5)
    names = ["x", "scale", "bias", "residual"]
    for name, a, b in zip(names, g1, g0):
        assert (a is None) == (b is None), name
        assert a is None or a.dtype == b.dtype, name
    if dtype == "float32":
        _close(y1, y0, 1e-5)
        jax.tree.map(lambda a, b: _close(a, b, 1e-4), g1, g0)
        return
    # bf16: nn.BatchNorm rounds its output to bf16, then adds the residual in bf16;
    # where that moves a pre-activation across 0 the ReLU's gradient flips for that
    # element. The fused kernels round once, after the ReLU. Both are compared with the
    # float32 computation: within 1e-2 (relative L2), and the fused no worse than flax's.
    _close_l2(y1, y32, 1e-2)
    for a, b, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g0), jax.tree.leaves(g32)):
        _close_l2(a, c, 1e-2)
        a, b, c = (np.asarray(v, np.float32) for v in (a, b, c))
        assert np.linalg.norm(a - c) <= 1.2 * np.linalg.norm(b - c) + 1e-3 * np.linalg.norm(c)


def test_statistics_have_no_gradient():
    x, scale, bias, _, _ = _inputs(SHAPE, jnp.float32)
    grads = jax.grad(
        lambda x: jnp.sum(fused_bn.fused_bn(x, scale, bias, impl="jnp")[1]), allow_int=True
    )(x)
    assert not np.any(grads)


@pytest.mark.parametrize("impl", fused_bn.IMPLS)
def test_module_has_batchnorms_variables_and_updates(impl):
    x, _, _, res, _ = _inputs((4, 3, 3, 16), jnp.bfloat16, seed=1)
    kw = dict(momentum=0.9, epsilon=1e-5, dtype=jnp.bfloat16)
    ref = nn.BatchNorm(scale_init=nn.initializers.zeros, **kw)
    new = fused_bn.FusedBatchNorm(scale_init=nn.initializers.zeros, impl=impl, **kw)
    v_ref = ref.init(jax.random.key(0), x, use_running_average=False)
    v_new = new.init(jax.random.key(0), x, use_running_average=False)
    # The same tree: checkpoints and parameter counts carry over.
    assert jax.tree.structure(v_new) == jax.tree.structure(v_ref)
    jax.tree.map(np.testing.assert_array_equal, v_new, v_ref)
    variables = jax.tree.map(lambda v: v + 0.3, v_ref)  # non-trivial scale and statistics

    @jax.jit
    def run(variables, x, res):
        y0, s0 = ref.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        y0 = nn.relu(y0 + res)
        y1, s1 = new.apply(variables, x, res, True, False, mutable=["batch_stats"])
        e0 = nn.relu(ref.apply(variables, x, use_running_average=True) + res)
        e1 = new.apply(variables, x, res, True, use_running_average=True)
        return (y0, s0), (y1, s1), (e0, e1)

    (y0, s0), (y1, s1), (e0, e1) = run(variables, x, res)
    _close_l2(y1, y0, 1e-2)
    jax.tree.map(lambda a, b: _close(a, b, 1e-6), s1, s0)
    np.testing.assert_array_equal(e1, e0)  # evaluation: nn.BatchNorm's ops


@pytest.mark.parametrize("variant", ["bn=pallas", "bn=fused_jnp"])
def test_resnet_with_the_fused_bn_swapped_in(variant):
    model = models.get("resnet_tiny", num_channels=1)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1)) * 2 + 1
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
    variables["params"] = jax.tree.map(lambda p: p + 0.1, variables["params"])  # gamma != 0

    def step(variables, x):
        def loss(params):
            feats, state = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(jnp.square(feats)), (feats, state["batch_stats"])

        return jax.grad(loss, has_aux=True)(variables["params"])

    ref = jax.jit(step)(variables, x)
    with ab_step.swapped(ab_step.SWAPS[variant]):
        new = jax.jit(step)(variables, x)
        init = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert jax.tree.structure(init) == jax.tree.structure(variables)
    assert jax.tree.structure(new) == jax.tree.structure(ref)
    jax.tree.map(lambda a, b: _close(a, b, 2e-4), new, ref)


def test_swap_restores_the_library():
    before = layers.batch_norm
    with ab_step.swapped(ab_step.SWAPS["bn=pallas"]):
        bn = layers.batch_norm(True, jnp.float32, None)
        assert bn.func is fused_bn.FusedBatchNorm and bn.keywords["impl"] == "pallas"
    assert layers.batch_norm is before
    assert layers.batch_norm(True, jnp.float32, None).func is nn.BatchNorm


@pytest.mark.parametrize("check_vma", [True, False])
@pytest.mark.parametrize("synced", [True, False])
def test_synced_statistics_under_shard_map_equal_the_global_batch(check_vma, synced):
    """8 CPU devices (tests/conftest.py), one example each, with different statistics.
    Pallas kernels run interpreted; under check_vma=True the interpreter cannot run and
    fused_bn uses the jnp kernels (the same functions)."""
    devices = jax.devices("cpu")
    assert len(devices) == 8
    with jax.default_device(devices[0]):  # on a GPU host too
        _shard_map_case(sharding.make_mesh(devices), check_vma, synced)


def _shard_map_case(mesh, check_vma, synced):
    axis = sharding.AXIS if synced else None
    x, scale, bias, res, g = _inputs((8, 3, 5, 24), jnp.float32, seed=2)
    x = x * jnp.arange(1.0, 9.0)[:, None, None, None]

    def loss(x, scale, bias, res, g, axis):
        y, mean, var = fused_bn.fused_bn(
            x, scale, bias, res, relu=True, axis_name=axis, impl="pallas", interpret=True
        )
        return jnp.sum(y * g), (y, mean, var)

    grad = jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)

    def per_device(x, scale, bias, res, g):
        grads, aux = grad(x, scale, bias, res, g, axis)
        if not check_vma:  # per-device parameter gradients (as autodiff gives there)
            grads = (grads[0], *jax.lax.psum(grads[1:3], sharding.AXIS), grads[3])
        return grads, aux

    stats = P() if synced else P(sharding.AXIS)
    f = jax.jit(
        jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(P(sharding.AXIS), P(), P(), P(sharding.AXIS), P(sharding.AXIS)),
            out_specs=(
                (P(sharding.AXIS), P(), P(), P(sharding.AXIS)),
                (P(sharding.AXIS), stats, stats),
            ),
            check_vma=check_vma,
        )
    )
    grads, (y, mean, var) = f(x, scale, bias, res, g)
    if synced:  # the global batch on one device
        g_ref, (y_ref, m_ref, v_ref) = jax.jit(grad, static_argnums=5)(x, scale, bias, res, g, None)
    else:  # each device's example alone; parameter gradients summed
        parts = [
            jax.jit(grad, static_argnums=5)(
                x[i : i + 1], scale, bias, res[i : i + 1], g[i : i + 1], None
            )
            for i in range(8)
        ]
        cat = lambda *a: jnp.concatenate(a)
        gs = [p[0] for p in parts]
        g_ref = (
            cat(*[q[0] for q in gs]),
            sum(q[1] for q in gs),
            sum(q[2] for q in gs),
            cat(*[q[3] for q in gs]),
        )
        y_ref = cat(*[p[1][0] for p in parts])
        m_ref = cat(*[p[1][1] for p in parts])
        v_ref = cat(*[p[1][2] for p in parts])
    for a, b in zip((y, mean, var, *grads), (y_ref, m_ref, v_ref, *g_ref)):
        _close(a, b, 1e-5)
    if synced:  # and they are nn.BatchNorm's
        _, fm, fv = _flax_bn(x, scale, bias, res, True)
        _close(mean, fm, 1e-5)
        _close(var, fv, 1e-5)


@pytest.mark.parametrize("synced", [True, False])
@pytest.mark.parametrize("tiles", ["default", "looping"])
def test_pallas_path_lowers_to_triton_for_gpus(synced, tiles, monkeypatch):
    """The non-interpret path's Pallas -> Triton lowering (done by JAX, no GPU needed),
    inside shard_map(check_vma=True) as in the train step: two kernels forward, two
    backward. Compiling the Triton IR (XLA, on the GPU) is not checked here."""
    if tiles == "looping":  # [2, 128] tiles, 98 per reduction program
        monkeypatch.setattr(fused_bn, "TILE", 256)
        monkeypatch.setattr(fused_bn, "REDUCE_PROGRAMS", 2)
    verified = _verify_triton_modules(monkeypatch)
    mesh = sharding.make_mesh(jax.devices("cpu"))
    axis = sharding.AXIS if synced else None

    def per_device(x, scale, bias, res):
        def loss(x, scale, bias, res):
            y, mean, var = fused_bn.fused_bn(
                x, scale, bias, res, relu=True, axis_name=axis, interpret=False
            )
            return jnp.sum(y.astype(jnp.float32)), (mean, var)

        return jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(x, scale, bias, res)

    stats = P() if synced else P(sharding.AXIS)
    f = jax.jit(
        jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(P(sharding.AXIS), P(), P(), P(sharding.AXIS)),
            out_specs=((P(sharding.AXIS), P(), P(), P(sharding.AXIS)), (stats, stats)),
            check_vma=True,
        )
    )
    batch = jax.sharding.NamedSharding(mesh, P(sharding.AXIS))
    repl = jax.sharding.NamedSharding(mesh, P())
    # 8 x 7 x 7 rows: partial row tiles; 72 channels: a partial channel block.
    x = jax.ShapeDtypeStruct((64, 7, 7, 72), jnp.bfloat16, sharding=batch)
    v = jax.ShapeDtypeStruct((72,), jnp.float32, sharding=repl)
    exported = jax.export.export(
        f,
        platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(x, v, v, x)
    text = exported.mlir_module()
    assert text.count("__gpu$xla.gpu.triton") == 4
    assert verified is None or all(verified)  # (empty where JAX reused a lowering)
    assert text.count('name = "fused_bn_reduce"') == 2 and text.count('name = "fused_bn_map"') == 2


def _verify_triton_modules(monkeypatch):
    """Has JAX's Triton lowering also run the MLIR verifier on each kernel (types of
    masked loads and stores, ...): a list that fills with the results, or None where this
    JAX keeps the lowering elsewhere (internal API)."""
    try:
        from jax._src.pallas.triton import pallas_call_registration as reg

        lower = reg.lowering.lower_jaxpr_to_triton_module
    except (ImportError, AttributeError):
        return None
    results = []

    def lower_and_verify(*args, **kwargs):
        out = lower(*args, **kwargs)
        results.append(out.module.operation.verify())
        return out

    monkeypatch.setattr(reg.lowering, "lower_jaxpr_to_triton_module", lower_and_verify)
    return results


@pytest.mark.skipif(not ON_GPU, reason="needs a GPU (compiled Triton kernels)")
@pytest.mark.parametrize("shape", [(64, 56, 56, 64), (64, 7, 7, 2048), (32, 14, 14, 72)])
def test_compiled_kernels_at_resnet_shapes(shape):
    x, scale, bias, res, g = _inputs(shape, jnp.bfloat16, seed=3)

    @jax.jit
    def run(x, scale, bias, res, g):
        out = []
        for impl in fused_bn.IMPLS:
            f = lambda *a, impl=impl: fused_bn.fused_bn(*a, relu=True, impl=impl)[0]
            y, vjp = jax.vjp(f, x, scale, bias, res)
            out.append((y, vjp(g)))
        return out

    (y0, g0), (y1, g1) = run(x, scale, bias, res, g)
    # pallas vs jnp: the same math, the sums in another order
    _close_l2(y0, y1, 1e-2)
    jax.tree.map(lambda a, b: _close_l2(a, b, 1e-2), g0, g1)
    # and float32 nn.BatchNorm on the same values
    f32 = [v.astype(jnp.float32) for v in (x, scale, bias, res, g)]
    ref = jax.jit(lambda x, s, b, r, g: jax.vjp(lambda *a: _flax_bn(*a, True)[0], x, s, b, r)[1](g))
    jax.tree.map(lambda a, b: _close_l2(a, b, 1e-2), g0, ref(*f32))
