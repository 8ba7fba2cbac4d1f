"""The `lusjax ...` commands of README.md and launch/README.md run, in order, as written.

How a README marks its commands for this test (keep it this simple):

- Every line of a ```bash (or ```sh / ```shell) block is read; `\\` continuations
  are joined, `# comments` dropped, and each `lusjax ...` command of the line
  (also after `&&`, `;`, `|`) is collected. Other programs (pip, bash, gcloud)
  are ignored.
- HTML comments just before a block, one or more (each may span lines):
    <!-- test: ARGS -->              ARGS go to every lusjax command of the block
    <!-- test SUBCOMMAND: ARGS -->   ... to its `lusjax SUBCOMMAND` commands only
    <!-- test: skip (why) -->        the block's commands are not run; say why
    <!-- test SUBCOMMAND: skip (why) -->
  An option in ARGS replaces the command's own (`--size 32` replaces
  `--size 224`, `--config.batch_size=16` replaces `--config.batch_size=512`,
  `--config X` replaces the config file); others are appended. Use this for
  tiny sizes and steps so the whole file runs in about a minute on 2 CPU cores,
  and `skip` only for what cannot run in CI (GPUs, SLURM, TPU pods, buckets).
- A ```python block whose first line is `# PATH` (e.g. `# configs/sweeps/x.py`) is
  written to PATH first, so commands may use the file the README shows.

Every command, run or skipped, is first parsed and its config resolved with the
README's own arguments (`cli_commands.parse_check`): a misspelt key or a config
that does not exist fails even where the test substitutes or skips. Then the
commands run in order through `lusjax.cli.main` (in this process: no start-up
cost per command) in a temporary folder that has the repository's `configs/`
and, beside it, `../shared` (the real one where it exists), with LUSJAX_CACHE
in the temporary folder. A command that needs ../shared/data/pocus_dev is
skipped when that is absent, except `lusjax prep --input ../shared/...`, which
is replaced by a small synthetic dataset with the same --out and --folds so the
commands after it still run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
from pathlib import Path

import cli_commands
import pytest

from lusjax import cli

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
POCUS = "../shared/data/pocus_dev"
DOCS = ["README.md", "launch/README.md"]
_MARKER = re.compile(r"<!--\s*test(?:\s+([\w-]+))?\s*:(.*?)-->", re.DOTALL)


@dataclasses.dataclass
class Command:
    doc: str
    line: int
    argv: list[str]  # as the README writes it (after `lusjax`)
    run_argv: list[str] | None = None  # with the test's arguments; None = skipped
    skip: str = ""  # why it is not run


def parse_doc(text: str, doc: str = "README.md") -> tuple[list[Command], dict[str, str]]:
    """(the commands of `text`'s shell blocks with the test's arguments applied,
    {path: content} of the files its python blocks name)."""
    lines = text.splitlines()
    commands, files, markers, i = [], {}, [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("<!--"):
            end = i
            while "-->" not in lines[end]:
                end += 1
            comment = "\n".join(lines[i : end + 1])
            markers += [
                (m.group(1), " ".join(m.group(2).split())) for m in _MARKER.finditer(comment)
            ]
            i = end + 1
            continue
        if stripped.startswith("```") and len(stripped) > 3:
            lang, start = stripped[3:].strip(), i + 1
            end = start
            while not lines[end].strip().startswith("```"):
                end += 1
            body = lines[start:end]
            if lang in ("bash", "sh", "shell"):
                commands += _block_commands(body, start + 1, markers, doc)
            elif lang == "python" and body and re.match(r"#\s*\S+\.py\s*$", body[0].strip()):
                files[body[0].strip().lstrip("#").strip()] = "\n".join(body) + "\n"
            markers, i = [], end + 1
            continue
        if stripped:
            markers = []  # markers belong to the block right below them
        i += 1
    return commands, files


def _block_commands(body: list[str], first_line: int, markers, doc: str) -> list[Command]:
    out, logical, at = [], "", first_line
    for n, raw in enumerate(body, first_line):
        if not logical:
            at = n
        logical += raw.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        for argv in cli_commands.split_commands(logical):
            cmd = Command(doc, at, argv)
            sub = argv[0] if argv else ""
            run = list(argv)
            for target, spec in markers:
                if target not in (None, sub):
                    continue
                if spec.startswith("skip"):
                    cmd.skip = spec[4:].strip(" ()") or "(no reason given)"
                else:
                    run = apply_args(run, shlex.split(spec))
            cmd.run_argv = None if cmd.skip else run
            out.append(cmd)
        logical = ""
    return out


def apply_args(argv: list[str], extra: list[str]) -> list[str]:
    """`argv` with each option of `extra` replacing the same option, else appended."""
    argv = list(argv)
    i = 0
    while i < len(extra):
        opt = extra[i]
        value = None
        if "=" in opt and opt.startswith("--"):
            opt, value = opt.split("=", 1)
            token = [f"{opt}={value}"]
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = extra[i + 1]
            token = [opt, value]
            i += 2
        else:
            token = [opt]
            i += 1
        for j, a in enumerate(argv):
            if a == opt or a.startswith(opt + "="):
                if (
                    a == opt
                    and value is not None
                    and j + 1 < len(argv)
                    and not argv[j + 1].startswith("--")
                ):
                    argv[j : j + 2] = token
                else:
                    argv[j : j + 1] = token
                break
        else:
            argv += token
    return argv


def test_markers_and_continuations_are_read():
    text = "\n".join(
        [
            "<!-- test prep: --size 32 -->",
            "<!-- test sweep-report: skip (no bucket) -->",
            "```bash",
            "lusjax prep --input x --size 224 \\",
            "    --out d  # a comment",
            "pip install -e . && lusjax sweep-report gs://b",
            "```",
            "",
            "```python",
            "# configs/sweeps/mine.py",
            "X = 1",
            "```",
            "```bash",
            "lusjax prep --synthetic 3 --size 64 --out e",
            "```",
        ]
    )
    commands, files = parse_doc(text)
    assert [c.argv for c in commands] == [
        ["prep", "--input", "x", "--size", "224", "--out", "d"],
        ["sweep-report", "gs://b"],
        ["prep", "--synthetic", "3", "--size", "64", "--out", "e"],
    ]
    assert commands[0].run_argv == ["prep", "--input", "x", "--size", "32", "--out", "d"]
    assert commands[0].line == 4 and commands[1].skip == "no bucket"
    assert commands[2].run_argv == commands[2].argv  # markers apply to the next block only
    assert files == {"configs/sweeps/mine.py": "# configs/sweeps/mine.py\nX = 1\n"}
    assert apply_args(
        ["train", "--config", "a.py", "--config.x=1"],
        ["--config.x=2", "--config", "b.py", "--quiet"],
    ) == ["train", "--config", "b.py", "--config.x=2", "--quiet"]


def test_every_skip_says_why_and_every_marker_applies():
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        commands, _ = parse_doc(text, doc)
        assert len(commands) >= (10 if doc == "README.md" else 4), doc
        for c in commands:
            assert not c.skip or len(c.skip) > 10, f"{doc}:{c.line}: skip needs a reason"
        for m in _MARKER.finditer(text):  # a subcommand marker must match a command
            sub = m.group(1)
            assert sub is None or any(c.argv[:1] == [sub] for c in commands), (
                f"{doc}: marker for `lusjax {sub}` matches no command"
            )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A project folder with configs/ (files linked, folders real so README files can be
    added) and ../shared beside it; LUSJAX_CACHE inside."""
    project = tmp_path / "project"
    _link_tree(ROOT / "configs", project / "configs")
    (project / "launch").symlink_to(ROOT / "launch")
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    monkeypatch.chdir(project)
    monkeypatch.setenv("LUSJAX_CACHE", str(tmp_path / "cache"))
    return project


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "__pycache__":
            continue
        if p.is_dir():
            _link_tree(p, dst / p.name)
        else:
            (dst / p.name).symlink_to(p)


