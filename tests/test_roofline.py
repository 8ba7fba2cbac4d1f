"""benchmarks/roofline.py: HLO bytes/FLOPs, the kernel-event join, and a CPU run end to end."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("roofline", ROOT / "benchmarks/roofline.py")
roofline = importlib.util.module_from_spec(spec)
sys.modules["roofline"] = roofline  # dataclasses look their module up
spec.loader.exec_module(roofline)

# What XLA:GPU prints for a step (cuDNN convs and a cuBLAS gemm in a command buffer,
# fusions, a while loop), shortened.
GPU_HLO = (ROOT / "tests/data/roofline_gpu_step.hlo").read_text()
CONV_FLOPS = 2 * 64 * 64 * 8 * 46 * 46  # 3x3 taps over 16 with pad 1: 15 + 16 + 15 per dim
CONV_BYTES = 2 * (2 * 8 * 16 * 16 * 64) + 2 * 9 * 64 * 64  # workspace not counted


def _kernels():
    return {k["name"]: k for k in roofline.Analyzer(roofline.parse_hlo(GPU_HLO)).kernels()}


def test_gpu_hlo_bytes_and_flops_of_library_calls_and_fusions():
    k = _kernels()
    assert list(k) == [
        "cudnn-conv.1",
        "loop_multiply_fusion.3",
        "cudnn-conv-bw-input.2",
        "cudnn-conv-bw-filter.3",
        "cublas-gemm.4",
        "slice_fusion",
        "dynamic_update_slice_fusion",
        "input_scatter_fusion",
        "loop_add_fusion.7",
        "r",
    ]
    for name in ("cudnn-conv.1", "cudnn-conv-bw-input.2", "cudnn-conv-bw-filter.3"):
        assert k[name]["flops"] == CONV_FLOPS and k[name]["bytes"] == CONV_BYTES, name
        assert k[name]["class"] == "convolution"
    gemm = k["cublas-gemm.4"]
    assert gemm["class"] == "matmul" and gemm["flops"] == 2 * 512 * 32 * 256
    assert gemm["bytes"] == 2 * (512 * 256 + 256 * 32 + 512 * 32)
    bn = k["loop_multiply_fusion.3"]
    assert bn["class"] == "fusion" and bn["flops"] == 0
    assert bn["bytes"] == 2 * (2 * 8 * 16 * 16 * 64) + 2 * 64
    assert k["slice_fusion"]["bytes"] == 2 * 8 * 128 * 4  # reads the slice, not the array
    assert k["dynamic_update_slice_fusion"]["bytes"] == 2 * 8 * 128 * 4  # in place
    assert k["input_scatter_fusion"]["bytes"] == 8 * 4 + 2 * 8 * 128 * 4  # indices, updates
    assert k["loop_add_fusion.7"]["count"] == 3 and k["loop_add_fusion.7"]["bytes"] == 3 * 1024
    assert k["r"]["class"] == "copy/transpose"


@pytest.mark.parametrize(
    "kw, x, w",
    [
        ({}, (2, 8, 8, 3), (3, 3, 3, 4)),
        ({"window_strides": (2, 2)}, (2, 9, 9, 4), (3, 3, 4, 8)),
        ({"window_strides": (2, 2), "padding": ((3, 3), (3, 3))}, (2, 16, 16, 1), (7, 7, 1, 8)),
        ({"rhs_dilation": (2, 2)}, (1, 10, 10, 4), (3, 3, 4, 4)),
        ({"lhs_dilation": (2, 2), "padding": ((1, 1), (1, 1))}, (1, 5, 5, 4), (3, 3, 4, 4)),
        ({"feature_group_count": 4}, (2, 8, 8, 8), (3, 3, 2, 8)),
    ],
)
def test_conv_flops_and_bytes_match_xla_on_a_jitted_conv_and_its_gradient(kw, x, w):
    kw = {"window_strides": (1, 1), "padding": "SAME", **kw}

    def f(x, w):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, w, dimension_numbers=dn, **kw)

    for fn in (f, jax.grad(lambda x, w: jnp.sum(f(x, w)), argnums=(0, 1))):
        compiled = jax.jit(fn).lower(jnp.ones(x), jnp.ones(w)).compile()
        ks = roofline.Analyzer(roofline.parse_hlo(compiled.as_text())).kernels()
        xla = compiled.cost_analysis()
        xla = xla[0] if isinstance(xla, list) else xla
        assert sum(k["flops"] for k in ks) == xla["flops"]
        if fn is f:  # one conv: its operands and result
            (conv,) = ks
            assert conv["class"] == "convolution"
            assert conv["bytes"] == xla["bytes accessed"]


def _event_trace(steps=2):
    per_step = [
        ("sm90_xmma_fprop_implicit_gemm_bf16", 100.0),
        ("loop_multiply_fusion_3", 20.0),
        ("sm90_xmma_dgrad_implicit_gemm_bf16", 110.0),
        ("sm90_xmma_wgrad_implicit_gemm_bf16", 120.0),
        ("nvjet_sm90_tst_128x128", 30.0),
        ("slice_fusion", 2.0),
        ("dynamic_update_slice_fusion", 3.0),
        ("loop_add_fusion_7", 1.0),
        ("loop_add_fusion_7", 1.0),
        ("loop_add_fusion_7", 1.0),
        ("MemcpyD2D", 4.0),
    ]
    ev, t = [], 0.0
    for _ in range(steps):
        for name, dur in per_step:
            ev.append([name, None, t, dur])
            t += dur + 1.0
        t += 50.0
    return {"trace": "synthetic", "host_only": False, "events": ev}


def test_kernel_events_map_by_name_and_by_schedule_order():
    rep = roofline.roofline(
        GPU_HLO,
        _event_trace(steps=2),
        {"step_ms": 0.5, "device": "NVIDIA H100 80GB HBM3"},
        steps=2,
        peak_flops=989e12,
        peak_bw=3.35e12,
    )
    rows = {r["name"]: r for r in rep["top"]}
    assert rep["step"]["traced_steps_in_trace"] == 2
    assert rep["trace"]["matched_by"] == {"name": 12, "order": 10}
    assert rows["cudnn-conv.1"]["ms"] == 0.1 and rows["cudnn-conv-bw-filter.3"]["ms"] == 0.12
    assert rows["cublas-gemm.4"]["kernel_names"] == ["nvjet_sm90_tst_128x128"]
    assert rows["r"]["kernel_names"] == ["MemcpyD2D"]  # the copy: only candidate in its gap
    assert rows["loop_add_fusion.7"]["ms"] == 0.003 and rows["loop_add_fusion.7"]["bytes"] == 3072
    conv = rows["cudnn-conv.1"]
    assert conv["bound_by"] == "memory"  # 232 FLOP/byte, under the H100's 295
    assert conv["bound_ms"] == round(CONV_BYTES / 3.35e12 * 1e3, 4)
    assert conv["tflops"] == round(CONV_FLOPS / 1e-4 / 1e12, 2)
    s = rep["step"]
    assert s["kernel_ms"] == pytest.approx(0.392)
    assert s["bound_ms"] <= s["kernel_ms"] <= s["measured_ms"]
    assert set(rep["classes"]) == {"convolution", "matmul", "fusion", "copy/transpose"}
    assert rep["gap"][0]["name"] == "cudnn-conv-bw-filter.3"


def test_cpu_step_end_to_end_and_reanalysis(tmp_path, capsys):
    out = tmp_path / "r"
    tiny = [
        "--config.image_size=32",
        "--config.aug.size=32",
        "--config.data.synthetic.size=32",
        "--config.ssl.proj_hidden_dim=32",
        "--config.ssl.proj_dim=16",
    ]
    args = ["--config", str(ROOT / "configs/quickstart.py"), "--batch-size", "8"]
    args += ["--steps", "2", "--warmup", "1", "--out", str(out), "--md", *tiny]
    assert roofline.main([*args, "--peak-tflops", "2", "--peak-gbps", "100"]) == 0
    printed = capsys.readouterr().out
    rep = json.loads((out / "roofline.json").read_text())
    assert printed.startswith("{") and "| class |" in printed and (out / "roofline.md").exists()
    for key in ("module", "device", "peaks", "step", "hlo", "trace", "classes", "top", "gap"):
        assert key in rep, key
    s = rep["step"]
    assert rep["peaks"]["source"] == "override" and s["traced_steps_in_trace"] == 5
    assert 0 < s["bound_ms"] <= s["measured_ms"] and s["bound_whole_ms"] <= s["bound_ms"]
    assert rep["trace"]["matched_by"]["hlo_op"] > 100
    assert rep["classes"]["convolution"]["flops"] > 0 and rep["hlo"]["flops"] > 0
    top = rep["top"][0]
    for key in ("ms", "bytes", "flops", "gbps", "tflops", "frac_peak_bw", "bound_ms", "gap_ms"):
        assert key in top, key
    # Re-analysis of the saved files; a CPU has no datasheet peaks: no bound.
    assert any("lusjax/" in (r.get("source") or "") for r in rep["gap"])  # source lines
    assert roofline.main(["--from", str(out), "--hlo", "2"]) == 0
    heads = re.findall(r"^# (?!from:)", (out / "gap_hlo.txt").read_text(), flags=re.M)
    assert len(heads) == 2  # two kernels' HLO
    again = json.loads((out / "roofline.json").read_text())
    assert again["step"]["bound_ms"] is None and again["step"]["kernel_ms"] == s["kernel_ms"]


# Two identical fusions deduplicated into one kernel, and a third on its own.
DEDUP_HLO = (ROOT / "tests/data/roofline_dedup.hlo").read_text()


def test_deduplicated_fusions_are_one_row_holding_every_launch_and_its_bytes():
    # XLA:GPU compiles identical fusions once and the trace names every launch after
    # one member of the group (here the first scheduled): its row holds both launches
    # and both instructions' bytes, and no group member is left for order matching.
    ev, t = [], 0.0
    for _ in range(2):  # steps
        for name in ("loop_add_fusion_2", "loop_add_fusion_2", "loop_add_fusion_5"):
            ev.append([name, None, t, 2.0])
            t += 3.0
    rep = roofline.roofline(
        DEDUP_HLO,
        {"trace": "synthetic", "host_only": False, "events": ev},
        {"step_ms": 0.01},
        steps=2,
        peak_flops=989e12,
        peak_bw=3.35e12,
    )
    rows = {r["name"]: r for r in rep["top"]}
    assert set(rows) == {"loop_add_fusion.2", "loop_add_fusion.5"}
    assert rows["loop_add_fusion.2"]["kernels_per_step"] == 2
    assert rows["loop_add_fusion.2"]["bytes"] == 2 * rows["loop_add_fusion.5"]["bytes"] == 2 * 8192
    assert rep["classes"]["fusion"]["bytes"] == rep["hlo"]["bytes"] == 3 * 8192
    assert rep["trace"]["matched_by"] == {"name": 6}


def test_fusion_hlo_prints_a_kernels_body_without_backend_configs():
    text = roofline.fusion_hlo(GPU_HLO, ["loop_multiply_fusion.3", "cudnn-conv.1", "nope"])
    assert "# loop_multiply_fusion.3 = bf16[8,16,16,64]{3,2,1,0} fusion(...) kLoop" in text
    assert "ROOT %multiply.3 = bf16[8,16,16,64]{3,2,1,0} multiply(%param_0.2, %broadcast.1)" in text
    assert "# cudnn-conv.1 = " in text and "# nope: not in the HLO" in text
    assert "backend_config" not in text


def _helper(x):
    return jnp.sin(x) * 2 + 1


def test_kernel_sources_name_the_python_line_and_model_scope():
    text = jax.jit(_helper).lower(jnp.ones(8)).compile().as_text()
    mod = roofline.parse_hlo(text)
    kernels = [
        n for c in mod.computations.values() for n, i in c.instrs.items() if i.opcode == "fusion"
    ]
    src = roofline.kernel_sources(text, kernels)
    line = _helper.__code__.co_firstlineno + 1
    assert any(v.startswith(f"tests/test_roofline.py:{line} _helper x") for v in src.values()), src
    assert roofline._scope("jit(step_fn)/jvp(Network)/backbone/bn1/sub") == "backbone/bn1"
    assert roofline._scope("jit(step_fn)/vmap()/mul") == ""


def test_negative_hlo_count_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        roofline.main(["--from", "somewhere", "--hlo", "-1"])
    assert e.value.code == 2 and "--hlo must be >= 0, not -1" in capsys.readouterr().err
