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

    As `nn.max_pool` (XLA's reduce-window; select-and-scatter gradient). A max of
    nine strided slices was 6.8% slower in the ResNet-18 step on an H200 (its
    gradient became select-reduce fusions); `benchmarks/ab_step.py` has the
    candidates.
    """
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class StemConv7x7S2(nn.Module):
    """torchvision ResNet's stem conv (7x7, stride 2, padding 3, no bias), computed as
    a 4x4 stride-1 conv over a 2x2 space-to-depth of the input.

    The same parameter ("kernel", [7, 7, C, F], as `conv(F, 7, 2)`) and the same
    output: the kernel is zero-padded to 8x8 and regrouped, inside the step, into a
    [4, 4, 4C, F] kernel. Why: with one input channel cuDNN runs the 7x7/2 conv on a
    generic, non-tensor-core engine plus a layout conversion (~12% of a ResNet-18
    SimCLR step on an H200); four channels and stride 1 suit its implicit-GEMM
    kernels (MLPerf's TPU ResNet uses the same rewrite).
    """

    features: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, h, w, c = x.shape
        kernel = self.param("kernel", conv_init, (7, 7, c, self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        # Pad 3 on the top/left (PyTorch's) and enough on the bottom/right for an even
        # size of 2 * (out + 3); the extra row/column only meets the kernel's zero tap.
        hp, wp = 2 * (ho + 3), 2 * (wo + 3)
        x = jnp.pad(x, ((0, 0), (3, hp - h - 3), (3, wp - w - 3), (0, 0)))
        x = x.reshape(b, hp // 2, 2, wp // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, hp // 2, wp // 2, 4 * c)
        k = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
        k = k.reshape(4, 2, 4, 2, c, self.features).transpose(0, 2, 1, 3, 4, 5)
        k = k.reshape(4, 4, 4 * c, self.features)
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
