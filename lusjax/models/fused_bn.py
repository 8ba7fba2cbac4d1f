"""Training-mode BatchNorm (+ReLU) (+residual add) as Pallas kernels (issue #24), an A/B.

Not used by default: `benchmarks/ab_step.py` swaps it into the real train step
(`bn=pallas`, and `bn=fused_jnp` for the same math without Pallas) by replacing
`layers.batch_norm`; ResNet routes every BN tail through `layers.bn_act`, which hands
the residual and the ReLU to a module that fuses them (`FusedBatchNorm.fuses_act`).

    # on the GPU host (one device): the A/B inside the real step
    python benchmarks/ab_step.py --variants lusjax,bn=fused_jnp,bn=pallas \
        --config configs/simclr_resnet.py:r18 --batch-size 256
    python benchmarks/ab_step.py --variants lusjax,bn=fused_jnp,bn=pallas \
        --config configs/simclr_resnet.py:r50 --batch-size 256
    # correctness of the compiled (non-interpret) kernels on the GPU; the shard_map
    # test runs on 8 forced CPU devices in interpret mode
    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cuda,cpu \
        python -m pytest -q tests/test_fused_bn.py
    # per-layer check and timing at ResNet shapes (errors vs nn.BatchNorm, fwd+bwd ms)
    python benchmarks/fused_bn_layers.py

Math (per channel; x viewed as [R = N*H*W, C], M = R x devices of `axis_name`):
  forward   pass 1  s1 = sum x, s2 = sum x^2 (float32), psum'ed over `axis_name`;
                    mean = s1/M, var = max(0, s2/M - mean^2) (flax's fast variance,
                    biased, as nn.BatchNorm), a = scale * rsqrt(var + eps)
            pass 2  y = relu((x - mean) * a + bias (+ residual)), written once
  backward  pass 1  g = dy * (y > 0) (the ReLU mask from the saved output, which the
                    next layer keeps anyway); t1 = sum g, t2 = sum g * (x - mean),
                    psum'ed; dbias = t1, dscale = t2 * rsqrt(var + eps)
            pass 2  dx = a*g + p*(x - mean) + q with p = -a*t2/(M*(var+eps)),
                    q = -a*t1/M; d residual = g
The batch statistics are outputs without gradient (stop_gradient), as they only feed
the running averages.

Kernels (`impl="pallas"`): Triton-style `pl.pallas_call`s over the [R, C] view with
BlockSpecs. Tiles are [BR, BC] with BC = min(128, next_pow2(C)) channels and
BR = TILE // BC rows (powers of two; TILE = 4096 elements, `LUSJAX_FUSED_BN_TILE`).
  reductions (forward pass 1, backward pass 1): grid (G, C/BC); program (i, j) loops
    over `steps` row tiles of its [steps*BR, BC] block, accumulating [BR, BC] float32
    tiles, and writes one row of float32 partial sums [G, C] (summed by XLA after;
    deterministic, no atomics). `steps`: about 2048 programs (G x C/BC) in all, and a
    divisor of the row tiles near that where there is one (no masks then).
  elementwise (forward pass 2, backward pass 2): grid (cdiv(R, BR), C/BC), one tile
    per program; per-channel vectors are [1, C] float32 inputs with (1, BC) blocks.
Rows (and channels, when C is not a multiple of BC) past the end are masked in
`plgpu.load/store` (interpret mode pads partial blocks with NaN, so a missing mask
shows in the CPU tests). The kernels compile with `interpret=False` on GPUs and run
interpreted elsewhere (`interpret=None`). `impl="jnp"` evaluates the same per-tile
functions with jnp over the whole array (XLA fuses them), with the same custom_vjp.

Under `shard_map(check_vma=True)` (the train step) the kernels' outputs are typed like
their input x, and the custom_vjp's cotangents are brought to their primal's varying
axes (psum over axes where only the cotangent varies: the transpose of the implicit
broadcast); with check_vma=False the parameter gradients are per device, as autodiff
through nn.BatchNorm gives there. Pallas' interpreter cannot run inside
shard_map(check_vma=True) (jax 0.10), so there, in interpret mode only, `impl="pallas"`
runs the jnp kernels.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lusjax.models import layers

IMPLS = ("pallas", "jnp")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Tile size (elements, a power of two), the reductions' program count target and
# Triton's warps per program: from the environment (to sweep them on a GPU without
# editing), read when a kernel is traced.
TILE = _env_int("LUSJAX_FUSED_BN_TILE", 4096)
REDUCE_PROGRAMS = _env_int("LUSJAX_FUSED_BN_PROGRAMS", 2048)
NUM_WARPS = _env_int("LUSJAX_FUSED_BN_WARPS", 4)
MAX_CHANNEL_BLOCK = 128


class _Cfg(NamedTuple):
    """The static part of one fused BN call (hashable: custom_vjp's nondiff argument)."""

    relu: bool
    eps: float
    axis_name: Any
    impl: str
    interpret: bool
    out_dtype: Any


# ----------------------------------------------------------------------------
# Shard_map typing helpers (varying mesh axes of a value, jax >= 0.10 or older).
# ----------------------------------------------------------------------------


def _varying(x) -> frozenset:
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))