@pytest.mark.parametrize("doc", DOCS)
def test_readme_commands_run(doc, workdir):
    commands, files = parse_doc((ROOT / doc).read_text(), doc)
    for path, content in files.items():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text(content)
    # Parse every command first: cheap, and it checks the ones that are skipped or changed.
    bad = [
        f"{doc}:{c.line}: lusjax {shlex.join(c.argv)}\n    -> {problem}"
        for c in commands
        if (problem := cli_commands.parse_check(c.argv))
    ]
    assert not bad, "README commands that do not parse:\n" + "\n".join(bad)
    have_pocus = (workdir.parent / POCUS.removeprefix("../")).is_dir()
    for c in commands:
        argv = c.run_argv
        if argv is None:
            continue
        if not have_pocus and any(POCUS in a for a in argv):
            argv = _synthetic_stand_in(argv)
            if argv is None:
                continue
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as e:
                rc = e.code
        assert rc == 0, f"{doc}:{c.line}: `lusjax {shlex.join(argv)}` exited {rc}:\n" + "\n".join(
            err.getvalue().strip().splitlines()[-5:]
        )


def _synthetic_stand_in(argv: list[str]) -> list[str] | None:
    """For `prep --input ../shared/data/pocus_dev ...`: a small synthetic dataset with the
    same --out and --folds; None (skip) for any other command needing pocus_dev."""
    if argv[0] != "prep":
        return None
    keep = ["--synthetic", "40", "--frames", "8", "--size", "32"]
    for opt in ("--out", "--folds", "--splits"):
        if opt in argv:
            keep += [opt, argv[argv.index(opt) + 1]]
    return ["prep", *keep]
