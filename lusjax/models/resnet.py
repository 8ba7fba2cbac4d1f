"""ResNet feature extractors (He et al. 2016, https://arxiv.org/abs/1512.03385).

torchvision's layout ("v1.5": the stride of a bottleneck sits on its 3x3 conv),
without the classifier: `__call__` returns the global-average-pooled output of
the last stage, float32 [B, num_features]. With 3 input channels the parameter
counts equal torchvision's `resnet18`/`resnet50` minus `fc`: 11,176,512 and
23,508,032.

Variants are `functools.partial`s of `ResNet` (as in flax examples/imagenet);
`ResNetTiny` (patch stem, 2 stages of one BasicBlock, width 16, 32 features)
is for tests and the CPU quickstart.

Options beyond the shared backbone API (see `lusjax.models`):
  stem: "imagenet" (default: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool, /4,
    `layers.imagenet_stem`: the conv is computed over a space-to-depth of the
    input, `layers.StemConvS2`, same weights and outputs; on GPUs the whole stem
    stays in 4x4 space-to-depth blocks and the pool's gradient uses its kept
    argmax), "small" (3x3/1 conv, no pool, /1: SimCLR's CIFAR variant for 32-96 px
    inputs) or "patch" (4x4 space-to-depth + 3x3/1 conv, /4). "patch" is ResNetTiny's: on CPUs
    XLA's convolutions over one input channel and max-pool gradients are slow
    (a 7x7 stem + pool was ~80% of a tiny model's step on 2 cores), while a
    space-to-depth reshape is free.
  zero_init_residual: the last BN of every residual branch starts with gamma=0,
    so each block starts as the identity (Goyal et al. 2017; SimCLR, BYOL and
    solo-learn use it). torchvision's default is off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from lusjax.errors import UserError
from lusjax.models import layers


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet-18/34)."""

    expansion: ClassVar[int] = 1
    features: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    zero_init_residual: bool = True

    @nn.compact
    def __call__(self, x):
        out_features = self.features * self.expansion
        residual = x
        y = self.conv(self.features, 3, self.strides, name="conv1")(x)
        y = layers.bn_act(self.norm(name="bn1"), y)
        y = self.conv(out_features, 3, name="conv2")(y)
        bn2 = self.norm(name="bn2", scale_init=_last_gamma_init(self.zero_init_residual))
        if self.strides != 1 or x.shape[-1] != out_features:
            residual = self.conv(out_features, 1, self.strides, name="downsample_conv")(x)
            residual = layers.bn_act(self.norm(name="downsample_bn"), residual, relu=False)
        return layers.bn_act(bn2, y, residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (x4) residual block (ResNet-50/101/152, v1.5)."""

    expansion: ClassVar[int] = 4
    features: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    zero_init_residual: bool = True

    @nn.compact
    def __call__(self, x):
        out_features = self.features * self.expansion
        residual = x
        y = self.conv(self.features, 1, name="conv1")(x)
        y = layers.bn_act(self.norm(name="bn1"), y)
        y = self.conv(self.features, 3, self.strides, name="conv2")(y)
        y = layers.bn_act(self.norm(name="bn2"), y)
        y = self.conv(out_features, 1, name="conv3")(y)
        bn3 = self.norm(name="bn3", scale_init=_last_gamma_init(self.zero_init_residual))
        if self.strides != 1 or x.shape[-1] != out_features:
            residual = self.conv(out_features, 1, self.strides, name="downsample_conv")(x)
            residual = layers.bn_act(self.norm(name="downsample_bn"), residual, relu=False)
        return layers.bn_act(bn3, y, residual)


def _last_gamma_init(zero: bool):
    return nn.initializers.zeros if zero else nn.initializers.ones


class ResNet(nn.Module):
    """ResNet trunk + global average pool; see the module docstring."""

    stage_sizes: Sequence[int]
    block_cls: type[nn.Module]
    base_width: int = 64
    # Shared backbone API.
    num_channels: int = 1
    dtype: Any = "float32"
    width: float = 1.0
    bn_axis_name: str | None = None
    # ResNet-only options.
    stem: str = "imagenet"
    zero_init_residual: bool = True

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Bottleneck/inner width of each stage (x expansion = its output width)."""
        base = max(1, round(self.base_width * self.width))
        return tuple(base * 2**i for i in range(len(self.stage_sizes)))

    @property
    def num_features(self) -> int:
        return self.stage_widths[-1] * self.block_cls.expansion

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        layers.check_channels(x, self.num_channels, type(self).__name__)
        dtype = layers.compute_dtype(self.dtype)
        conv = functools.partial(layers.conv, dtype=dtype)
        norm = layers.batch_norm(train, dtype, self.bn_axis_name)

        x = x.astype(dtype)
        stem_width = self.stage_widths[0]
        if self.stem == "small":
            x = conv(stem_width, 3, name="conv1")(x)
            x = layers.bn_act(norm(name="bn1"), x)
        elif self.stem == "patch":
            b, h, w, c = x.shape
            if h % 4 or w % 4:
                raise UserError(f"the patch stem needs sides divisible by 4, got {h}x{w}")
            x = x.reshape(b, h // 4, 4, w // 4, 4, c).transpose(0, 1, 3, 2, 4, 5)
            x = conv(stem_width, 3, name="conv1")(x.reshape(b, h // 4, w // 4, 16 * c))
            x = layers.bn_act(norm(name="bn1"), x)
        elif self.stem == "imagenet":
            x = layers.imagenet_stem(x, stem_width, dtype, norm)
        else:
            raise UserError(f"unknown ResNet stem {self.stem!r}: imagenet, small or patch")

        for i, (n_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_widths)):
            for j in range(n_blocks):
                x = self.block_cls(
                    features=features,
                    strides=2 if i > 0 and j == 0 else 1,
                    conv=conv,
                    norm=norm,
                    zero_init_residual=self.zero_init_residual,
                    name=f"layer{i + 1}_{j}",
                )(x)
        return layers.global_avg_pool(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNetTiny = functools.partial(
    ResNet, stage_sizes=(1, 1), block_cls=BasicBlock, base_width=16, stem="patch"
)