def _struct(shape, dtype, like) -> jax.ShapeDtypeStruct:
    """An output type for pallas_call, varying over the mesh axes `like` varies over."""
    aval = jax.typeof(like)
    if hasattr(aval, "manual_axis_type"):
        return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=aval.manual_axis_type)
    if hasattr(aval, "vma"):
        return jax.ShapeDtypeStruct(shape, dtype, vma=aval.vma)
    return jax.ShapeDtypeStruct(shape, dtype)


def _vary(x, axes: frozenset):
    """x cast to vary over `axes` too (a no-op at run time)."""
    if missing := tuple(sorted(axes - _varying(x))):
        if hasattr(jax.lax, "pcast"):
            return jax.lax.pcast(x, missing, to="varying")
        return jax.lax.pvary(x, missing)  # older jax
    return x


def _fit_cotangent(ct, primal):
    """Brings a cotangent to its primal's varying axes: psum where only the cotangent
    varies (the transpose of the broadcast autodiff would have inserted), pcast where
    only the primal does."""
    have, want = _varying(ct), _varying(primal)
    if extra := tuple(sorted(have - want)):
        ct = jax.lax.psum(ct, extra)
    return _vary(ct, want)


# ----------------------------------------------------------------------------
# The four passes as per-tile functions (float32 tiles [BR, BC], vectors [1, BC]).
# ----------------------------------------------------------------------------


def _stats_fn(x):
    return x, x * x


def _apply_fn(relu, x, *rest):
    *res, mean, a, b = rest
    u = (x - mean) * a + b
    if res:
        u = u + res[0]
    return (jnp.maximum(u, 0.0) if relu else u,)


def _grad_in(relu, x, *rest):
    """g = dy masked by the ReLU (from the saved output y)."""
    if relu:
        y, dy, *vecs = rest
        return jnp.where(y > 0, dy, 0.0), vecs
    dy, *vecs = rest
    return dy, vecs


def _bwd_reduce_fn(relu, x, *rest):
    g, (mean,) = _grad_in(relu, x, *rest)
    return g, g * (x - mean)


def _bwd_map_fn(relu, with_res, x, *rest):
    g, (mean, a, p, q) = _grad_in(relu, x, *rest)
    dx = a * g + p * (x - mean) + q
    return (dx, g) if with_res else (dx,)


# ----------------------------------------------------------------------------
# Pallas: one reduction and one elementwise pallas_call over [R, C] views.
# ----------------------------------------------------------------------------


