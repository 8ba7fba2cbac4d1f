"""The PyTorch peer of `lusjax bench step`: the same SimCLR step, torchvision backbone.

    python benchmarks/peer_torch.py --model resnet50 --image-size 224 --batch-size 256

One step = both views (2B one-channel images) through the backbone and the
projector (Linear-BN-ReLU-Linear, 2048 -> 128, as lusjax's SimCLR head), NT-Xent
(temperature 0.1) over the 2B embeddings, backward, SGD with momentum. bf16
autocast, channels_last, `torch.compile` (default mode) on the model and the
loss. The views are random tensors already on the GPU (no augmentation: the
lusjax step it is compared with augments on device as part of its step, so
the comparison favours the peer). Prints one JSON line per configuration with
the same keys as `lusjax bench step` (images/s = 2B / step time).

`benchmarks/compare_peer.sh` runs both frameworks on one GPU in one launch.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def backbone(name: str) -> tuple[nn.Module, int]:
    """A torchvision backbone taking one-channel images, without its classifier."""
    if name.startswith("resnet"):
        m = getattr(torchvision.models, name)(weights=None)
        m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        dim = m.fc.in_features
        m.fc = nn.Identity()
        return m, dim
    if name.startswith("mobilenetv3"):
        size = name.split("_")[1]
        m = getattr(torchvision.models, f"mobilenet_v3_{size}")(weights=None)
        first = m.features[0][0]
        m.features[0][0] = nn.Conv2d(
            1, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False
        )
        dim = m.classifier[0].in_features
        m.classifier = nn.Identity()
        return m, dim
    raise SystemExit(f"unknown model {name!r} (resnet18, resnet50, mobilenetv3_small, ...)")


class SimCLR(nn.Module):
    def __init__(self, name: str, hidden: int = 2048, out: int = 128):
        super().__init__()
        self.backbone, dim = backbone(name)
        self.projector = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )

    def forward(self, x):
        return self.projector(self.backbone(x))


def nt_xent(z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over 2B embeddings ordered [view1; view2] (SimCLR's loss)."""
    z = F.normalize(z.float(), dim=1)
    n2 = z.shape[0]
    b = n2 // 2
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), -1e9)
    target = torch.cat([torch.arange(b, n2), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, target)


def bench(
    model_name: str,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    compile_model: bool = True,
) -> dict:
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = SimCLR(model_name).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)

    def loss_fn(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return nt_xent(model(x))

    fwd = torch.compile(loss_fn) if compile_model else loss_fn
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(2 * batch_size, 1, image_size, image_size, device=dev, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = fwd(x)
        loss.backward()
        opt.step()
        return loss

    torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    loss = step()
    torch.cuda.synchronize(dev)
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        loss = step()
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize(dev)
    step_s = (time.perf_counter() - t0) / steps
    return {
        "framework": f"torch {torch.__version__}" + (" compile" if compile_model else " eager"),
        "method": "simclr",
        "model": model_name,
        "dtype": "bfloat16 autocast",
        "image_size": image_size,
        "batch_size": batch_size,
        "input": "synthetic",
        "device": torch.cuda.get_device_name(dev),
        "devices": 1,
        "compile_s": round(compile_s, 2),
        "step_ms": round(step_s * 1e3, 3),
        "images_per_s": round(2 * batch_size / step_s, 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2),
        "loss": float(loss),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="resnet18",
        help="resnet18, resnet50, mobilenetv3_small, mobilenetv3_large",
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256, help="pairs per step (2x images)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eager", action="store_true", help="no torch.compile")
    a = p.parse_args()
    print(
        json.dumps(
            bench(a.model, a.image_size, a.batch_size, a.steps, a.warmup, compile_model=not a.eager)
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
