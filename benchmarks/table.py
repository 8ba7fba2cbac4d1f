"""Markdown table of `benchmarks/compare_peer.sh` output: lusjax beside the torch peer.

    python benchmarks/table.py OUT.jsonl

Rows are keyed by (model, image size, batch); lusjax records are those without
a "framework" key: the full step, and (`"device_aug": false`) the step doing the
peer's work (views augmented beforehand, SGD). Ratio = lusjax images/s over the peer's.
"""

from __future__ import annotations

import json
import sys


def _ips(x) -> str:
    return f"{x:,.0f} img/s" if x else "-"


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def rows(records: list[dict]) -> list[str]:
    table: dict[tuple, dict] = {}
    for r in records:
        key = (r["model"], r["image_size"], r["batch_size"])
        side = (
            "peer" if "framework" in r else "lusjax" if r.get("device_aug", True) else "same_work"
        )
        table.setdefault(key, {})[side] = r
    header = (
        "| model, input, batch | torch.compile peer | lusjax full step | ratio "
        "| lusjax, the peer's work | ratio | lusjax MFU | peak mem lusjax / peer (GiB) |"
    )
    out = [header, "|---|---|---|---|---|---|---|---|"]
    for (model, size, batch), sides in table.items():
        lj, sw, pe = (sides.get(k, {}) for k in ("lusjax", "same_work", "peer"))
        a, s, b = (x.get("images_per_s") for x in (lj, sw, pe))
        out.append(
            f"| {model} {size} b{batch} | {_ips(b)} | {_ips(a)} | {_ratio(a, b)} "
            f"| {_ips(s)} | {_ratio(s, b)} | {lj.get('mfu', '-')} "
            f"| {lj.get('peak_mem_gib', '-')} / {pe.get('peak_mem_gib', '-')} |"
        )
    return out


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/table.py OUT.jsonl")
    try:
        with open(sys.argv[1]) as f:
            records = [json.loads(x) for x in f if x.strip().startswith("{")]
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"table.py: cannot read {sys.argv[1]}: {e}") from None
    print("\n".join(rows(records)))


if __name__ == "__main__":
    main()