def _tiles(rows: int, channels: int) -> tuple[int, int]:
    bc = min(MAX_CHANNEL_BLOCK, pl.next_power_of_2(channels), TILE)
    br = max(1, min(TILE // bc, pl.next_power_of_2(rows)))
    return br, bc


def _steps(rows: int, br: int, n_cb: int) -> int:
    """Row tiles per reduction program: about REDUCE_PROGRAMS programs in all, and where
    the rows are whole tiles, a divisor of their count near that (no row masks)."""
    n_tiles = pl.cdiv(rows, br)
    target = max(1, min(n_tiles, n_tiles * n_cb // REDUCE_PROGRAMS))
    if rows % br == 0:
        d = max(d for d in range(1, target + 1) if n_tiles % d == 0)
        if 2 * d >= target:
            return d
    return target


def _compiler_params():
    return plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=2)


def _masks(rows, channels, br, bc, row0, j, row_period):
    """The [br, bc] in-bounds mask of a tile starting at row `row0`, channel block `j`,
    and the channels' [bc] mask (None where every tile is in bounds: rows a multiple of
    the rows per program, `row_period`, and channels of the channel block)."""
    row_ok = None if rows % row_period == 0 else (row0 + jnp.arange(br) < rows)
    col_ok = None if channels % bc == 0 else (j * bc + jnp.arange(bc) < channels)
    if row_ok is None and col_ok is None:
        return None, None
    if row_ok is None:
        mask = jnp.broadcast_to(col_ok[None, :], (br, bc))
    elif col_ok is None:
        mask = jnp.broadcast_to(row_ok[:, None], (br, bc))
    else:
        mask = row_ok[:, None] & col_ok[None, :]
    return mask, col_ok


def _load(ref, mask):
    """A tile, zeros where `mask` is False (None: all in bounds)."""
    return ref[...] if mask is None else plgpu.load(ref, mask=mask, other=0.0)


def _store(ref, value, mask):
    if mask is None:
        ref[...] = value
    else:
        plgpu.store(ref, value, mask=mask)


def _load_vecs(refs, col_ok):
    mask = None if col_ok is None else col_ok[None, :]
    return [_load(r, mask) for r in refs]


def _pallas_reduce(fn, arrays, vecs, n_out, interpret):
    """[sum over rows of fn(*tiles, *vecs)] for each of fn's `n_out` outputs: float32 [C]."""
    rows, channels = arrays[0].shape
    br, bc = _tiles(rows, channels)
    n_cb = pl.cdiv(channels, bc)
    rp = br * _steps(rows, br, n_cb)
    grid = (pl.cdiv(rows, rp), n_cb)
    n_in = len(arrays)

    def kernel(*refs):
        in_refs, vec_refs, out_refs = refs[:n_in], refs[n_in:-n_out], refs[-n_out:]
        i, j = pl.program_id(0), pl.program_id(1)
        _, col_ok = _masks(rows, channels, br, bc, 0, j, 1)
        vs = _load_vecs(vec_refs, col_ok)

        def body(t, accs):
            mask, _ = _masks(rows, channels, br, bc, i * rp + t * br, j, rp)
            tiles = [_load(r.at[pl.ds(t * br, br), :], mask).astype(jnp.float32) for r in in_refs]
            vals = fn(*tiles, *vs)
            if mask is not None:
                vals = [jnp.where(mask, v, 0.0) for v in vals]
            return tuple(acc + v for acc, v in zip(accs, vals))

        zeros = tuple(jnp.zeros((br, bc), jnp.float32) for _ in range(n_out))
        steps = rp // br
        accs = jax.lax.fori_loop(0, steps, body, zeros) if steps > 1 else body(0, zeros)
        out_mask = None if col_ok is None else col_ok[None, :]
        for o, acc in zip(out_refs, accs):
            _store(o, jnp.sum(acc, axis=0, keepdims=True), out_mask)

    partials = pl.pallas_call(
        kernel,
        out_shape=[_struct((grid[0], channels), jnp.float32, arrays[0])] * n_out,
        grid=grid,
        in_specs=[pl.BlockSpec((rp, bc), lambda i, j: (i, j))] * n_in
        + [pl.BlockSpec((1, bc), lambda i, j: (0, j))] * len(vecs),
        out_specs=[pl.BlockSpec((1, bc), lambda i, j: (i, j))] * n_out,
        compiler_params=_compiler_params(),
        interpret=interpret,
        name="fused_bn_reduce",
    )(*arrays, *vecs)
    return [jnp.sum(p, axis=0) for p in partials]


def _pallas_map(fn, arrays, vecs, out_dtypes, interpret):
    """fn(*tiles, *vecs) elementwise over [R, C], one output array per dtype."""
    rows, channels = arrays[0].shape
    br, bc = _tiles(rows, channels)
    grid = (pl.cdiv(rows, br), pl.cdiv(channels, bc))
    n_in, n_out = len(arrays), len(out_dtypes)

    def kernel(*refs):
        in_refs, vec_refs, out_refs = refs[:n_in], refs[n_in:-n_out], refs[-n_out:]
        i, j = pl.program_id(0), pl.program_id(1)
        mask, col_ok = _masks(rows, channels, br, bc, i * br, j, br)
        tiles = [_load(r, mask).astype(jnp.float32) for r in in_refs]
        vals = fn(*tiles, *_load_vecs(vec_refs, col_ok))
        for o, v in zip(out_refs, vals):
            _store(o, v.astype(o.dtype), mask)

    return pl.pallas_call(
        kernel,
        out_shape=[_struct((rows, channels), d, arrays[0]) for d in out_dtypes],
        grid=grid,
        in_specs=[pl.BlockSpec((br, bc), lambda i, j: (i, j))] * n_in
        + [pl.BlockSpec((1, bc), lambda i, j: (0, j))] * len(vecs),
        out_specs=[pl.BlockSpec((br, bc), lambda i, j: (i, j))] * n_out,
        compiler_params=_compiler_params(),
        interpret=interpret,
        name="fused_bn_map",
    )(*arrays, *vecs)


def _jnp_reduce(fn, arrays, vecs, n_out, interpret):
    del n_out, interpret
    vals = fn(*(a.astype(jnp.float32) for a in arrays), *vecs)
    return [jnp.sum(v, axis=0) for v in vals]


def _jnp_map(fn, arrays, vecs, out_dtypes, interpret):
    del interpret
    vals = fn(*(a.astype(jnp.float32) for a in arrays), *vecs)
    return [v.astype(d) for v, d in zip(vals, out_dtypes)]


_BACKENDS = {"pallas": (_pallas_reduce, _pallas_map), "jnp": (_jnp_reduce, _jnp_map)}


# ----------------------------------------------------------------------------
# The custom_vjp over [R, C] views.
# ----------------------------------------------------------------------------


def _psum(x, axis_name):
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def _count(rows: int, axis_name) -> int:
    return rows if axis_name is None else rows * jax.lax.axis_size(axis_name)


def _forward(cfg: _Cfg, x, scale, bias, res):
    reduce_, map_ = _BACKENDS[cfg.impl]
    rows = x.shape[0]
    s1, s2 = reduce_(_stats_fn, [x], [], 2, cfg.interpret)
    s = _psum(jnp.stack([s1, s2]), cfg.axis_name)
    m = _count(rows, cfg.axis_name)
    mean = s[0] / m
    var = jnp.maximum(0.0, s[1] / m - mean * mean)
    inv = jax.lax.rsqrt(var + cfg.eps)
    a = scale.astype(jnp.float32) * inv
    arrays = [x] if res is None else [x, res]
    vecs = [v[None, :] for v in (mean, a, bias.astype(jnp.float32))]
    (y,) = map_(
        functools.partial(_apply_fn, cfg.relu), arrays, vecs, [cfg.out_dtype], cfg.interpret
    )
    return (y, mean, var), (x, y if cfg.relu else None, res, scale, bias, mean, inv, a)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(cfg: _Cfg, x, scale, bias, res):
    return _forward(cfg, x, scale, bias, res)[0]


def _fused_bwd(cfg: _Cfg, saved, cts):
    x, y, res, scale, bias, mean, inv, a = saved
    dy = cts[0]  # the statistics' cotangents are zero (stop_gradient in fused_bn)
    reduce_, map_ = _BACKENDS[cfg.impl]
    arrays = [x, dy] if y is None else [x, y, dy]
    t1, t2 = reduce_(
        functools.partial(_bwd_reduce_fn, cfg.relu), arrays, [mean[None, :]], 2, cfg.interpret
    )
    t_local = jnp.stack([t1, t2])
    t = _psum(t_local, cfg.axis_name)
    m = _count(x.shape[0], cfg.axis_name)
    p = -a * t[1] * (inv * inv) / m
    q = -a * t[0] / m
    out_dtypes = [x.dtype] if res is None else [x.dtype, res.dtype]
    grads = map_(
        functools.partial(_bwd_map_fn, cfg.relu, res is not None),
        arrays,
        [v[None, :] for v in (mean, a, p, q)],
        out_dtypes,
        cfg.interpret,
    )
    dx = _fit_cotangent(grads[0], x)
    dres = None if res is None else _fit_cotangent(grads[1], res)
    if cfg.axis_name is not None and cfg.axis_name not in _varying(x):
        # shard_map(check_vma=False): per-device parameter gradients, as autodiff
        # through nn.BatchNorm gives there (the caller sums them).
        t = t_local
    dscale = _fit_cotangent((t[1] * inv).astype(scale.dtype), scale)
    dbias = _fit_cotangent(t[0].astype(bias.dtype), bias)
    return dx, dscale, dbias, dres


_fused.defvjp(_forward, _fused_bwd)


def fused_bn(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    residual: jax.Array | None = None,
    *,
    relu: bool = False,
    eps: float = layers.BN_EPSILON,
    axis_name: Any = None,
    out_dtype: Any = None,
    impl: str = "pallas",
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BN over all axes but the last, then `+ residual`, then ReLU.

    x: [..., C] (bf16 or f32); scale, bias: [C]; residual: like x or None.
    Returns (y [..., C] in `out_dtype` (default x's), batch mean [C], biased batch
    variance [C]); the statistics are float32 and without gradient. `axis_name`: sum
    the statistics (and the backward's reductions) over that mesh axis (synced BN,
    inside shard_map). `interpret=None`: compiled Pallas on GPUs, interpreted elsewhere.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown fused BN impl {impl!r}: {', '.join(IMPLS)}")
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    if impl == "pallas" and interpret and _varying(x):
        # Pallas' interpreter cannot run inside shard_map(check_vma=True) (jax 0.10: it
        # evaluates the kernel, traced without mesh axes, on device-varying blocks next
        # to invariant constants); the same per-tile functions then run as jnp.
        impl = "jnp"
    shape, channels = x.shape, x.shape[-1]
    rows = math.prod(shape[:-1])
    cfg = _Cfg(
        relu=bool(relu),
        eps=float(eps),
        axis_name=axis_name,
        impl=impl,
        interpret=bool(interpret),
        out_dtype=jnp.dtype(out_dtype or x.dtype),
    )
    res = None if residual is None else residual.reshape(rows, channels)
    y, mean, var = _fused(cfg, x.reshape(rows, channels), scale, bias, res)
    return y.reshape(shape), jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


# ----------------------------------------------------------------------------
# The flax module: nn.BatchNorm's variables, optionally fusing the residual and ReLU.
# ----------------------------------------------------------------------------


class FusedBatchNorm(nn.Module):
    """`nn.BatchNorm` over the last axis (the same params scale/bias and batch_stats
    mean/var, the same momentum update and biased variance) computed by `fused_bn` in
    training mode; `__call__(x, residual=None, relu=False)` also fuses `+ residual` and
    the ReLU. Evaluation mode (use_running_average) is nn.BatchNorm's formula."""

    fuses_act = True  # layers.bn_act hands it the residual and the ReLU

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros
    axis_name: str | None = None
    impl: str = "pallas"
    interpret: bool | None = None

    @nn.compact
    def __call__(self, x, residual=None, relu: bool = False, use_running_average=None):
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        out_dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)

        if use_running_average:  # nn.BatchNorm's ops, in its order
            y = x - ra_mean.value
            mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
            y = (y * mul + bias).astype(out_dtype)
            if residual is not None:
                y = y + residual
            return nn.relu(y) if relu else y

        init = self.is_initializing()
        y, mean, var = fused_bn(
            x,
            scale,
            bias,
            residual,
            relu=relu,
            eps=self.epsilon,
            axis_name=None if init else self.axis_name,
            out_dtype=out_dtype,
            impl=self.impl,
            interpret=self.interpret,
        )
        if not init:
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


def batch_norm(
    train: bool,
    dtype: Any,
    axis_name: str | None,
    epsilon: float = layers.BN_EPSILON,
    *,
    impl: str = "pallas",
) -> functools.partial:
    """`layers.batch_norm`'s constructor for `FusedBatchNorm` (what ab_step.py swaps in)."""
    return functools.partial(
        FusedBatchNorm,
        use_running_average=not train,
        momentum=layers.BN_MOMENTUM,
        epsilon=epsilon,
        dtype=dtype,
        axis_name=axis_name,
        impl=impl,
    )
