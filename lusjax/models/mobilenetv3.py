"""MobileNetV3 feature extractors (Howard et al. 2019, https://arxiv.org/abs/1905.02244).

torchvision's `mobilenet_v3_small`/`_large` `features` (stem, inverted-residual
blocks with depthwise convs, squeeze-excite with hard-sigmoid, hard-swish, and
the last 1x1 conv to 6x the last block's width) followed by global average
pooling: `__call__` returns float32 [B, num_features], 576 (Small) or 960
(Large) at width 1.0. With 3 input channels the parameter counts equal
torchvision's `features` module: 927,008 (Small) and 2,971,952 (Large).

Not included: the classifier's pre-logit Linear + hard-swish (576->1024,
960->1280). It was trained for ImageNet logits and is part of the classifier
in torchvision; SSL code (solo-learn, lightly) takes the pooled 576/960 and
puts its own projector on top, which plays the same role.

BatchNorm: eps 1e-3 as in torchvision and the paper's TF code (not the 1e-5
of ResNet): with eps 1e-5 a ported torchvision model is off by ~1e-3 in eval
mode and by 40-60% (max relative error) in train mode on a batch of 4, where
late small maps give channels of tiny batch variance. Momentum stays 0.9 like every lusjax backbone
(torchvision uses 0.99 in flax terms); it changes only the running averages.

Stem: the 3x3/2 conv is computed over a 2x2 space-to-depth of the input
(`layers.StemConvS2`: same weights and outputs; 7.8% faster SimCLR step on an
H200 with one input channel).

Width multiplier: every block's channels are `make_divisible(c * width, 8)`
(as torchvision's `width_mult`); the last conv is 6x the last block's width.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lusjax.models import layers


class Block(NamedTuple):
    """One inverted-residual block at width 1.0 (input = previous block's `out`)."""

    kernel: int
    expanded: int
    out: int
    use_se: bool
    act: str  # "relu" or "hardswish"
    stride: int


# torchvision.models.mobilenetv3._mobilenet_v3_conf (dilation 1, no reduced tail).
SMALL_STEM = 16
SMALL = (
    Block(3, 16, 16, True, "relu", 2),
    Block(3, 72, 24, False, "relu", 2),
    Block(3, 88, 24, False, "relu", 1),
    Block(5, 96, 40, True, "hardswish", 2),
    Block(5, 240, 40, True, "hardswish", 1),
    Block(5, 240, 40, True, "hardswish", 1),
    Block(5, 120, 48, True, "hardswish", 1),
    Block(5, 144, 48, True, "hardswish", 1),
    Block(5, 288, 96, True, "hardswish", 2),
    Block(5, 576, 96, True, "hardswish", 1),
    Block(5, 576, 96, True, "hardswish", 1),
)
LARGE_STEM = 16
LARGE = (
    Block(3, 16, 16, False, "relu", 1),
    Block(3, 64, 24, False, "relu", 2),
    Block(3, 72, 24, False, "relu", 1),
    Block(5, 72, 40, True, "relu", 2),
    Block(5, 120, 40, True, "relu", 1),
    Block(5, 120, 40, True, "relu", 1),
    Block(3, 240, 80, False, "hardswish", 2),
    Block(3, 200, 80, False, "hardswish", 1),
    Block(3, 184, 80, False, "hardswish", 1),
    Block(3, 184, 80, False, "hardswish", 1),
    Block(3, 480, 112, True, "hardswish", 1),
    Block(3, 672, 112, True, "hardswish", 1),
    Block(5, 672, 160, True, "hardswish", 2),
    Block(5, 960, 160, True, "hardswish", 1),
    Block(5, 960, 160, True, "hardswish", 1),
)

_ACTS = {"relu": nn.relu, "hardswish": jax.nn.hard_swish}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds channels to a multiple of `divisor`, never below 90% of `v` (torchvision)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """Channel gate: avgpool -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid -> scale."""

    squeeze: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(layers.conv, kernel_size=1, dtype=self.dtype, use_bias=True)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(conv(self.squeeze, name="fc1")(s))
        s = jax.nn.hard_sigmoid(conv(x.shape[-1], name="fc2")(s))
        return x * s


class InvertedResidual(nn.Module):
    """[1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project, residual when shapes match."""

    block: Block
    in_features: int
    expanded: int
    out_features: int
    dtype: Any
    norm: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x):
        b, act = self.block, _ACTS[self.block.act]
        conv = functools.partial(layers.conv, dtype=self.dtype)
        y = x
        if self.expanded != self.in_features:
            y = act(self.norm(name="expand_bn")(conv(self.expanded, 1, name="expand_conv")(y)))
        y = conv(self.expanded, b.kernel, b.stride, groups=self.expanded, name="dw_conv")(y)
        y = act(self.norm(name="dw_bn")(y))
        if b.use_se:
            y = SqueezeExcite(make_divisible(self.expanded // 4), self.dtype, name="se")(y)
        y = self.norm(name="project_bn")(conv(self.out_features, 1, name="project_conv")(y))
        if b.stride == 1 and self.in_features == self.out_features:
            y = y + x
        return y


class MobileNetV3(nn.Module):
    """MobileNetV3 `features` + global average pool; see the module docstring."""

    blocks: Sequence[Block]
    stem_width: int = 16
    # Shared backbone API.
    num_channels: int = 1
    dtype: Any = "float32"
    width: float = 1.0
    bn_axis_name: str | None = None
    # MobileNetV3-only option.
    bn_epsilon: float = 1e-3

    def _ch(self, c: int) -> int:
        return make_divisible(c * self.width)

    @property
    def num_features(self) -> int:
        return 6 * self._ch(self.blocks[-1].out)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        layers.check_channels(x, self.num_channels, type(self).__name__)
        dtype = layers.compute_dtype(self.dtype)
        norm = layers.batch_norm(train, dtype, self.bn_axis_name, self.bn_epsilon)

        x = x.astype(dtype)
        in_features = self._ch(self.stem_width)
        x = layers.StemConvS2(in_features, 3, dtype, name="stem_conv")(x)  # = conv(F, 3, 2)
        x = jax.nn.hard_swish(norm(name="stem_bn")(x))
        for i, block in enumerate(self.blocks):
            out_features = self._ch(block.out)
            x = InvertedResidual(
                block=block,
                in_features=in_features,
                expanded=self._ch(block.expanded),
                out_features=out_features,
                dtype=dtype,
                norm=norm,
                name=f"block{i}",
            )(x)
            in_features = out_features
        x = layers.conv(self.num_features, 1, dtype=dtype, name="last_conv")(x)
        x = jax.nn.hard_swish(norm(name="last_bn")(x))
        return layers.global_avg_pool(x)


MobileNetV3Small = functools.partial(MobileNetV3, blocks=SMALL, stem_width=SMALL_STEM)
MobileNetV3Large = functools.partial(MobileNetV3, blocks=LARGE, stem_width=LARGE_STEM)
