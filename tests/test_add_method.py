"""README.md's "Adding a method": its three files are all a new SSL method needs.

The method module, its config file and its test file are read from the README's
code blocks (the `# PATH` python blocks, as test_readme_commands.py reads them), so
the walk-through stays true. The module is imported from a temporary folder and
registered (inside lusjax/ssl/ it would be found without that); then its config
resolves to its own defaults, its test passes, the generic tests of test_ssl.py
take it, and the real loop trains it for 2 steps.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import test_ssl
from test_readme_commands import parse_doc
from test_train import tiny_config

from lusjax import config as config_lib
from lusjax import ssl, train

ROOT = Path(__file__).resolve().parent.parent
NAME = "alignunif"


def readme_files() -> dict[str, str]:
    _, files = parse_doc((ROOT / "README.md").read_text())
    want = {f"lusjax/ssl/{NAME}.py", f"configs/{NAME}_resnet.py", f"tests/ssl/test_{NAME}.py"}
    assert want <= set(files), sorted(files)
    return {path: files[path] for path in want}


def load_module(module_name: str, path: Path):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def new_method(tmp_path, monkeypatch):
    """The README's method, imported from tmp_path as `lusjax.ssl.alignunif` and
    registered for this test only; the paths of the README's files there."""
    paths = {}
    for rel, text in readme_files().items():
        paths[rel] = tmp_path / "files" / rel
        paths[rel].parent.mkdir(parents=True, exist_ok=True)
        paths[rel].write_text(text)
    ssl.names()  # the package's methods first
    monkeypatch.setattr(ssl, "_REGISTRY", dict(ssl._REGISTRY))  # undone after the test
    module_name = f"lusjax.ssl.{NAME}"
    module = load_module(module_name, paths[f"lusjax/ssl/{NAME}.py"])
    monkeypatch.setitem(sys.modules, module_name, module)  # for its test's import
    ssl.register(module.METHOD)
    return module, paths


def test_a_new_method_needs_three_files(new_method, tmp_path):
    module, paths = new_method
    assert NAME in ssl.names() and ssl.get(NAME) is module.METHOD

    # Its config resolves to the method's own defaults.
    cfg = config_lib.load(str(paths[f"configs/{NAME}_resnet.py"]))
    assert cfg.method == NAME and cfg.model.name == "resnet18"
    assert cfg.ssl.to_dict() == module.default_config().to_dict()
    assert module.default_optim().items() <= cfg.optim.to_dict().items()

    # Its own test passes, and so do the generic ones that iterate the registry.
    own = load_module(f"test_{NAME}", paths[f"tests/ssl/test_{NAME}.py"])
    tests = [getattr(own, k) for k in dir(own) if k.startswith("test_")]
    assert tests
    for test in tests:
        test()
    test_ssl.test_sharded_equals_single_device(NAME)
    test_ssl.test_method_trains_on_tiny_problem(NAME)

    # The real loop trains it: 2 steps, a finite loss and a metrics line each.
    run = tmp_path / "run"
    cfg = tiny_config(run, ("method", NAME), ("total_steps", "2"), ("ckpt_every", "0"))
    assert cfg.ssl.t == module.default_config().t  # `method` brought its ssl section
    summary = train.train(cfg, progress=False)
    assert summary["step"] == 2
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        assert np.isfinite(r["loss"]) and np.isfinite(r["uniformity"]), r
