"""Roofline of the train step: per-kernel bytes and FLOPs from the optimized HLO, joined
with the kernels' measured times from a profile of the same compiled step (issue #24).

    python benchmarks/roofline.py --config configs/simclr_resnet.py:r18 --batch-size 256 \\
        --out DIR [--md] [--hlo K] [--top 25] [--peak-tflops T --peak-gbps G] \\
        [--config.KEY=VALUE ...]
    python benchmarks/roofline.py --from DIR [--md] [--hlo K] [--peak-tflops T --peak-gbps G]

One process: `lusjax bench step`'s own `bench()` compiles the real step (no copy of
it), times it, then traces `bench_step.PROFILE_STEPS` more steps; the compiled
executable's optimized HLO (`compiled.as_text()`) is the same one the trace ran.
Writes into DIR: step.hlo.txt.gz, bench.json (bench's record), kernels.json.gz (the
device kernel events of the trace, all `--from` needs), roofline.json (printed
too), with --md roofline.md, and with --hlo K gap_hlo.txt (the HLO of the K kernels
with the largest gap). The full jax.profiler trace goes to --profile-dir (default
DIR/profile).

Each listed kernel's `source` says where it comes from: the model scope most of its
instructions' op_names share (e.g. [backbone/layer1_0/bn3]) and the Python line most
of them were traced at, the innermost frame outside jax/flax/optax (from the HLO's
StackFrames table), e.g. "lusjax/data/us_augment.py:435 conv_axis x149".

Per kernel-level HLO instruction (fusion, custom-call, convolution, dot, copy,
collective, ...; bodies of call/while/conditional/async wrappers are walked, a
while body counted `known_trip_count` times):
  bytes  sum of operand and result array bytes (compulsory traffic if nothing
         stays in cache between kernels); a fusion parameter read only through
         slice/dynamic-slice/gather counts what those read, an in-place
         dynamic-update-slice or scatter root counts its updates (not the whole
         buffer); the u8/s8 workspace of library calls is dropped.
  FLOPs  2 x multiply-adds of convolutions (also cuDNN custom-calls: forward,
         backward-input and backward-filter all count the forward conv's work,
         padding taps excluded as XLA's HloCostAnalysis does) and dots (also
         cuBLAS custom-calls and dots/convs inside fusions); elementwise work
         counts 0 (it is ~1000x below its bytes at these peaks).
XLA's own cost analysis is reachable from Python only per module
(`compiled.cost_analysis()`, `lowered.cost_analysis()`, and
`jax._src.lib._jax.hlo_module_cost_analysis`, which bench_step uses): no
per-instruction numbers, and on GPU the compiled one skips cuDNN convs; hence this
parser of `compiled.as_text()`. Its conv/dot FLOPs equal XLA's HloCostAnalysis on
jitted convs and their gradients (tests/test_roofline.py); the report carries XLA's
module totals for comparison (`hlo.xla_*`).
Lower bound of the step = sum over kernels of max(FLOPs / peak FLOP/s, bytes /
peak bandwidth); also the whole-step max(total FLOPs / peak, total bytes / bw).
Peaks: `bench_step.device_peak` (dense bf16: H100 SXM / H200 989 TFLOP/s) and
`bench_step.PEAK_HBM` (H100 SXM 3.35 TB/s, H200 4.8 TB/s), or --peak-tflops /
--peak-gbps; unknown (CPU) without them: bounds are null.

Join with the trace (first device only; everything is per device): a kernel
event whose `hlo_op` arg names a kernel-level instruction maps to it; else one
whose name is an instruction's name with '.'/'-' as '_' (XLA names its fusion
kernels so); the rest (cuDNN/cuBLAS/NCCL kernels inside command buffers, which
carry no `hlo_op`) map by schedule order: between two mapped kernels, to the
instructions scheduled between them that have no kernel of their own name (one
such instruction: all of them; as many as events: one each; otherwise one
"a + b" group row). Events left over are `unattributed` (memsets, ...). Times are
per step (trace total / traced steps). `measured_ms` is bench's timed step
(without the profiler); `busy_ms` the trace's device busy time per step.

GPU commands (one H100, from the repository root, after `source
benchmarks/device_setup.sh`; OUT is the folder that comes back):

    export CUDA_VISIBLE_DEVICES=0
    for m in r18 r50; do
      python3 benchmarks/roofline.py --config configs/simclr_resnet.py:$m \\
        --batch-size 256 --steps 20 --warmup 5 --out $OUT/roofline_$m \\
        --profile-dir /tmp/prof_$m --md > $OUT/roofline_$m.log 2>&1
      tail -60 $OUT/roofline_$m.log
    done
    # optional cross-check of the order-based mapping of library kernels: the same
    # step without command buffers (its kernels carry hlo_op; times differ a little)
    XLA_FLAGS=--xla_gpu_enable_command_buffer= python3 benchmarks/roofline.py \\
      --config configs/simclr_resnet.py:r18 --batch-size 256 --steps 20 --warmup 5 \\
      --out $OUT/roofline_r18_nocb --profile-dir /tmp/prof_r18_nocb --md \\
      > $OUT/roofline_r18_nocb.log 2>&1

Caveats: bytes ignore cache reuse inside a kernel and re-reads (a kernel can
move more than this, e.g. cuDNN re-reading tiles, or reductions reading twice)
and cache hits between kernels (less); the bound ignores launch latency (a few
us per kernel); FLOPs of elementwise/reduction fusions are not counted; an f32
matmul is bounded with the bf16 peak (still a lower bound).
"""

from __future__ import annotations

import argparse
import collections
import functools
import gzip
import importlib.util
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- HLO text

DTYPE_BYTES = {
    "pred": 1,
    "s1": 0.125,
    "u1": 0.125,
    "s2": 0.25,
    "u2": 0.25,
    "s4": 0.5,
    "u4": 0.5,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
    "token": 0,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
# Instructions that launch no kernel of their own (or whose work is elsewhere).
_NO_KERNEL = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "after-all",
    "partition-id",
    "replica-id",
    "opt-barrier",
    "add-dependency",
    "domain",
    "get-dimension-size",
    "set-dimension-size",
    "call",
    "while",
    "conditional",
    "async-start",
}
_COLLECTIVE = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")


