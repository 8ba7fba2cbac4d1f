"""Layers only point down, and no module imports itself round a cycle.

Every module of lusjax/, data_prep/ and configs/ is parsed with `ast` (nothing is
imported), every import statement counts, a function's lazy import too, and
`from lusjax import x` means the module lusjax.x where there is one. LAYERS is
the one written-down table of layers (the README's Architecture section sums it
up); a module may import its own layer or a lower one, never a higher one, not
even for a type annotation. An import under `if TYPE_CHECKING:` never runs, so
it is no link of an import cycle (naming a type of a module that imports this
one is how such a cycle is avoided).
Imports by name at run time (`importlib`, config files loaded from their path)
are not import statements and are not seen here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lusjax", "data_prep", "configs")

# Lowest first. "x.*" is the module x and everything below it; a plain name is that
# module only; a module takes its most specific entry.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "base",
        "errors, file names and file IO: what every layer may use",
        ("lusjax", "lusjax.errors", "lusjax.layout", "lusjax.files"),
    ),
    (
        "core",
        "services that know nothing of models or data: mesh, metrics, carbon, liveness",
        (
            "lusjax.sharding",
            "lusjax.distributed",
            "lusjax.preemption",
            "lusjax.watchdog",
            "lusjax.workdir_lock",
            "lusjax.energy_sensors",
            "lusjax.carbon",
            "lusjax.carbon_report",
            "lusjax.metrics",
            "lusjax.tb_events",
        ),
    ),
    (
        "components",
        "the parts of the loop: backbones, SSL methods, the input pipeline, optimizers",
        ("lusjax.models.*", "lusjax.ssl.*", "lusjax.data.*", "lusjax.optim"),
    ),
    (
        "library",
        "configs, checkpoints, encoders, evaluation, export, sweep plans",
        (
            "lusjax.config",
            "lusjax.resume",
            "lusjax.encoder",
            "lusjax.checkpoint",
            "lusjax.eval.*",
            "lusjax.export",
            "lusjax.export_torch",
            "lusjax.model_card",
            "lusjax.sweep_plan",
        ),
    ),
    (
        "prep",
        "data_prep: clips -> datasets (decode, fan mask, store, synthetic, writers)",
        ("data_prep.*",),
    ),
    (
        "app",
        "workflows and the glue between the library and data_prep",
        (
            "lusjax.app.*",
            "lusjax.train",
            "lusjax.eval.protocol",  # the `lusjax eval` driver: finds (makes) the dataset
            "lusjax.study",
            "lusjax.study_report",
            "lusjax.sweep",
            "lusjax.sweep_report",
            "lusjax.report",
        ),
    ),
    (
        "entry",
        "command lines and config files: nothing imports them",
        ("lusjax.cli", "lusjax.eval_help", "data_prep.cli", "configs.*"),
    ),
)
LAYER_NAMES = [name for name, _, _ in LAYERS]


# ---------------------------------------------------------------------------
# The graph.
# ---------------------------------------------------------------------------


def find_modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} of every .py file of PACKAGES."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _known(name: str, modules) -> str | None:
    """`name`, else its nearest enclosing module that is ours (None for third-party)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import statements inside `if TYPE_CHECKING:` blocks."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports_of(source: str, module: str, is_package: bool, modules) -> list[tuple[str, int, bool]]:
    """[(imported module of ours, line, type-only)] of every import statement in `source`."""
    out = []
    tree = ast.parse(source)
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [_known(a.name, modules) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding `module`
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module
            targets = [
                f"{parent}.{a.name}" if f"{parent}.{a.name}" in modules else _known(parent, modules)
                for a in node.names
            ]
        else:
            continue
        out += [(t, node.lineno, id(node) in type_only) for t in targets if t and t != module]
    return out


def import_graph(
    root: Path = ROOT,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], dict[str, Path]]:
    """({module: {imported module: first line}} of every import, the same of the
    imports that run (not under `if TYPE_CHECKING:`), {module: file})."""
    mods = find_modules(root)
    graph, runtime = {}, {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        run: dict[str, int] = {}
        for target, line, type_only in imports_of(
            path.read_text(), name, path.name == "__init__.py", mods
        ):
            edges.setdefault(target, line)
            if not type_only:
                run.setdefault(target, line)
        graph[name], runtime[name] = edges, run
    return graph, runtime, mods


# ---------------------------------------------------------------------------
# The checks.
# ---------------------------------------------------------------------------


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of `module`'s layer: its most specific entry (exact beats "x.*")."""
    best, best_len = None, -1
    for i, (_, _, patterns) in enumerate(layers):
        for pat in patterns:
            if pat.endswith(".*"):
                stem = pat[:-2]
                hit = module == stem or module.startswith(stem + ".")
                length = len(stem)
            else:
                hit, length = module == pat, len(pat) + 1  # exact wins over its own "x.*"
            if hit and length > best_len:
                best, best_len = i, length
    return best


def up_edges(graph, layers=LAYERS) -> list[str]:
    """One line per import of a higher layer (and per module no layer covers)."""
    names = [n for n, _, _ in layers]
    bad = [f"{m}: in no layer (add it to LAYERS)" for m in graph if layer_of(m, layers) is None]
    for m, edges in sorted(graph.items()):
        lm = layer_of(m, layers)
        for t, line in sorted(edges.items()):
            lt = layer_of(t, layers)
            if lm is not None and lt is not None and lt > lm:
                bad.append(f"{m}:{line} ({names[lm]}) imports {t} ({names[lt]}), a higher layer")
    return bad


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def cycle_text(graph, comp: list[str]) -> str:
    """A cycle's modules and the imports among them, with their lines."""
    inside = [
        f"{m}:{line} -> {t}" for m in comp for t, line in sorted(graph[m].items()) if t in comp
    ]
    return f"cycle among {', '.join(comp)}: " + "; ".join(inside)


# ---------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graphs():
    return import_graph()


@pytest.fixture(scope="module")
def graph(graphs):
    return graphs[0]


def test_no_import_points_up_a_layer(graph):
    bad = up_edges(graph)
    msg = "imports that point up (see LAYERS in tests/test_imports.py):\n" + "\n".join(bad)
    assert not bad, msg


def test_no_import_cycle(graphs):
    runtime = graphs[1]
    found = cycles(runtime)
    assert not found, "import cycles:\n" + "\n".join(cycle_text(runtime, c) for c in found)


def test_the_library_imports_no_workflow_command_or_data_writer(graph):
    """The rule the layers are for, spelt out: library packages and core modules never
    reach train/study/sweep/cli/app or data_prep, directly or through other modules."""
    library = [m for m in graph if layer_of(m) <= LAYER_NAMES.index("library")]
    top = ("lusjax.train", "lusjax.study", "lusjax.sweep", "lusjax.cli", "lusjax.app", "data_prep")
    bad = []
    for m in library:
        seen, todo = set(), [m]
        while todo:  # everything m imports, transitively
            for t in graph[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        bad += [
            f"{m} -> ... -> {t}"
            for t in sorted(seen)
            if any(t == p or t.startswith(p + ".") for p in top)
        ]
    assert not bad, "\n".join(bad)


def test_every_layer_entry_names_a_module():
    mods = find_modules()
    stale = [
        pat
        for _, _, patterns in LAYERS
        for pat in patterns
        if (pat[:-2] if pat.endswith(".*") else pat) not in mods
    ]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_the_graph_sees_every_kind_of_import():
    mods = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.sub.d"}
    src = (
        "import os\n"
        "import pkg.a\n"
        "from pkg import b\n"
        "from . import d\n"  # relative, in pkg.sub.c: pkg.sub.d
        "from ..a import thing\n"  # pkg.a
        "def f():\n"
        "    from pkg.sub import helper\n"  # a name, not a module: pkg.sub
        "    import numpy\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.b import SomeType\n"  # counts, marked type-only
    )
    got = imports_of(src, "pkg.sub.c", False, mods)
    assert got == [
        ("pkg.a", 2, False),
        ("pkg.b", 3, False),
        ("pkg.sub.d", 4, False),
        ("pkg.a", 5, False),
        ("pkg.sub", 7, False),
        ("pkg.b", 10, True),
    ]
    # In a package's __init__, "." is the package itself.
    assert imports_of("from . import c", "pkg.sub", True, mods) == [("pkg.sub.c", 1, False)]


def test_the_checks_flag_a_synthetic_up_edge_and_cycle():
    layers = (("low", "", ("x.low", "x.pkg.*")), ("high", "", ("x.high", "x.pkg.top")))
    assert layer_of("x.pkg.deep.mod", layers) == 0 and layer_of("x.pkg.top", layers) == 1
    graph = {
        "x.low": {"x.high": 7},  # up
        "x.high": {"x.low": 3, "x.pkg.a": 4},  # down
        "x.pkg.a": {"x.pkg.b": 1},
        "x.pkg.b": {"x.pkg.a": 2},  # a cycle within one layer
        "x.stray": {},
    }
    bad = up_edges(graph, layers)
    assert "x.low:7 (low) imports x.high (high), a higher layer" in bad
    assert "x.stray: in no layer (add it to LAYERS)" in bad and len(bad) == 2
    found = cycles(graph)
    assert found == [["x.high", "x.low"], ["x.pkg.a", "x.pkg.b"]]
    assert cycle_text(graph, found[1]) == (
        "cycle among x.pkg.a, x.pkg.b: x.pkg.a:1 -> x.pkg.b; x.pkg.b:2 -> x.pkg.a"
    )
