"""Where the time of a profiled step goes: top device kernels of a jax.profiler trace.

    lusjax bench step ... --profile /tmp/prof && python benchmarks/profile_top.py /tmp/prof

Reads the newest perfetto_trace.json.gz under the folder, sums the duration of
complete events per name on device (GPU/TPU) timelines (the host's when there
is no device), and prints one JSON object: total traced kernel time, the share
of convolution, matrix-multiply, fused elementwise/reduction and collective
kernels (by name), and the top kernels.
"""

from __future__ import annotations

import collections
import gzip
import json
import sys
from pathlib import Path

CLASSES = (("collective", ("nccl", "all-reduce", "all-gather", "allreduce", "allgather")),
           ("convolution", ("conv", "cudnn", "implicit_gemm", "xmma_fprop", "xmma_dgrad",
                            "xmma_wgrad", "fprop", "dgrad", "wgrad")),
           ("matmul", ("gemm", "cublas", "matmul", "dot", "sm90_xmma", "nvjet")),
           ("fusion", ("fusion", "reduce", "loop_", "input_", "triton")),
           ("copy/transpose", ("copy", "transpose", "memcpy", "memset")))


def classify(name: str) -> str:
    low = name.lower()
    for cls, keys in CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def summarize(folder: str, top: int = 25) -> dict:
    traces = sorted(Path(folder).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise SystemExit(f"no perfetto_trace.json.gz under {folder}")
    with gzip.open(traces[-1]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    pname = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = {pid for pid, n in pname.items() if "/device:" in n and "CPU" not in n.upper()}
    per_name: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "dur" in e and (not device or e.get("pid") in device):
            per_name[e.get("name", "?")] += float(e["dur"])
    total = sum(per_name.values()) or 1.0
    per_class: collections.Counter = collections.Counter()
    for name, dur in per_name.items():
        per_class[classify(name)] += dur
    return {"trace": str(traces[-1]), "timelines": "device" if device else "host",
            "total_ms": round(total / 1e3, 3),
            "share": {k: round(v / total, 3) for k, v in per_class.most_common()},
            "top": [{"name": n[:120], "ms": round(d / 1e3, 3), "share": round(d / total, 4)}
                    for n, d in per_name.most_common(top)]}


if __name__ == "__main__":
    print(json.dumps(summarize(sys.argv[1]), indent=1))