def dtype_bytes(dtype: str) -> float:
    if dtype in DTYPE_BYTES:
        return DTYPE_BYTES[dtype]
    m = re.match(r"f(\d+)", dtype)  # f8e4m3fn, f4e2m1fn, f6e3m2fn, ...
    return int(m.group(1)) / 8 if m else 0


def arrays(type_str: str) -> list[tuple[str, list[int]]]:
    """The (dtype, dims) of each array in an HLO type (an array or a tuple)."""
    out = []
    for dtype, dims in _ARRAY.findall(type_str):
        d = [int(x.replace("<=", "")) for x in dims.split(",") if x.strip()]
        out.append((dtype, d))
    return out


def nbytes(type_str: str) -> float:
    return sum(dtype_bytes(t) * math.prod(d) for t, d in arrays(type_str))


def _dims(type_str: str) -> list[int]:
    a = arrays(type_str)
    return a[0][1] if a else []


@dataclass
class Instr:
    name: str
    type: str
    opcode: str
    operands: list[str]
    attrs: str
    index: int | None = None  # parameter number


@dataclass
class Computation:
    name: str
    entry: bool
    instrs: dict[str, Instr] = field(default_factory=dict)
    root: str = ""

    def users(self) -> dict[str, list[Instr]]:
        u: dict[str, list[Instr]] = collections.defaultdict(list)
        for ins in self.instrs.values():
            for o in ins.operands:
                u[o].append(ins)
        return u


@dataclass
class Module:
    name: str
    computations: dict[str, Computation]
    entry: str


def _close(s: str, i: int) -> int:
    """Index of the bracket closing the one at s[i]."""
    depth, j = 0, i
    while j < len(s):
        c = s[j]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return j
        elif c == '"':  # skip strings (backend_config JSON)
            k = s.find('"', j + 1)
            while k > 0 and s[k - 1] == "\\":
                k = s.find('"', k + 1)
            if k < 0:
                break
            j = k
        j += 1
    return len(s) - 1


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


_INSTR = re.compile(r"^\s+(ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(")


def _parse_instr(line: str) -> tuple[Instr, bool] | None:
    m = _INSTR.match(line)
    if not m:
        return None
    root, name, rest = bool(m.group(1)), m.group(2), m.group(3).strip()
    if rest.startswith("("):
        j = _close(rest, 0)
        type_str, rest = rest[: j + 1], rest[j + 1 :].strip()
    else:
        type_str, _, rest = rest.partition(" ")
    m = re.match(r"([\w\-$]+)\(", rest)
    if not m:
        return None
    opcode = m.group(1)
    j = _close(rest, m.end() - 1)
    inner, attrs = rest[m.end() : j], rest[j + 1 :]
    index = None
    if opcode == "parameter":
        index, operands = int(inner.strip() or 0), []
    elif opcode in ("constant", "iota", "rng-get-and-update-state"):
        operands = []
    else:
        operands = [p.split()[-1].lstrip("%") for p in _split_top(inner) if p.split()]
    return Instr(name, type_str, opcode, operands, attrs, index), root


def parse_hlo(text: str) -> Module:
    """Computations and instructions of an HLO module's text (`compiled.as_text()`)."""
    comps: dict[str, Computation] = {}
    module, entry, cur = "", "", None
    for line in text.splitlines():
        if line.startswith("HloModule "):
            module = line.split()[1].rstrip(",")
            continue
        if cur is None:
            if line[:1] not in ("", " ", "\t") and line.rstrip().endswith("{") and "->" in line:
                m = _HEADER.match(line)
                if m:
                    cur = Computation(m.group(2), bool(m.group(1)))
                    comps[cur.name] = cur
                    entry = cur.name if cur.entry else entry
            continue
        if line.strip() == "}":
            cur = None
            continue
        parsed = _parse_instr(line)
        if parsed:
            ins, root = parsed
            cur.instrs[ins.name] = ins
            if root:
                cur.root = ins.name
    if not entry and comps:
        entry = list(comps)[-1]
    return Module(module, comps, entry)


def _attr(attrs: str, key: str) -> str | None:
    m = re.search(rf"(?:^|[\s,]){re.escape(key)}=", attrs)
    if not m:
        return None
    i = m.end()
    if i < len(attrs) and attrs[i] in "{(":
        return attrs[i + 1 : _close(attrs, i)]
    if i < len(attrs) and attrs[i] == '"':
        return attrs[i + 1 : attrs.find('"', i + 1)]
    return re.match(r"[^\s,]*", attrs[i:]).group(0)


def _called(ins: Instr, key: str) -> list[str]:
    v = _attr(ins.attrs, key)
    return [x.strip().lstrip("%") for x in v.split(",") if x.strip()] if v else []


def _window(attrs: str, n: int) -> list[dict]:
    w = _attr(attrs, "window") or ""
    dims = [{"size": 1, "stride": 1, "lo": 0, "hi": 0, "lhs": 1, "rhs": 1} for _ in range(n)]
    for item in w.split():
        key, _, val = item.partition("=")
        for d, v in zip(dims, val.split("x")):
            if key == "size":
                d["size"] = int(v)
            elif key == "stride":
                d["stride"] = int(v)
            elif key == "pad":
                lo, _, hi = v.partition("_")
                d["lo"], d["hi"] = int(lo), int(hi or 0)
            elif key == "lhs_dilate":
                d["lhs"] = int(v)
            elif key == "rhs_dilate":
                d["rhs"] = int(v)
    return dims


