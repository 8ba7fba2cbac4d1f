"""Config loading, typed overrides, locking, and the saved resolved config."""

import json
from pathlib import Path

import ml_collections
import pytest

from lusjax import config as config_lib
from lusjax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
import ml_collections

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.batch_size = 64
    c.lr = 0.1
    c.name = "simclr"
    c.flag = False
    c.sizes = (1, 2)
    c.arg = arg or ""
    c.optim = ml_collections.ConfigDict({"name": "lars", "momentum": 0.9})
    return c
"""


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "c.py"
    p.write_text(CONFIG)
    return p


def test_overrides_are_typed_by_the_existing_field(cfg_file):
    argv = [
        "train",
        "--config.batch_size=512",
        "--config.lr",
        "3e-4",
        "--config.flag=true",
        "--config.sizes=(4,5,6)",
        "--config.optim.name=adamw",
    ]
    overrides, rest = config_lib.split_overrides(argv)
    assert rest == ["train"]
    cfg = config_lib.load(str(cfg_file), overrides)
    assert cfg.batch_size == 512 and isinstance(cfg.batch_size, int)
    assert cfg.lr == pytest.approx(3e-4)
    assert cfg.flag is True
    assert cfg.sizes == (4, 5, 6)
    assert cfg.optim.name == "adamw"


def test_config_arg_is_passed_to_get_config(cfg_file):
    assert config_lib.load(f"{cfg_file}:small").arg == "small"


def test_unknown_key_is_a_user_error_with_a_suggestion(cfg_file):
    with pytest.raises(UserError, match="unknown config key 'batch_sise'.*batch_size"):
        config_lib.load(str(cfg_file), [("batch_sise", "3")])
    with pytest.raises(UserError, match="unknown config key"):
        config_lib.load(str(cfg_file), [("optim.nope", "3")])


def test_bad_values_are_user_errors(cfg_file):
    with pytest.raises(UserError, match="expects an integer"):
        config_lib.load(str(cfg_file), [("batch_size", "many")])
    with pytest.raises(UserError, match="true/false"):
        config_lib.load(str(cfg_file), [("flag", "maybe")])
    with pytest.raises(UserError, match="group of settings"):
        config_lib.load(str(cfg_file), [("optim", "x")])


def test_missing_file_is_a_user_error():
    with pytest.raises(UserError, match="config file not found"):
        config_lib.load("configs/does_not_exist.py")


def test_loaded_config_is_locked(cfg_file):
    cfg = config_lib.load(str(cfg_file))
    with pytest.raises(AttributeError):
        cfg.new_key = 1


def test_save_and_load_saved_roundtrip(cfg_file, tmp_path):
    cfg = config_lib.load(str(cfg_file), [("lr", "0.5")])
    path = config_lib.save(cfg, tmp_path / "run")
    assert json.loads(path.read_text())["lr"] == 0.5
    back = config_lib.load_saved(tmp_path / "run")
    assert isinstance(back, ml_collections.ConfigDict) and back.optim.name == "lars"


def test_every_shipped_config_loads_and_takes_its_methods_defaults():
    """configs/common.py takes a method's ssl and optimiser defaults from its module."""
    from pathlib import Path

    from configs import common
    from lusjax import models, ssl

    root = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.glob("*.py")):
        if path.name in ("__init__.py", "common.py"):
            continue
        cfg = config_lib.load(str(path))
        if "method" in cfg:  # training configs (eval.py is not one)
            assert cfg.method in ssl.names() and cfg.model.name in models.NAMES, path
    for name in ssl.names():
        method = ssl.get(name)
        cfg = common.base(name, "resnet18")
        assert cfg.ssl.to_dict() == method.default_config().to_dict(), name
        assert method.default_optim().items() <= cfg.optim.to_dict().items(), name


def test_method_override_brings_that_methods_ssl_section():
    cfg = config_lib.load(
        str(ROOT / "configs/simclr_resnet.py"), [("ssl.proj_dim", "64"), ("method", "byol")]
    )
    assert cfg.method == "byol"
    assert "pred_hidden_dim" in cfg.ssl and "temperature" not in cfg.ssl
    assert cfg.ssl.proj_dim == 64  # ssl overrides apply on top, whatever their order


def test_method_override_unknown_method_is_a_user_error():
    with pytest.raises(UserError, match="unknown SSL method"):
        config_lib.load(str(ROOT / "configs/simclr_resnet.py"), [("method", "dino")])


@pytest.mark.parametrize(
    "typed,meant",
    [
        ("optim.learning_rate", "optim.lr"),  # an alias of the last part, same section
        ("ssl.name", "method"),  # an alias of the whole key
        ("learning_rate", "optim.lr"),
        ("lr", "optim.lr"),  # the same last part in a section
        ("epochs", "total_steps"),
        ("batch_sise", "batch_size"),  # edit distance
        ("data.train_splits", "data.train_split"),
        ("optim.weight_decy", "optim.weight_decay"),
    ],
)
def test_did_you_mean_knows_aliases_and_last_key_parts(typed, meant):
    with pytest.raises(UserError, match=rf"unknown config key '{typed}'; did you mean {meant}\b"):
        config_lib.load(str(ROOT / "configs/simclr_resnet.py"), [(typed, "1")])


def test_dumps_shows_the_resolved_config_as_yaml_or_json():
    cfg = config_lib.load(str(ROOT / "configs/quickstart.py"), [("optim.lr", "0.5")])
    text = config_lib.dumps(cfg)
    assert "optim:\n" in text and "\n  lr: 0.5\n" in text and 'method: "simclr"' in text
    assert json.loads(config_lib.dumps(cfg, "json")) == config_lib.to_dict(cfg)
