"""Backbones by name. Each family lives in its own file and exposes variants.

API shared by all backbones (flax.linen Modules):
  model = lusjax.models.get(name, num_channels=1, dtype="bfloat16",
                            width=1.0, bn_axis_name=None)
  variables = model.init(rng, x, train=False)   # x float [B, H, W, C]
  feats, new_state = model.apply(variables, x, train=True,
                                 mutable=["batch_stats"])   # feats [B, D]
  model.num_features  -> D (the pooled feature width)
`dtype` is the compute dtype; parameters are always float32.
`bn_axis_name`: when set, BatchNorm statistics are averaged over that mesh
axis (synchronised BN inside shard_map).
"""

from __future__ import annotations

import importlib

from lusjax.errors import UserError

# name -> (module, attribute)
_REGISTRY = {
    "resnet18": ("resnet", "ResNet18"),
    "resnet50": ("resnet", "ResNet50"),
    "resnet_tiny": ("resnet", "ResNetTiny"),
    "mobilenetv3_small": ("mobilenetv3", "MobileNetV3Small"),
    "mobilenetv3_large": ("mobilenetv3", "MobileNetV3Large"),
}
NAMES = tuple(_REGISTRY)


def get(name: str, **kwargs):
    """Builds the backbone registered as `name` with the shared keyword arguments."""
    if name not in _REGISTRY:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")
    module, attr = _REGISTRY[name]
    return getattr(importlib.import_module(f"lusjax.models.{module}"), attr)(**kwargs)
