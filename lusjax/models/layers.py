"""Building blocks shared by the backbone families (NHWC, flax.linen).

Conventions, chosen to match torchvision so that parameter counts (and, later,
ported weights) line up: convolutions without bias and with explicit symmetric
padding `(k - 1) // 2` (PyTorch's, not XLA's "SAME", which pads stride-2 convs
asymmetrically), Kaiming-normal fan-out initialisation, BatchNorm with
momentum 0.9 (PyTorch's 0.1) and eps 1e-5 (MobileNetV3 passes its own 1e-3).

Precision: parameters are float32; convolutions and BatchNorm compute in the
module's `dtype` (flax casts the kernel per call); BatchNorm statistics are
reduced in float32 (`force_float32_reductions`, the flax default), so a bf16
model keeps f32 running statistics. Nothing here casts activations back and
forth, so XLA can fuse conv → BN → activation.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lusjax.errors import UserError

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# torchvision: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def compute_dtype(dtype: Any) -> jnp.dtype:
    """`"bfloat16"`, `"float32"`, `jnp.bfloat16`, ... -> a numpy dtype object."""
    try:
        return jnp.dtype(dtype)
    except TypeError as e:
        raise UserError(f"unknown model dtype {dtype!r}; use 'bfloat16' or 'float32'") from e


def same_padding(kernel_size: int, dilation: int = 1) -> tuple[tuple[int, int], ...]:
    """PyTorch-style symmetric padding for an odd `kernel_size` (2-D)."""
    p = (kernel_size - 1) // 2 * dilation
    return ((p, p), (p, p))


def conv(
    features: int,
    kernel_size: int,
    strides: int = 1,
    *,
    groups: int = 1,
    dtype: Any,
    use_bias: bool = False,
    name: str | None = None,
) -> nn.Conv:
    """A square conv with torchvision's padding and init (bias-free by default)."""
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=same_padding(kernel_size),
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=conv_init,
        name=name,
    )


def batch_norm(
    train: bool, dtype: Any, axis_name: str | None, epsilon: float = BN_EPSILON
) -> functools.partial:
    """A BatchNorm constructor; `axis_name` set = statistics synced over that mesh axis.

    Call the result with `name=` and optionally `scale_init=` (zeros for the
    last BN of a residual branch).
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        dtype=dtype,
        axis_name=axis_name,
    )


def bn_act(norm: nn.Module, x: jnp.ndarray, residual=None, relu: bool = True) -> jnp.ndarray:
    """`relu(norm(x) + residual)` (residual and ReLU optional): ResNet's BN tails.

    One place, so that `benchmarks/ab_step.py` can swap in a BatchNorm that fuses the
    add and the ReLU (`lusjax.models.fused_bn`, whose modules set `fuses_act`).
    """
    if getattr(norm, "fuses_act", False):
        return norm(x, residual=residual, relu=relu)
    y = norm(x)
    if residual is not None:
        y = y + residual
    return nn.relu(y) if relu else y


def check_channels(x: jnp.ndarray, num_channels: int, model: str) -> None:
    """The input must be NHWC with the configured channel count."""
    if x.ndim != 4 or x.shape[-1] != num_channels:
        raise UserError(
            f"{model} expects input [B, H, W, {num_channels}] (num_channels={num_channels}),"
            f" got shape {tuple(x.shape)}"
        )


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """[B, H, W, C] -> [B, C] float32 (accumulated in float32; one fused reduce)."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)


def max_pool_3x3_s2(x: jnp.ndarray) -> jnp.ndarray:
    """torchvision ResNet's stem max-pool (3x3, stride 2, padding 1), NHWC.

    On GPUs `argmax_max_pool_3x3_s2` (same values and gradients): in the SimCLR
    step on an H200 its first form was 5.1% (ResNet-18) and 2.8% (ResNet-50) faster
    than `nn.max_pool`, whose select-and-scatter gradient it replaces, and its parity
    form another 6.1% / 1.7% on an H100. Elsewhere `nn.max_pool`: on CPUs the first
    argmax form was ~3x slower, and neither was measured on TPUs. A max of nine
    strided slices with autodiff's gradient was 6.8% slower on the GPU.
    `benchmarks/ab_step.py` times the variants. (On GPUs ResNet's stem pools its
    output in 2x2 blocks instead, `argmax_max_pool_3x3_s2_blocks`: `imagenet_stem`.)
    """
    if jax.default_backend() == "gpu":
        return argmax_max_pool_3x3_s2(x)
    return reduce_window_max_pool_3x3_s2(x)


