"""Pixel conventions shared by training (after augmentation) and evaluation.

Stored frames are uint8 grayscale. Augmentations work on float32 in [0, 1];
the network sees `normalize(x)`: centred, scaled, and repeated to the number
of channels the backbone expects. Train and eval must use the same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# LUS frames are mostly dark (black outside the fan): rough corpus statistics.
PIXEL_MEAN = 0.18
PIXEL_STD = 0.20


def to_unit(images_uint8: jax.Array) -> jax.Array:
    """uint8 [..., H, W, C] -> float32 in [0, 1]."""
    return images_uint8.astype(jnp.float32) * (1.0 / 255.0)


def normalize(x: jax.Array, num_channels: int) -> jax.Array:
    """float [B, H, W, C] in [0, 1] -> network input with `num_channels` channels."""
    x = (x - PIXEL_MEAN) / PIXEL_STD
    if x.shape[-1] != num_channels:
        x = jnp.broadcast_to(x[..., :1], x.shape[:-1] + (num_channels,))
    return x


def resize(x: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of float [B, H, W, C] to [B, size, size, C] (no-op if equal)."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear", antialias=True)


def eval_input(images_uint8: jax.Array, size: int, num_channels: int) -> jax.Array:
    """What the network sees at evaluation: the whole frame, resized, normalized."""
    return normalize(resize(to_unit(images_uint8), size), num_channels)
