"""Where the time of a profiled step goes: top device kernels of a jax.profiler trace.

    lusjax bench step ... --profile /tmp/prof && python benchmarks/profile_top.py /tmp/prof
    python benchmarks/profile_top.py --diff /tmp/prof_1gpu /tmp/prof_2gpu

Reads the newest perfetto_trace.json.gz under the folder, sums the duration of
complete events per name on device (GPU/TPU) timelines (the host's when there
is no device), and prints one JSON object: total traced kernel time, the share
of convolution, matrix-multiply, fused elementwise/reduction and collective
kernels (by name), the top kernels, and each device's span (first kernel to
last) and busy time (union of its kernels over all streams). `--diff A B`: per
device, how each class and kernel family (fusion numbering dropped) changed
from trace A to trace B.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import sys
from pathlib import Path

CLASSES = (
    ("collective", ("nccl", "all-reduce", "all-gather", "allreduce", "allgather")),
    (
        "convolution",
        (
            "conv",
            "cudnn",
            "implicit_gemm",
            "xmma_fprop",
            "xmma_dgrad",
            "xmma_wgrad",
            "fprop",
            "dgrad",
            "wgrad",
        ),
    ),
    ("matmul", ("gemm", "cublas", "matmul", "dot", "sm90_xmma", "nvjet")),
    ("fusion", ("fusion", "reduce", "loop_", "input_", "triton")),
    ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
)


def classify(name: str) -> str:
    low = name.lower()
    for cls, keys in CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def _events(folder: str) -> tuple[str, list[dict], set]:
    traces = sorted(Path(folder).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise SystemExit(f"no perfetto_trace.json.gz under {folder}")
    with gzip.open(traces[-1]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    pname = {
        e["pid"]: e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    device = {pid for pid, n in pname.items() if "/device:" in n and "CPU" not in n.upper()}
    kernels = [
        e
        for e in events
        if e.get("ph") == "X" and "dur" in e and (not device or e.get("pid") in device)
    ]
    return str(traces[-1]), kernels, device


def _busy(kernels: list[dict]) -> tuple[float, float]:
    """(span, union of kernel intervals) in us over one device's timelines (all streams)."""
    iv = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels)
    if not iv:
        return 0.0, 0.0
    busy, (lo, hi) = 0.0, iv[0]
    for a, b in iv[1:]:
        if a > hi:
            busy, lo = busy + hi - lo, a
        hi = max(hi, b)
    return max(b for _, b in iv) - iv[0][0], busy + hi - lo


def _device_times(kernels: list[dict], device: set) -> dict:
    """Per device: wall time from its first kernel to its last (span_ms), and the part of
    it in which some kernel ran (busy_ms); the rest is the device waiting (host,
    collectives)."""
    spans = [_busy([e for e in kernels if e.get("pid") == pid]) for pid in sorted(device)]
    return {
        "span_ms": [round(a / 1e3, 3) for a, _ in spans],
        "busy_ms": [round(b / 1e3, 3) for _, b in spans],
    }


def summarize(folder: str, top: int = 25) -> dict:
    """Kernel time by class and name, plus per-device span and busy time."""
    trace, kernels, device = _events(folder)
    per_name: collections.Counter = collections.Counter()
    for e in kernels:
        per_name[e.get("name", "?")] += float(e["dur"])
    total = sum(per_name.values()) or 1.0
    per_class: collections.Counter = collections.Counter()
    for name, dur in per_name.items():
        per_class[classify(name)] += dur
    return {
        "trace": trace,
        "timelines": "device" if device else "host",
        "devices": max(len(device), 1),
        "total_ms": round(total / 1e3, 3),
        **_device_times(kernels, device),
        "share": {k: round(v / total, 3) for k, v in per_class.most_common()},
        "top": [
            {"name": n[:120], "ms": round(d / 1e3, 3), "share": round(d / total, 4)}
            for n, d in per_name.most_common(top)
        ],
    }


def _family(name: str) -> str:
    """Kernel name without XLA's fusion numbering (fusion_9 and fusion_21 are one family)."""
    return re.sub(r"_\d+$", "", name)


def diff(folder_a: str, folder_b: str, top: int = 25) -> dict:
    """Per-device kernel time of B minus A, by class and by kernel family (same number of
    traced steps in both, e.g. `lusjax bench step --profile` on 1 and on 2 GPUs)."""
    out, per = {}, []
    for folder in (folder_a, folder_b):
        _, kernels, device = _events(folder)
        n = max(len(device), 1)
        fam: collections.Counter = collections.Counter()
        for e in kernels:
            fam[_family(e.get("name", "?"))] += float(e["dur"]) / n
        per.append(fam)
        out[folder] = {
            "devices": n,
            "kernel_ms_per_device": round(sum(fam.values()) / 1e3, 3),
            **_device_times(kernels, device),
        }
    a, b = per
    cls: collections.Counter = collections.Counter()
    for name in set(a) | set(b):
        cls[classify(name)] += b[name] - a[name]
    delta = sorted(set(a) | set(b), key=lambda k: -abs(b[k] - a[k]))
    out["class_delta_ms"] = {k: round(v / 1e3, 3) for k, v in cls.most_common()}
    out["top_delta"] = [
        {
            "name": k[:120],
            "a_ms": round(a[k] / 1e3, 3),
            "b_ms": round(b[k] / 1e3, 3),
            "delta_ms": round((b[k] - a[k]) / 1e3, 3),
        }
        for k in delta[:top]
    ]
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--diff":
        print(json.dumps(diff(sys.argv[2], sys.argv[3]), indent=1))
    elif len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        print(json.dumps(summarize(sys.argv[1]), indent=1))
    else:
        raise SystemExit("usage: python benchmarks/profile_top.py DIR | --diff DIR_A DIR_B")