def reduce_window_max_pool_3x3_s2(x: jnp.ndarray) -> jnp.ndarray:
    """The 3x3/2 max-pool (padding 1) as `nn.max_pool`: XLA's reduce-window, with a
    select-and-scatter gradient."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _parity_planes(x):
    """x padded by one (-inf: never a window's maximum) on top/left and to an even
    2(Ho+1) x 2(Wo+1), viewed as [B, Ho+1, 2, Wo+1, 2, C]: row 2a+p of the padded input
    is [:, a, p]."""
    b, h, w, c = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = jnp.pad(
        x, ((0, 0), (1, 2 * ho + 1 - h), (1, 2 * wo + 1 - w), (0, 0)), constant_values=-jnp.inf
    )
    return xp.reshape(b, ho + 1, 2, wo + 1, 2, c), ho, wo


def _window_max(win):
    """The max of a pool window's 9 taps and the int8 index of the first tap (row-major)
    that holds it: XLA select-and-scatter's choice."""
    out = win[0]
    for t in win[1:]:
        out = jnp.maximum(out, t)
    idx = jnp.full(out.shape, 8, jnp.int8)
    for k in range(7, -1, -1):  # the first k whose value is the maximum wins
        idx = jnp.where(win[k] == out, jnp.int8(k), idx)
    return out, idx


def _grad_planes(tap, taps):
    """For rows parity p: [B, H, W, 2 (column parity q), C] gradient planes, plane (p, q)
    the sum of `tap(di, dj)` over the window taps that land on it, taps[p] x taps[q]."""
    return [
        jnp.stack([sum(tap(di, dj) for di in taps[p] for dj in taps[q]) for q in (0, 1)], 3)
        for p in (0, 1)
    ]


@jax.custom_vjp
def argmax_max_pool_3x3_s2(x):
    """3x3/2 max-pool (padding 1) with a gradient XLA can fuse.

    Values as `nn.max_pool`; the gradient goes to the first maximum of each window in
    row-major order, as XLA's select-and-scatter (which re-reads the input and was 8%
    of a ResNet-18 step on an H200). The forward keeps each window's int8 argmax. Both
    passes work on the 2x2 parity planes of the padded input: window (o, d) reads
    padded row 2o + d, i.e. plane row o + d // 2 of parity d % 2, so the forward takes
    nine contiguous slices and the backward builds each parity plane from the (at most
    four) window taps that land on it, shifted by at most one row/column. An earlier
    backward placed the gradient with nine interior-padded `lax.pad`s, i.e. nine
    selects per *input* position; this form was 6.1% (ResNet-18) and 1.7% (ResNet-50)
    faster in the SimCLR step on an H100 (README, issue #24).
    """
    return _argmax_fwd(x)[0]


def _argmax_fwd(x):
    xr, ho, wo = _parity_planes(x)
    win = [
        xr[:, di // 2 : di // 2 + ho, di % 2, dj // 2 : dj // 2 + wo, dj % 2, :]
        for di in range(3)
        for dj in range(3)
    ]
    out, idx = _window_max(win)
    return out, (idx, x.shape)


def _argmax_bwd(res, g):
    idx, (b, h, w, c) = res
    ho, wo = g.shape[1:3]
    zero = jnp.zeros((), g.dtype)

    def tap(di, dj):  # window tap (di, dj) on its parity plane: a tap 2 lands a row later
        t = jnp.where(idx == 3 * di + dj, g, zero)
        return jnp.pad(t, ((0, 0), (di // 2, 1 - di // 2), (dj // 2, 1 - dj // 2), (0, 0)))

    grad = jnp.stack(_grad_planes(tap, {0: (0, 2), 1: (1,)}), 2).reshape(
        b, 2 * ho + 2, 2 * wo + 2, c
    )
    return (grad[:, 1 : h + 1, 1 : w + 1, :],)


argmax_max_pool_3x3_s2.defvjp(_argmax_fwd, _argmax_bwd)


# Window tap d (0, 1, 2) of the 3x3/2 pool (padding 1) reads input row 2o + d - 1:
# row 2(o - 1) + 1, 2o or 2o + 1, i.e. parity plane _Q[d] shifted _S[d] rows later.
_Q, _S = (1, 0, 1), (1, 0, 0)


def _block_tap(y6, di, dj):
    t = y6[:, :, :, _Q[di], _Q[dj], :]
    hq, wq = t.shape[1:3]
    t = jnp.pad(t, ((0, 0), (_S[di], 0), (_S[dj], 0), (0, 0)), constant_values=-jnp.inf)
    return t[:, :hq, :wq]


@jax.custom_vjp
def argmax_max_pool_3x3_s2_blocks(y6):
    """`argmax_max_pool_3x3_s2` of an input given as its 2x2 blocks, [B, H/2, W/2, 2, 2, C]
    (row 2i + q of the input at [:, i, :, q]: `StemConvS2(block=4, blocks_out=True)`'s
    output), so that neither pass needs a depth-to-space. Returns [B, H/2, W/2, C]; same
    values and gradients (first maximum in row-major window order) as `nn.max_pool`."""
    return _blocks_fwd(y6)[0]


def _blocks_fwd(y6):
    return _window_max([_block_tap(y6, di, dj) for di in range(3) for dj in range(3)])


# The tap code that a gradient shifted by s rows (columns) lands on parity plane p with:
# _K[s][p], -1 for none (taps 1 and 2 are unshifted, on planes 0 and 1; tap 0 is shifted).
_K = ((1, 2), (-1, 0))


def _blocks_bwd(idx, g):
    """The gradient in blocks, as a sum over the four (row, column) shifts of the window
    gradient: one broadcast select each, written once, where a tap's gradient lands on
    its parity plane. Why: stacking the four planes (as `_argmax_bwd` does) made XLA
    emit a concatenate fusion at 34% of the memory roof, 1.7 ms of a ResNet-18 step
    (H100, batch 256); this form was 1.2% faster in that step (README, issue #24)."""
    out = jnp.zeros((), g.dtype)
    for sr in (0, 1):
        for sc in (0, 1):
            pad = ((0, 0), (0, sr), (0, sc), (0, 0))
            gs = jnp.pad(g[:, sr:, sc:], pad)[:, :, :, None, None, :]
            ids = jnp.pad(idx[:, sr:, sc:], pad, constant_values=-1)[:, :, :, None, None, :]
            code = [
                [
                    3 * _K[sr][p] + _K[sc][q] if min(_K[sr][p], _K[sc][q]) >= 0 else -1
                    for q in (0, 1)
                ]
                for p in (0, 1)
            ]
            code = jnp.asarray(code, jnp.int8)[:, :, None]
            out = out + jnp.where(ids == code, gs, jnp.zeros((), g.dtype))
    return (out,)


argmax_max_pool_3x3_s2_blocks.defvjp(_blocks_fwd, _blocks_bwd)


def imagenet_stem(x, features: int, dtype, norm) -> jnp.ndarray:
    """torchvision ResNet's stem, /4: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (padding 1).
    Call inside a compact module (its submodules: "conv1", "bn1").

    On GPUs, for sides divisible by 4, `imagenet_stem_blocks`: in the SimCLR step on an
    H100 it was 4.2% (ResNet-18) and 1.3% (ResNet-50) faster than `imagenet_stem_nhwc`
    (README, issue #24). Elsewhere `imagenet_stem_nhwc`, whose pool is the backend's
    (`max_pool_3x3_s2`). Same parameters and values either way.
    """
    h, w = x.shape[1:3]
    if jax.default_backend() == "gpu" and h % 4 == 0 and w % 4 == 0:
        return imagenet_stem_blocks(x, features, dtype, norm)
    return imagenet_stem_nhwc(x, features, dtype, norm)


def imagenet_stem_nhwc(x, features: int, dtype, norm) -> jnp.ndarray:
    """`imagenet_stem` over NHWC tensors: `StemConvS2` (2x2 space-to-depth), BN, ReLU,
    `max_pool_3x3_s2`."""
    x = StemConvS2(features, 7, dtype, name="conv1")(x)
    x = bn_act(norm(name="bn1"), x)
    return max_pool_3x3_s2(x)


def imagenet_stem_blocks(x, features: int, dtype, norm) -> jnp.ndarray:
    """`imagenet_stem` with its conv over a 4x4 space-to-depth (16 channels in, 4 x F
    out), whose [B, H/4, W/4, 2, 2, F] output the BatchNorm, the ReLU and
    `argmax_max_pool_3x3_s2_blocks` take as it is: no depth-to-space in either pass.
    Why: cuDNN pads the 2x2 form's 4 input channels to 8 and runs the 7x7 conv at 18%
    of its roof (ResNet-18 roofline, H100); with 16 channels it runs the sm90
    implicit-GEMM kernels. A depth-to-space of the output (`StemConvS2(block=4)`
    alone) cost as much as the conv saved. Sides must be divisible by 4."""
    y = StemConvS2(features, 7, dtype, block=4, blocks_out=True, name="conv1")(x)
    y = bn_act(norm(name="bn1"), y)
    return argmax_max_pool_3x3_s2_blocks(y)


class StemConvS2(nn.Module):
    """A stride-2 stem conv over few input channels (k x k, odd k, padding (k-1)//2, no
    bias), computed as a stride-1 conv over a `block` x `block` space-to-depth of the
    input.

    The same parameter ("kernel", [k, k, C, F], as `conv(F, k, 2)`) and the same
    output: the kernel is regrouped, inside the step, into a [t, t, block²C, G²F]
    kernel (G = block / 2 output rows and columns per block, t taps; the kernel's
    missing taps are zeros). block=2 (G=1). Why: with one input channel cuDNN runs a
    stride-2 conv on a generic, non-tensor-core engine plus a layout conversion (~12%
    of a ResNet-18 SimCLR step on an H200, for the 7x7 stem); four channels and
    stride 1 suit its implicit-GEMM kernels (MLPerf's TPU ResNet uses the same
    rewrite). block=4 gives the conv 16C input and 4F output channels (cuDNN pads
    the 2x2 form's 4 channels to 8) and returns the output in 2x2 blocks
    (`blocks_out`) or, at the price of a depth-to-space, NHWC. ResNet's 7x7 stem and
    MobileNetV3's 3x3 stem use it.
    """

    features: int
    kernel_size: int
    dtype: Any
    block: int = 2
    # block=4 only: return the conv's [B, H/4, W/4, 2, 2, F] output as it is (output
    # row 2i + q at [:, i, :, q]) instead of its depth-to-space; needs H, W % 4 == 0.
    blocks_out: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, h, w, c = x.shape
        k, n, f = self.kernel_size, self.block, self.features
        if k % 2 != 1 or n % 2:
            raise ValueError(f"StemConvS2 needs an odd kernel and even block, not {k}, {n}")
        kernel = self.param("kernel", conv_init, (k, k, c, f), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        g = n // 2  # output rows (columns) per block
        p = (k - 1) // 2  # PyTorch's padding
        # Output row g*i + q reads padded input row n*i + 2q + d for kernel row d, i.e.
        # block row i + a at offset r, where (a, r) = divmod(2q + d, n).
        t = (2 * (g - 1) + k - 1) // n + 1
        ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        if self.blocks_out and (n != 4 or ho % 2 or wo % 2):
            raise ValueError(f"blocks_out needs block 4 and sides divisible by 4: {h}x{w}")
        hb, wb = -(-ho // g) + t - 1, -(-wo // g) + t - 1  # input blocks needed
        # Pad p on the top/left and up to whole blocks on the bottom/right; the extra
        # rows/columns only meet zero taps or outputs that are cropped.
        x = jnp.pad(x, ((0, 0), (p, n * hb - h - p), (p, n * wb - w - p), (0, 0)))
        x = x.reshape(b, hb, n, wb, n, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, hb, wb, n * n * c)
        a, r, q = np.meshgrid(np.arange(t), np.arange(n), np.arange(g), indexing="ij")
        d = n * a + r - 2 * q  # kernel row of (tap a, offset r, output q); k = a zero
        d = np.where((d >= 0) & (d < k), d, k)
        kp = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
        kp = kp[d[:, :, :, None, None, None], d[None, None, None]]  # [t,n,g,t,n,g,C,F]
        kp = kp.transpose(0, 3, 1, 4, 6, 2, 5, 7).reshape(t, t, n * n * c, g * g * f)
        y = jax.lax.conv_general_dilated(
            x, kp, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        if g == 1:
            return y
        hq, wq = y.shape[1:3]
        y = y.reshape(b, hq, wq, g, g, f)
        if self.blocks_out:
            return y
        y = y.transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, hq * g, wq * g, f)[:, :ho, :wo]
