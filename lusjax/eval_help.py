"""`lusjax eval --help`'s list of protocols and keys, read from configs/eval.py itself.

The help is generated from the config file's source (its `c.KEY = VALUE  #
comment` lines, and the comment block above a section), so it says what the
file says and cannot go stale; reading the text keeps `lusjax --help` fast (no
import of the evaluation code).
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

EVAL_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "eval.py"


def config_keys(path: Path = EVAL_CONFIG) -> list[tuple[str, str, str]]:
    """(key, default as written, comment) of each `c.KEY = ...` in get_config's body,
    before its `if arg ...` variants. A section (`c.linear = ConfigDict({...})`) is
    one row, `linear.*`, listing its keys; the comment is the line's trailing one,
    else the comment block just above it."""
    source = path.read_text()
    lines = source.splitlines()
    fn = next(
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.FunctionDef) and n.name == "get_config"
    )
    rows = []
    for node in fn.body:
        if isinstance(node, ast.If):
            break  # the argument variants: not defaults
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Attribute)
        ):
            continue
        key, value = node.targets[0].attr, node.value
        comment = _trailing_comment(lines[node.lineno - 1])
        if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Dict):
            subkeys = [k.value for k in value.args[0].keys if isinstance(k, ast.Constant)]
            rows.append(
                (
                    f"{key}.*",
                    "{" + ", ".join(subkeys) + "}",
                    _comment_above(lines, node.lineno - 1) or comment,
                )
            )
            continue
        if comment.startswith("..."):  # a continued comment: the one above says what it is
            comment = _comment_above(lines, node.lineno - 1) + " " + comment
        rows.append(
            (
                key,
                ast.get_source_segment(source, value) or "",
                comment or _comment_above(lines, node.lineno - 1),
            )
        )
    return rows


def _trailing_comment(line: str) -> str:
    m = re.search(r"#\s*(.*)$", line)
    return m.group(1).strip() if m and line.split("#")[0].strip() else ""


def _comment_above(lines: list[str], index: int) -> str:
    block = []
    i = index - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        block.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    return " ".join(block)


def protocols(path: Path = EVAL_CONFIG) -> list[str]:
    """The protocol names that configs/eval.py's `protocol` comment lists."""
    comment = {k: c for k, _, c in config_keys(path)}.get("protocol", "")
    return [p.strip() for p in comment.split(",")[0].split("|") if p.strip()]


def epilog(path: Path = EVAL_CONFIG, width: int = 100) -> str:
    """The text after `lusjax eval --help`'s options: examples, protocols, keys."""
    out = [
        "examples:",
        "  lusjax eval --config configs/eval.py --config.encoder=runs/simclr_r50 \\",
        (
            "      --config.data_dir=data/pocus --config.out_dir=runs/simclr_r50/eval "
            "--config.test_split=fold4"
        ),
        (
            "  lusjax eval --config configs/eval.py:quick --config.encoder=runs/quickstart "
            "--config.protocol=linear,knn"
        ),
        "",
        f"protocols (--config.protocol, several joined by ,): {', '.join(protocols(path))}",
        (
            "splits: --config.splits and --config.test_split take split names joined by , or + "
            "(fold0,fold1 = fold0+fold1)"
        ),
        "",
        f"keys of {path.parent.name}/{path.name} (--config.KEY=VALUE; the file documents each):",
    ]
    for key, default, comment in config_keys(path):
        head = f"  {key} = {default}"
        wrapped = textwrap.wrap(comment, width - 42)
        if len(head) > 40:  # the whole default on its own line, the comment below it
            out.append(head)
        else:
            out.append(f"{head:<42}{wrapped.pop(0) if wrapped else ''}".rstrip())
        out += [" " * 42 + more for more in wrapped]
    return "\n".join(out)
