"""benchmarks/profile_top.py: kernel time by class, device busy time, and the 1-vs-2 diff."""

import gzip
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("profile_top", ROOT / "benchmarks/profile_top.py")
profile_top = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_top)


def _trace(folder: Path, devices: dict[int, list[tuple[str, float, float]]]) -> str:
    """A perfetto-style trace: one process per device, complete events (name, ts, dur)."""
    events = [
        {"ph": "M", "name": "process_name", "pid": 99, "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 99, "name": "host work", "ts": 0, "dur": 1000},
    ]
    for pid, kernels in devices.items():
        events.append(
            {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"/device:GPU:{pid}"}}
        )
        events += [
            {"ph": "X", "pid": pid, "tid": 1, "name": n, "ts": t, "dur": d} for n, t, d in kernels
        ]
    d = folder / "plugins/profile/run"
    d.mkdir(parents=True)
    with gzip.open(d / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    return str(folder)


def test_summary_counts_device_kernels_and_busy_time(tmp_path):
    # conv 0-100, fusion 50-150 (overlapping stream), idle 150-250, nccl 250-300.
    folder = _trace(
        tmp_path,
        {
            1: [
                ("sm90_xmma_fprop_conv", 0, 100),
                ("loop_add_fusion_3", 50, 100),
                ("ncclDevKernel_AllReduce", 250, 50),
            ]
        },
    )
    s = profile_top.summarize(folder)
    assert s["devices"] == 1 and s["total_ms"] == 0.25  # the host event is not counted
    assert s["span_ms"] == [0.3] and s["busy_ms"] == [0.2]
    assert s["share"] == {"convolution": 0.4, "fusion": 0.4, "collective": 0.2}


def test_diff_is_per_device_and_merges_fusion_numbering(tmp_path):
    one = _trace(tmp_path / "a", {1: [("conv", 0, 100), ("loop_add_fusion_3", 100, 50)]})
    two = _trace(
        tmp_path / "b",
        {
            1: [
                ("conv", 0, 110),
                ("loop_add_fusion_7", 110, 50),
                ("ncclDevKernel_AllReduce", 160, 20),
            ],
            2: [
                ("conv", 0, 130),
                ("loop_add_fusion_7", 130, 50),
                ("ncclDevKernel_AllReduce", 180, 20),
            ],
        },
    )
    d = profile_top.diff(one, two)
    assert d[two]["devices"] == 2 and d[two]["kernel_ms_per_device"] == 0.19
    assert d["class_delta_ms"] == {"convolution": 0.02, "collective": 0.02, "fusion": 0.0}
    top = {r["name"]: r for r in d["top_delta"]}
    assert top["loop_add_fusion"]["delta_ms"] == 0.0 and top["conv"]["b_ms"] == 0.12


def test_bad_arguments_and_missing_traces_are_one_line_errors(tmp_path):
    import subprocess
    import sys

    script = str(ROOT / "benchmarks/profile_top.py")
    for args in ([], ["--diff", str(tmp_path)], [str(tmp_path)]):
        r = subprocess.run(
            [sys.executable, script, *args], check=False, capture_output=True, text=True
        )
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.strip().startswith(("usage:", "no perfetto_trace.json.gz under"))
