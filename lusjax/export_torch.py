"""A lusjax backbone as a torchvision `state_dict` (numpy arrays; no torch needed).

lusjax's ResNet and MobileNetV3 are torchvision's layouts (same layers, padding
`(k - 1) // 2` on both sides, BN eps, SE squeeze widths, hard-sigmoid/-swish), so a
backbone's variables load into `torchvision.models.<name>()` after renaming and
transposing: conv kernels HWIO -> OIHW, BatchNorm scale/bias/mean/var ->
weight/bias/running_mean/running_var (+ `num_batches_tracked`). The classifier
(`fc`, `classifier`) is not part of a lusjax backbone: the torch model gets
`nn.Identity()` there and returns the same pooled features as lusjax.

The stem conv keeps its input channels (1 for lusjax's gray frames), or is
converted: 1 -> 3 divides the kernel by 3 over the input-channel axis, 3 -> 1 sums
it, so the gray image repeated to 3 channels gives the same output either way.
Only width 1.0 and ResNet's "imagenet" stem exist in torchvision; other
backbones (resnet_tiny) have no mapping (`UserError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from lusjax.errors import UserError

# lusjax model name -> torchvision constructor (torchvision.models.<name>).
TORCHVISION = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "mobilenetv3_small": "mobilenet_v3_small",
    "mobilenetv3_large": "mobilenet_v3_large",
}
# The stem conv, in torchvision's names, and what replaces the classifier.
STEM = {"resnet": "conv1", "mobilenet": "features.0.0"}
HEAD = {"resnet": "fc", "mobilenet": "classifier"}
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def family(model_name: str) -> str:
    return "resnet" if model_name.startswith("resnet") else "mobilenet"


def check_exportable(model_name: str, model_kwargs: dict[str, Any]) -> str:
    """The torchvision constructor for this backbone, or a UserError saying why none."""
    if model_name not in TORCHVISION:
        raise UserError(
            f"{model_name} has no torchvision counterpart (torch export exists for "
            f"{', '.join(TORCHVISION)}); use --format flax"
        )
    if float(model_kwargs.get("width", 1.0)) != 1.0:
        raise UserError(
            f"{model_name} at width {model_kwargs['width']} has no torchvision "
            "counterpart (width 1.0 only); use --format flax"
        )
    if model_kwargs.get("stem", "imagenet") != "imagenet":
        raise UserError(
            f"{model_name} with the {model_kwargs['stem']!r} stem has no "
            "torchvision counterpart; use --format flax"
        )
    return TORCHVISION[model_name]


def _flat(tree: dict, prefix: tuple = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _resnet_module(path: tuple[str, ...]) -> str:
    """('layer2_0', 'downsample_bn') -> 'layer2.0.downsample.1'; ('conv1',) -> 'conv1'."""
    out = []
    for name in path:
        if m := re.fullmatch(r"layer(\d+)_(\d+)", name):
            out += [f"layer{m[1]}", m[2]]
        else:
            out.append(
                {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(name, name)
            )
    return ".".join(out)


# A torchvision MobileNetV3 `block` is a Sequential of [expand], depthwise, [SE],
# project (absent parts take no index); each conv+BN pair is one Conv2dNormActivation
# whose conv is `.0` and BN `.1`.
_MBV3_STAGES = ("expand", "dw", "se", "project")


def _mobilenet_modules(params: dict) -> dict[tuple[str, ...], str]:
    """lusjax module path -> torchvision module name, for every module of `params`."""
    blocks = sorted((k for k in params if k.startswith("block")), key=lambda k: int(k[5:]))
    last = f"features.{len(blocks) + 1}"
    names = {
        ("stem_conv",): "features.0.0",
        ("stem_bn",): "features.0.1",
        ("last_conv",): f"{last}.0",
        ("last_bn",): f"{last}.1",
    }
    for i, b in enumerate(blocks):
        present = [s for s in _MBV3_STAGES if s in params[b] or f"{s}_conv" in params[b]]
        for idx, s in enumerate(present):
            prefix = f"features.{i + 1}.block.{idx}"
            if s == "se":
                names[(b, "se")] = prefix
            else:
                names[(b, f"{s}_conv")], names[(b, f"{s}_bn")] = f"{prefix}.0", f"{prefix}.1"
    return names


def _module_namer(model_name: str, params: dict):
    """lusjax module path -> torchvision module name, for this backbone's `params`."""
    if family(model_name) == "resnet":
        return _resnet_module
    names = _mobilenet_modules(params)

    def name(path: tuple[str, ...]) -> str:
        if path[-1] in ("fc1", "fc2"):  # inside SqueezeExcite: torchvision's names too
            return f"{names[path[:-1]]}.{path[-1]}"
        return names[path]

    return name


def _stem_kernel(w: np.ndarray, channels: int | None) -> np.ndarray:
    """OIHW stem kernel with `channels` inputs, same output on a gray image repeated."""
    have = w.shape[1]
    if channels is None or channels == have:
        return w
    if have == 1:
        return np.repeat(w, channels, axis=1) / channels
    if channels == 1:
        return w.sum(axis=1, keepdims=True)
    raise UserError(f"cannot convert a {have}-channel stem to {channels} channels (1 or 3)")


def state_dict(
    model_name: str,
    model_kwargs: dict[str, Any],
    variables: dict,
    *,
    channels: int | None = None,
    step: int = 0,
) -> dict[str, np.ndarray]:
    """torchvision `state_dict` (minus the classifier) of a lusjax backbone's variables
    ({"params", "batch_stats"}), float32 numpy arrays.

    `channels`: input channels of the stem (None: the backbone's own); `step`: what
    `num_batches_tracked` records (the number of training steps, each one BN update).
    """
    check_exportable(model_name, model_kwargs)
    params, stats = variables["params"], variables.get("batch_stats", {})
    out: dict[str, np.ndarray] = {}
    stem, torch_name = STEM[family(model_name)], _module_namer(model_name, params)
    for path, v in _flat(params):
        module = torch_name(path[:-1])
        v = np.asarray(v, np.float32)
        leaf = path[-1]
        if leaf == "kernel":
            w = v.transpose(3, 2, 0, 1)  # HWIO -> OIHW (depthwise: [k,k,1,C] -> [C,1,k,k])
            out[f"{module}.weight"] = _stem_kernel(w, channels) if module == stem else w
        elif leaf == "bias" and module.rsplit(".", 1)[-1] in ("fc1", "fc2"):
            out[f"{module}.bias"] = v  # conv bias (SE), not BatchNorm
        elif leaf in ("scale", "bias"):
            bn = stats
            for p in path[:-1]:
                bn = bn[p]
            out[f"{module}.{_BN[leaf]}"] = v
            if leaf == "bias":  # one BN's running statistics after its affine params
                out[f"{module}.running_mean"] = np.asarray(bn["mean"], np.float32)
                out[f"{module}.running_var"] = np.asarray(bn["var"], np.float32)
                out[f"{module}.num_batches_tracked"] = np.asarray(step, np.int64)
        else:
            raise ValueError(f"unexpected parameter {'/'.join(path)} in {model_name}")
    return out
