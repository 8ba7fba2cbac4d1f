"""Markdown table of `benchmarks/compare_peer.sh` output: lusjax beside the torch peer.

    python benchmarks/table.py OUT.jsonl

Rows are keyed by (model, image size, batch); lusjax records are those without
a "framework" key. Ratio = lusjax images/s over the peer's.
"""

from __future__ import annotations

import json
import sys


def _ips(x) -> str:
    return f"{x:,.0f} img/s" if x else "-"


def rows(records: list[dict]) -> list[str]:
    table: dict[tuple, dict] = {}
    for r in records:
        key = (r["model"], r["image_size"], r["batch_size"])
        side = "peer" if "framework" in r else "lusjax"
        table.setdefault(key, {})[side] = r
    header = ("| model, input, batch | torch.compile peer | lusjax | lusjax / peer | lusjax MFU "
              "| peak mem lusjax / peer (GiB) |")
    out = [header, "|---|---|---|---|---|---|"]
    for (model, size, batch), sides in table.items():
        lj, pe = sides.get("lusjax", {}), sides.get("peer", {})
        a, b = lj.get("images_per_s"), pe.get("images_per_s")
        ratio = f"{a / b:.2f}x" if a and b else "-"
        out.append(f"| {model} {size} b{batch} | {_ips(b)} | {_ips(a)} | {ratio} "
                   f"| {lj.get('mfu', '-')} | {lj.get('peak_mem_gib', '-')} / "
                   f"{pe.get('peak_mem_gib', '-')} |")
    return out


def main() -> None:
    with open(sys.argv[1]) as f:
        records = [json.loads(x) for x in f if x.strip().startswith("{")]
    print("\n".join(rows(records)))


if __name__ == "__main__":
    main()