def conv_flops(lhs: list[int], rhs: list[int], out: list[int], attrs: str) -> float:
    """2 x multiply-adds of an HLO convolution with these (forward) lhs / rhs / result
    dims; kernel taps over padding or between dilated inputs are not counted."""
    labels = _attr(attrs, "dim_labels") or ""
    if "->" not in labels:
        return 0.0
    lhs_l, rest = labels.split("_", 1)
    rhs_l, out_l = rest.split("->")
    n = sum(c.isdigit() for c in lhs_l)
    window = _window(attrs, n)
    valid = 1
    for s in range(n):
        i_lim = lhs[lhs_l.index(str(s))]
        k_lim = rhs[rhs_l.index(str(s))]
        o_lim = out[out_l.index(str(s))]
        w = window[s]
        count = 0
        for k in range(k_lim):
            for o in range(o_lim):
                u = o * w["stride"] - w["lo"] + k * w["rhs"]
                if u % w["lhs"] == 0 and 0 <= u // w["lhs"] < i_lim:
                    count += 1
        valid *= count
    fgc = int(_attr(attrs, "feature_group_count") or 1)
    bgc = int(_attr(attrs, "batch_group_count") or 1)
    fma = (lhs[lhs_l.index("f")] // fgc) * out[out_l.index("f")] * (lhs[lhs_l.index("b")] // bgc)
    return 2.0 * fma * valid


def dot_flops(lhs: list[int], out: list[int], contracting: list[int]) -> float:
    return 2.0 * math.prod(out) * math.prod(lhs[i] for i in contracting)


def _ints(s: str | None) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", s or "")]


def _result_type(ins: Instr) -> str:
    """The result type without a library call's trailing u8/s8 workspace buffer."""
    if ins.opcode == "custom-call" and ins.type.startswith("("):
        parts = _split_top(ins.type[1:-1])
        if len(parts) > 1 and re.match(r"\s*(/\*.*\*/)?\s*[us]8\[\d*\]", parts[-1]):
            return "(" + ",".join(parts[:-1]) + ")"
    return ins.type


_CONV_KIND = {  # cuDNN call -> which (operand / result) is the forward conv's lhs, rhs, out
    "convBackwardInput": ("r", 1, 0),
    "convBackwardFilter": (0, "r", 1),
}


class Analyzer:
    """Bytes and FLOPs of the kernel-level instructions of a parsed module."""

    def __init__(self, module: Module):
        self.m = module
        self.comps = module.computations

    def _type(self, comp: Computation, name: str) -> str:
        ins = comp.instrs.get(name)
        return ins.type if ins else ""

    def flops(self, ins: Instr, comp: Computation) -> float:
        op = ins.opcode

        def t(i: int) -> list[int]:
            return _dims(self._type(comp, ins.operands[i]))

        if op == "convolution":
            return conv_flops(t(0), t(1), _dims(ins.type), ins.attrs)
        if op == "dot":
            return dot_flops(t(0), _dims(ins.type), _ints(_attr(ins.attrs, "lhs_contracting_dims")))
        if op == "custom-call":
            target = _attr(ins.attrs, "custom_call_target") or ""
            if "cudnn$conv" in target:
                res = _dims(_result_type(ins))
                roles = next((v for k, v in _CONV_KIND.items() if k in target), (0, 1, "r"))
                lhs, rhs, out = (res if r == "r" else t(r) for r in roles)
                return conv_flops(lhs, rhs, out, ins.attrs)
            if "gemm" in target or "matmul" in target:
                m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', ins.attrs)
                return dot_flops(t(0), _dims(_result_type(ins)), _ints(m.group(1) if m else ""))
            return 0.0
        if op == "fusion":
            total = 0.0
            for c in _called(ins, "calls"):
                sub = self.comps.get(c)
                if sub:
                    total += sum(self.flops(i, sub) for i in sub.instrs.values())
            return total
        return 0.0

    def inner_class(self, ins: Instr) -> str | None:
        """ "convolution" or "matmul" if a fusion computes a conv or a dot (also as a
        library call, or in a nested fusion): the first found; else None."""
        for c in _called(ins, "calls"):
            sub = self.comps.get(c)
            for i in sub.instrs.values() if sub else ():
                cls = self.inner_class(i) if i.opcode == "fusion" else self.klass(i)
                if cls in ("convolution", "matmul"):
                    return cls
        return None

    def bytes(self, ins: Instr, comp: Computation) -> float:
        op = ins.opcode
        if op in ("dynamic-update-slice",):
            return 2 * nbytes(self._type(comp, ins.operands[1]))
        if op in ("slice", "dynamic-slice"):
            return 2 * nbytes(ins.type)
        if op == "fusion":
            return self._fusion_bytes(ins, comp)
        ops = dict.fromkeys(ins.operands)  # one read per distinct buffer
        return sum(nbytes(self._type(comp, o)) for o in ops) + nbytes(_result_type(ins))

    def _fusion_bytes(self, ins: Instr, comp: Computation) -> float:
        called = _called(ins, "calls")
        sub = self.comps.get(called[0]) if called else None
        if sub is None:
            return sum(nbytes(self._type(comp, o)) for o in set(ins.operands)) + nbytes(ins.type)
        users = sub.users()
        root = sub.instrs.get(sub.root)
        outs = [sub.instrs.get(o) for o in root.operands] if root.opcode == "tuple" else [root]
        in_place, out_bytes = set(), 0.0
        for o in outs:
            if o is None:
                continue
            if o.opcode in ("dynamic-update-slice", "scatter"):  # in place: the updates
                dus = o.opcode == "dynamic-update-slice"
                n = 1 if dus else (len(o.operands) - 1) // 2  # scatter: n operands, n updates
                updates = o.operands[1:2] if dus else o.operands[-n:]
                out_bytes += sum(nbytes(self._type(sub, u)) for u in updates)
                for name in o.operands[:n]:
                    base = sub.instrs.get(name)
                    while base is not None and base.opcode == "bitcast":
                        base = sub.instrs.get(base.operands[0])
                    if base is not None and base.opcode == "parameter":
                        in_place.add(base.index)
            else:
                out_bytes += nbytes(o.type)
        params = {i.index: i for i in sub.instrs.values() if i.opcode == "parameter"}
        seen, in_bytes = set(), 0.0
        for k, name in enumerate(ins.operands):
            p = params.get(k)
            if name in seen or k in in_place:
                continue
            seen.add(name)
            full = nbytes(self._type(comp, name))
            if p is not None:
                reads = self._slice_reads(p.name, users, sub)
                full = min(full, reads) if reads is not None else full
            in_bytes += full
        return in_bytes + out_bytes

    def _slice_reads(self, name: str, users: dict, sub: Computation) -> float | None:
        """Bytes read of a fused parameter used only through (bitcasts of) slices or
        gathers."""
        total = 0.0
        for u in users.get(name, []):
            if u.opcode in ("slice", "dynamic-slice", "gather") and u.operands[0] == name:
                total += nbytes(u.type)
            elif u.opcode == "bitcast":
                r = self._slice_reads(u.name, users, sub)
                if r is None:
                    return None
                total += r
            else:
                return None
        return total if users.get(name) else None

    def kind(self, ins: Instr) -> str:
        op = ins.opcode
        if op == "custom-call":
            return _attr(ins.attrs, "custom_call_target") or op
        if op == "fusion":
            return "fusion:" + (_attr(ins.attrs, "kind") or "")
        return op

    def klass(self, ins: Instr) -> str:
        """profile_top's classes, from the instruction rather than the kernel name."""
        op, kind = ins.opcode, self.kind(ins).lower()
        if op.startswith(_COLLECTIVE) or "nccl" in kind:
            return "collective"
        if op == "convolution" or (op == "custom-call" and "conv" in kind):
            return "convolution"
        if op == "dot" or (op == "custom-call" and ("gemm" in kind or "matmul" in kind)):
            return "matmul"
        if op == "fusion":
            return self.inner_class(ins) or "fusion"
        if op in ("copy", "copy-start", "transpose"):
            return "copy/transpose"
        return "other"

    def kernels(self) -> list[dict]:
        """Kernel-level instructions in schedule order, with bytes, FLOPs and how many
        times one step runs them."""
        out: list[dict] = []

        def visit(comp_name: str, mult: float, seen: tuple) -> None:
            comp = self.comps.get(comp_name)
            if comp is None or comp_name in seen:
                return
            seen = (*seen, comp_name)
            for ins in comp.instrs.values():
                op = ins.opcode
                if op == "while":
                    m = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.attrs)
                    n = int(m.group(1)) if m else 1
                    for b in _called(ins, "body"):
                        visit(b, mult * n, seen)
                    for c in _called(ins, "condition"):
                        visit(c, mult * (n + 1), seen)
                    continue
                if op == "call" or op == "async-start":
                    for c in _called(ins, "to_apply") + _called(ins, "calls"):
                        visit(c, mult, seen)
                    continue
                if op == "conditional":
                    names = _called(ins, "branch_computations")
                    names += _called(ins, "true_computation") + _called(ins, "false_computation")
                    for c in names:
                        visit(c, mult, seen)
                    continue
                if op in _NO_KERNEL or op.endswith(("-done", "-update")):
                    continue
                out.append(
                    {
                        "name": ins.name,
                        "opcode": op,
                        "kind": self.kind(ins),
                        "class": self.klass(ins),
                        "count": mult,
                        "bytes": self.bytes(ins, comp) * mult,
                        "flops": self.flops(ins, comp) * mult,
                        "pos": len(out),
                        # XLA:GPU compiles identical fusions once (same deduplicated_name);
                        # the trace names each launch after one member of the group.
                        "dedup": _dedup(ins.attrs),
                    }
                )

        visit(self.m.entry, 1, ())
        return out

    def containers(self) -> set[str]:
        """Names of control-flow instructions (their trace events wrap their bodies')."""
        return {
            i.name
            for c in self.comps.values()
            for i in c.instrs.values()
            if i.opcode in ("call", "while", "conditional", "async-start")
        }


# --------------------------------------------------------------------------- trace


@functools.cache
def _profile_top():
    spec = importlib.util.spec_from_file_location("profile_top", _HERE / "profile_top.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trace_events(folder: str, module: str) -> dict:
    """The step's kernel events of the newest trace under `folder`: the first device's
    (all of them, less those another module's `hlo_module` arg names); on a trace
    without device timelines (CPU), the host events that carry this module's `hlo_op`
    (those of the first `device_ordinal`)."""
    trace, kernels, device = _profile_top()._events(folder)
    if device:
        pid = min(device)
        kernels = [
            e
            for e in kernels
            if e.get("pid") == pid and e.get("args", {}).get("hlo_module", module) == module
        ]
    else:
        kernels = [
            e
            for e in kernels
            if e.get("args", {}).get("hlo_op") and e["args"].get("hlo_module", module) == module
        ]
        ordinals = {e["args"].get("device_ordinal") for e in kernels}
        first = min(ordinals, key=lambda o: (o is None, int(o) if str(o).isdigit() else 0))
        kernels = [e for e in kernels if e["args"].get("device_ordinal") == first]
    rows = [
        [e.get("name", "?"), e.get("args", {}).get("hlo_op"), float(e["ts"]), float(e["dur"])]
        for e in kernels
    ]
    rows.sort(key=lambda r: r[2])
    return {"trace": trace, "host_only": not device, "events": rows}


def _dedup(attrs: str) -> str | None:
    m = re.search(r'deduplicated_name="([^"]+)"', attrs)
    return m.group(1) if m else None


def _norm(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def join(kernels: list[dict], events: dict, containers: set[str]) -> tuple[dict, dict]:
    """Assigns each event to a kernel row name (an instruction, an "a + b" group of
    them, or None); returns ({row: [us, n_events, Counter(kernel names)]}, match counts)."""
    by_name = {k["name"]: k for k in kernels}
    by_norm = {_norm(k["name"]): k for k in kernels}
    evs = events["events"]
    host_only = events["host_only"]
    assigned: list[str | None] = [None] * len(evs)
    how = collections.Counter()
    keep = [True] * len(evs)
    for i, (name, hlo_op, _, _) in enumerate(evs):
        k = by_name.get(hlo_op) if hlo_op else None
        if k is not None:
            assigned[i] = k["name"]
            how["hlo_op"] += 1
            continue
        if host_only:  # CPU: a thunk event; control flow wraps its body's events
            keep[i] = hlo_op not in containers
            how["dropped (control flow)"] += not keep[i]
            continue
        k = by_name.get(name) or by_norm.get(_norm(name))
        if k is not None:
            assigned[i] = k["name"]
            how["name"] += 1
    named = {a for a in assigned if a}
    named_groups = {by_name[a].get("dedup") or a for a in named}
    cands = [k for k in kernels if (k.get("dedup") or k["name"]) not in named_groups]
    last = max((k["pos"] for k in kernels), default=0) + 1
    i = 0
    while i < len(evs):  # runs of unmatched events between two matched ones
        if assigned[i] is not None or not keep[i] or host_only:
            i += 1
            continue
        j = i
        while j < len(evs) and assigned[j] is None:
            j += 1
        p = by_name[assigned[i - 1]]["pos"] if i > 0 and assigned[i - 1] else -1
        q = by_name[assigned[j]]["pos"] if j < len(evs) else last
        if p < q:
            gap = [k for k in cands if p < k["pos"] < q]
        else:  # across a step boundary
            gap = [k for k in cands if k["pos"] > p] + [k for k in cands if k["pos"] < q]
        run = list(range(i, j))
        if len(gap) == 1:
            for r in run:
                assigned[r] = gap[0]["name"]
        elif gap and len(gap) == len(run):
            for r, k in zip(run, gap):
                assigned[r] = k["name"]
        elif gap:
            group = " + ".join(k["name"] for k in gap)
            for r in run:
                assigned[r] = group
        how["order" if gap else "unattributed"] += len(run)
        i = j
    rows: dict = collections.defaultdict(lambda: [0.0, 0, collections.Counter()])
    for (name, _, _, dur), a, k in zip(evs, assigned, keep):
        if not k:
            continue
        row = rows[a]
        row[0] += dur
        row[1] += 1
        row[2][name] += 1
    return dict(rows), dict(how)


def _busy_us(evs: list) -> float:
    iv = sorted((ts, ts + dur) for _, _, ts, dur in evs)
    busy, lo, hi = 0.0, None, None
    for a, b in iv:
        if hi is None or a > hi:
            busy += (hi - lo) if hi is not None else 0.0
            lo, hi = a, b
        hi = max(hi, b)
    return busy + ((hi - lo) if hi is not None else 0.0)


# --------------------------------------------------------------------------- roofline


def _r(x, nd=4):
    return None if x is None else round(x, nd)


def _metrics(ms: float, nbytes_: float, flops: float, pf: float | None, bw: float | None):
    bound = max(flops / pf, nbytes_ / bw) * 1e3 if pf and bw else None
    s = ms / 1e3
    return {
        "ms": _r(ms),
        "bytes": int(nbytes_),
        "flops": int(flops),
        "gbps": _r(nbytes_ / s / 1e9, 1) if s > 0 else None,
        "tflops": _r(flops / s / 1e12, 2) if s > 0 else None,
        "frac_peak_bw": _r(nbytes_ / s / bw) if s > 0 and bw else None,
        "frac_peak_flops": _r(flops / s / pf) if s > 0 and pf else None,
        "bound_ms": _r(bound),
        "bound_by": (
            None if bound is None else ("compute" if flops / pf > nbytes_ / bw else "memory")
        ),
        "gap_ms": _r(ms - bound) if bound is not None else None,
    }


def roofline(
    hlo_text: str,
    events: dict,
    bench: dict,
    steps: int,
    peak_flops: float | None,
    peak_bw: float | None,
    top: int = 25,
    xla_cost: dict | None = None,
) -> dict:
    """The roofline report (see the module docstring) from the step's optimized HLO,
    its kernel events, bench's record and the traced step count."""
    module = parse_hlo(hlo_text)
    an = Analyzer(module)
    kernels = an.kernels()
    by_name = {k["name"]: k for k in kernels}
    rows, how = join(kernels, events, an.containers())
    # A row named after a kernel holds its whole deduplication group (the launches of
    # one compiled kernel).
    members = collections.defaultdict(list)
    for k in kernels:
        members[k.get("dedup") or k["name"]].append(k)

    def group(name: str) -> list[dict]:
        return members[by_name[name].get("dedup") or name]

    # Traced steps: how many events the step's run-once kernels have (most of them).
    once = [
        n
        for key, (_, n, _) in rows.items()
        if key in by_name and sum(k["count"] for k in group(key)) == 1
    ]
    inferred = collections.Counter(once).most_common(1)[0][0] if once else None
    steps_given, steps = steps, inferred or steps
    pf, bw = peak_flops, peak_bw
    out_rows = []
    # A row of several kernels (order matching that could not pair them one to one)
    # takes the bytes and FLOPs of those of its kernels no other row has counted:
    # runs across a step boundary can name the same candidates many times.
    # Each instruction's bytes and FLOPs are counted in one row only (rows of one
    # kernel first).
    counted: set = set()
    for key, (us, n, names) in sorted(rows.items(), key=lambda kv: " + " in (kv[0] or "")):
        parts = key.split(" + ") if key else []
        ks = [m for p in parts if p in by_name for m in group(p)]
        ks = [k for k in dict.fromkeys(k["name"] for k in ks) if k not in counted]
        counted.update(ks)
        ks = [by_name[k] for k in ks]
        classes = {k["class"] for k in ks}
        out_rows.append(
            {
                "name": key or "unattributed",
                "class": (classes.pop() if len(classes) == 1 else "mixed")
                if ks
                else _profile_top().classify(names.most_common(1)[0][0]),
                "kind": " + ".join(dict.fromkeys(k["kind"] for k in ks)) or None,
                **_metrics(
                    us / 1e3 / steps,
                    sum(k["bytes"] for k in ks),
                    sum(k["flops"] for k in ks),
                    pf,
                    bw,
                ),
                "kernels_per_step": _r(n / steps, 2),
                "kernel_names": [x[:100] for x, _ in names.most_common(3)],
                "_counted": [k["name"] for k in ks],  # for the class bounds; dropped below
            }
        )
    seen = {p for r in out_rows for p in r["name"].split(" + ")} | counted
    unseen = [k for k in kernels if k["name"] not in seen]
    tot_bytes = sum(k["bytes"] for k in kernels)
    tot_flops = sum(k["flops"] for k in kernels)
    bound = sum(max(k["flops"] / pf, k["bytes"] / bw) for k in kernels) * 1e3 if pf and bw else None
    measured = bench.get("step_ms")
    kernel_ms = sum(r["ms"] for r in out_rows)
    busy_ms = _busy_us(events["events"]) / 1e3 / steps
    classes: dict = {}
    for cls in sorted({r["class"] for r in out_rows} | {k["class"] for k in unseen}):
        rs = [r for r in out_rows if r["class"] == cls]
        us_k = [k for k in unseen if k["class"] == cls]
        classes[cls] = {
            "rows": len(rs),
            **_metrics(
                sum(r["ms"] for r in rs),
                sum(r["bytes"] for r in rs) + sum(k["bytes"] for k in us_k),
                sum(r["flops"] for r in rs) + sum(k["flops"] for k in us_k),
                pf,
                bw,
            ),
        }
    if pf and bw:  # a class's bound: the sum of its kernels' own bounds
        for cls, c in classes.items():
            ks = [by_name[n] for r in out_rows if r["class"] == cls for n in r["_counted"]]
            ks += [k for k in unseen if k["class"] == cls]
            mem = sum(k["bytes"] / bw for k in ks if k["bytes"] / bw >= k["flops"] / pf) * 1e3
            comp = sum(k["flops"] / pf for k in ks if k["bytes"] / bw < k["flops"] / pf) * 1e3
            c.update(
                bound_ms=_r(mem + comp),
                bound_by="compute" if comp > mem else "memory",
                gap_ms=_r(c["ms"] - mem - comp),
            )
    for c in classes.values():
        c["share"] = _r(c["ms"] / kernel_ms, 3) if kernel_ms else None
    for r in out_rows:
        del r["_counted"]
    by_time = sorted(out_rows, key=lambda r: -r["ms"])
    gap = sorted(out_rows, key=lambda r: -(r["gap_ms"] if r["gap_ms"] is not None else r["ms"]))
    total_gap = (measured - bound) if bound is not None and measured else None
    for r in gap:
        r["gap_share"] = _r(r["gap_ms"] / total_gap, 3) if total_gap and r["gap_ms"] else None
    small = [
        r for r in out_rows if r["kernels_per_step"] and r["ms"] / r["kernels_per_step"] < 0.01
    ]
    shown = {r["name"] for r in by_time[:top] + gap[:top]}
    src = kernel_sources(hlo_text, sorted({n.split(" + ")[0] for n in shown}), 1, module)
    for r in out_rows:
        if r["name"] in shown:
            r["source"] = src.get(r["name"].split(" + ")[0], "")
    return {
        "module": module.name,
        "config": bench.get("config"),
        "model": bench.get("model"),
        "method": bench.get("method"),
        "batch_size": bench.get("batch_size"),
        "image_size": bench.get("image_size"),
        "dtype": bench.get("dtype"),
        "device": bench.get("device"),
        "devices": bench.get("devices"),
        "peaks": {
            "tflops": _r(pf / 1e12, 1) if pf else None,
            "gbps": _r(bw / 1e9, 1) if bw else None,
            "ridge_flops_per_byte": _r(pf / bw, 1) if pf and bw else None,
            "source": bench.get("peak_source"),
        },
        "step": {
            "measured_ms": measured,
            "images_per_s": bench.get("images_per_s"),
            "traced_steps": steps_given,
            "traced_steps_in_trace": inferred,
            "kernel_ms": _r(kernel_ms),
            "busy_ms": _r(busy_ms),
            "idle_ms": _r(measured - busy_ms) if measured else None,
            "bound_ms": _r(bound),
            "bound_whole_ms": _r(max(tot_flops / pf, tot_bytes / bw) * 1e3) if pf and bw else None,
            "compute_ms": _r(tot_flops / pf * 1e3) if pf else None,
            "memory_ms": _r(tot_bytes / bw * 1e3) if bw else None,
            "bound_over_measured": _r(bound / measured) if bound is not None and measured else None,
            "gap_ms": _r(total_gap),
        },
        "hlo": {
            "kernels": len(kernels),
            "bytes": int(tot_bytes),
            "flops": int(tot_flops),
            "xla_lowered_flops": bench.get("lowered_flops"),
            "xla_compiled_cost": xla_cost,
            "not_in_trace": len(unseen),
            "not_in_trace_bound_ms": (
                _r(sum(max(k["flops"] / pf, k["bytes"] / bw) for k in unseen) * 1e3)
                if pf and bw
                else None
            ),
        },
        "trace": {
            "path": events.get("trace"),
            "events": len(events["events"]),
            "matched_by": how,
            "rows": len(out_rows),
            "rows_under_10us_per_kernel": len(small),
        },
        "classes": classes,
        "top": by_time[:top],
        "gap": [
            {
                k: r[k]
                for k in (
                    "name",
                    "class",
                    "ms",
                    "bound_ms",
                    "gap_ms",
                    "gap_share",
                    "bound_by",
                    "source",
                )
            }
            for r in gap[:top]
        ],
    }


def markdown(rep: dict, top: int = 15) -> str:
    s, p = rep["step"], rep["peaks"]
    lines = [
        (
            f"**{rep.get('method')} {rep.get('model')} b{rep.get('batch_size')} "
            f"@{rep.get('image_size')} {rep.get('dtype')} on {rep.get('device')}** "
            f"(peaks {p['tflops']} TFLOP/s, {p['gbps']} GB/s)"
        ),
        "",
        (
            f"measured {s['measured_ms']} ms/step; kernels {s['kernel_ms']} ms, busy "
            f"{s['busy_ms']} ms; lower bound {s['bound_ms']} ms (per kernel) / "
            f"{s['bound_whole_ms']} ms (whole step: compute {s['compute_ms']}, memory "
            f"{s['memory_ms']}); bound/measured {s['bound_over_measured']}"
        ),
        "",
        "| class | ms | share | GB/s | TFLOP/s | bound ms | gap ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, v in sorted(rep["classes"].items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(
            f"| {c} | {v['ms']} | {v['share']} | {v['gbps']} | {v['tflops']} | "
            f"{v['bound_ms']} | {v['gap_ms']} |"
        )
    lines += [
        "",
        "| kernel | class | ms | GB/s | TFLOP/s | % of roof | bound by | gap ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["top"][:top]:
        roof = (
            round(100 * r["bound_ms"] / r["ms"], 1)
            if r["bound_ms"] is not None and r["ms"]
            else None
        )
        lines.append(
            f"| {r['name'][:60]} | {r['class']} | {r['ms']} | {r['gbps']} | {r['tflops']} "
            f"| {roof} | {r['bound_by']} | {r['gap_ms']} |"
        )
    if rep["step"]["gap_ms"] is not None:
        lines += [
            "",
            f"where the {rep['step']['gap_ms']} ms between measured and bound go (top rows):",
            "",
            "| kernel | class | ms | bound ms | gap ms | share of gap | from (scope, source) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name'][:60]} | {r['class']} | {r['ms']} | {r['bound_ms']} | {r['gap_ms']} "
            f"| {r['gap_share']} | {r.get('source') or ''} |"
            for r in rep["gap"][:top]
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _peaks(args, device: str | None) -> tuple[float | None, float | None, str]:
    from lusjax.app import bench_step

    pf = args.peak_tflops * 1e12 if args.peak_tflops else None
    bw = args.peak_gbps * 1e9 if args.peak_gbps else None
    src = "override" if pf or bw else "datasheet"
    if device:
        pf = pf or bench_step.device_peak(device)
        bw = bw or bench_step.device_peak(device, bench_step.PEAK_HBM)
    return pf, bw, src if pf and bw else "unknown"


def run(args, overrides) -> Path:
    """Compiles, times and traces the step with bench_step; saves what `--from` reads."""
    from lusjax import config as config_lib
    from lusjax.app import bench_step

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile_dir = args.profile_dir or str(out / "profile")
    over = list(overrides) + [("workdir", "/tmp/lusjax-bench")]
    if args.batch_size:
        over.append(("batch_size", str(args.batch_size)))
    cfg = config_lib.load(args.config, over)
    seen = {}

    def keep(lowered, compiled):
        seen["hlo"] = compiled.as_text()
        try:
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            seen["cost"] = {k: cost[k] for k in ("flops", "bytes accessed") if k in cost}
        except Exception:
            seen["cost"] = None
        seen["lowered_flops"] = bench_step._flops(lowered)

    (rec,) = bench_step.bench(
        cfg,
        steps=args.steps,
        warmup=args.warmup,
        inputs=["synthetic"],
        profile_dir=profile_dir,
        on_compiled=keep,
    )
    module = parse_hlo(seen["hlo"]).name
    with gzip.open(out / "step.hlo.txt.gz", "wt") as f:
        f.write(seen["hlo"])
    rec = {
        **rec,
        "config": args.config,
        "lowered_flops": seen["lowered_flops"],
        "xla_cost_analysis": seen["cost"],
        "traced_steps": bench_step.PROFILE_STEPS,
    }
    (out / "bench.json").write_text(json.dumps(rec, indent=1))
    with gzip.open(out / "kernels.json.gz", "wt") as f:
        json.dump(trace_events(profile_dir, module), f)
    return out


def _read_hlo(folder: Path) -> str:
    if (folder / "step.hlo.txt").exists():
        return (folder / "step.hlo.txt").read_text()
    with gzip.open(folder / "step.hlo.txt.gz", "rt") as f:
        return f.read()


def _bodies(text: str) -> dict[str, list[str]]:
    """Each computation's lines (header to closing brace) by name."""
    bodies, cur = {}, None
    for line in text.splitlines():
        if cur is None:
            m = _HEADER.match(line)
            if m and line.rstrip().endswith("{") and "->" in line:
                cur = m.group(2)
                bodies[cur] = [line]
            continue
        bodies[cur].append(line)
        if line.strip() == "}":
            cur = None
    return bodies


_INSTALLED = ("/site-packages/", "/dist-packages/", "/jax/_src/", "/flax/", "/optax/")


def _short_path(path: str) -> str:
    for top in ("lusjax/", "benchmarks/", "configs/", "tests/"):
        i = path.rfind("/" + top)
        if i >= 0:
            return path[i + 1 :]
    return path.rsplit("/", 1)[-1]


def stack_sources(text: str) -> dict[int, str]:
    """stack_frame_id -> "path:line function" of the frame's innermost caller outside
    installed packages (jax, flax, optax...), from the optimized HLO's FileNames,
    FunctionNames, FileLocations and StackFrames tables. A frame's printed
    parent_frame_id is its parent's id + 1 (0: none)."""
    tables: dict[str, dict[int, str]] = {}
    cur = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            cur = tables.setdefault(line, {})
            continue
        m = re.match(r"^(\d+) (.*)$", line) if cur is not None else None
        if not m:
            cur = None
            continue
        cur[int(m.group(1))] = m.group(2)

    def fields(v: str) -> dict[str, int]:
        return {k: int(x) for k, x in re.findall(r"(\w+)=(-?\d+)", v)}

    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    funcs = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locs = {k: fields(v) for k, v in tables.get("FileLocations", {}).items()}
    frames = {k: fields(v) for k, v in tables.get("StackFrames", {}).items()}
    out = {}
    for fid in frames:
        f, seen = fid, set()
        while f in frames and f not in seen:
            seen.add(f)
            loc = locs.get(frames[f].get("file_location_id"), {})
            path = files.get(loc.get("file_name_id"), "")
            if path and not any(x in path for x in _INSTALLED):
                fn = funcs.get(loc.get("function_name_id"), "?")
                out[fid] = f"{_short_path(path)}:{loc.get('line')} {fn}"
                break
            f = frames[f].get("parent_frame_id", 0) - 1
    return out


def _instr(mod: Module, name: str) -> Instr | None:
    """The instruction of that name in any computation of the module."""
    return next((c.instrs[name] for c in mod.computations.values() if name in c.instrs), None)


def kernel_sources(
    text: str, names: list[str], top: int = 2, mod: Module | None = None, bodies=None
) -> dict[str, str]:
    """Per kernel: the source lines (`stack_sources`) its HLO instructions come from,
    the most frequent first with their counts, e.g. "lusjax/models/layers.py:262
    _blocks_bwd x9; ..."; empty when the HLO has no stack frames. `mod` and `bodies`:
    the text's `parse_hlo` and `_bodies`, where the caller has them already."""
    mod = mod or parse_hlo(text)
    bodies = bodies if bodies is not None else _bodies(text)
    where, found = stack_sources(text), {}
    for name in names:
        ins = _instr(mod, name)
        if ins is None:
            continue
        lines, todo, done = [ins.attrs], list(_called(ins, "calls")), set()
        while todo:  # the fusion's body and what it calls in turn
            c = todo.pop()
            if c in done:
                continue
            done.add(c)
            lines += bodies.get(c, [])
            todo += [x for b in bodies.get(c, []) for x in re.findall(r"calls=%?([\w.\-]+)", b)]
        ids = [int(x) for ln in lines for x in re.findall(r"stack_frame_id=(\d+)", ln)]
        counts = collections.Counter(where[i] for i in ids if i in where)
        scopes = collections.Counter(
            sc for ln in lines for op in re.findall(r'op_name="([^"]*)"', ln) if (sc := _scope(op))
        )
        text_ = "; ".join(f"{src} x{n}" for src, n in counts.most_common(top))
        if scopes:
            text_ = f"[{scopes.most_common(1)[0][0]}] {text_}"
        found[name] = text_
    return found


def _scope(op_name: str) -> str:
    """The model scope of an op ("jit(step_fn)/jvp(Network)/backbone/bn1/sub" ->
    "backbone/bn1"): its path without transformation wrappers and the op itself."""
    parts = [p for p in op_name.split("/")[:-1] if "(" not in p]
    return "/".join(parts)


def fusion_hlo(text: str, names: list[str]) -> str:
    """The HLO text of each named instruction and of the computation it calls (a
    fusion's body), to read what a slow kernel computes, under the source lines it
    comes from (`kernel_sources`); metadata kept, backend configs dropped."""
    mod, bodies, out = parse_hlo(text), _bodies(text), []
    sources = kernel_sources(text, names, top=5, mod=mod, bodies=bodies)
    for name in names:
        ins = _instr(mod, name)
        if ins is None:
            out.append(f"# {name}: not in the HLO\n")
            continue
        out.append(f"# {name} = {ins.type} {ins.opcode}(...) {_attr(ins.attrs, 'kind') or ''}")
        if sources.get(name):
            out.append(f"# from: {sources[name]}")
        for callee in _called(ins, "calls"):
            body = "\n".join(bodies.get(callee, []))
            out.append(re.sub(r",? backend_config=\{.*?\}(?=,|$)", "", body, flags=re.M))
        out.append("")
    return "\n".join(out)


def analyse(folder: Path, args) -> dict:
    bench = json.loads((folder / "bench.json").read_text())
    with gzip.open(folder / "kernels.json.gz", "rt") as f:
        events = json.load(f)
    pf, bw, src = _peaks(args, bench.get("device"))
    hlo = _read_hlo(folder)
    rep = roofline(
        hlo,
        events,
        {**bench, "peak_source": src},
        bench.get("traced_steps", 5),
        pf,
        bw,
        top=args.top,
        xla_cost=bench.get("xla_cost_analysis"),
    )
    (folder / "roofline.json").write_text(json.dumps(rep, indent=1))
    if args.md:
        (folder / "roofline.md").write_text(markdown(rep) + "\n")
    if args.hlo:
        # By gap; without peaks (no bound) by time.
        top = sorted(
            rep["top"], key=lambda k: -(k["gap_ms"] if k["gap_ms"] is not None else k["ms"])
        )
        names = [k["name"] for k in top[: args.hlo]]
        (folder / "gap_hlo.txt").write_text(fusion_hlo(hlo, names))
    return rep


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from lusjax import config as config_lib

    overrides, rest = config_lib.split_overrides(argv)
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/simclr_resnet.py:r18")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="", help="folder for the step's HLO, events and report")
    p.add_argument("--profile-dir", default="", help="jax.profiler trace (default OUT/profile)")
    p.add_argument("--from", dest="src", default="", help="re-analyse a folder --out wrote")
    p.add_argument("--top", type=int, default=25, help="kernels listed (default 25)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="override peak TFLOP/s")
    p.add_argument("--peak-gbps", type=float, default=0.0, help="override peak GB/s")
    p.add_argument("--md", action="store_true", help="also print (and save) a Markdown table")
    p.add_argument(
        "--hlo",
        type=int,
        default=0,
        metavar="K",
        help="save the HLO of the K kernels with the largest gap to DIR/gap_hlo.txt",
    )
    args = p.parse_args(rest)
    if not args.src and not args.out:
        p.error("give --out DIR (run the step) or --from DIR (re-analyse)")
    if args.hlo < 0:
        p.error(f"--hlo must be >= 0, not {args.hlo}")
    folder = Path(args.src) if args.src else run(args, overrides)
    rep = analyse(folder, args)
    print(json.dumps(rep, indent=1))
    if args.md:
        print(markdown(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
