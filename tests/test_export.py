"""`lusjax export`: torchvision names and shapes, the stem's channel conversion, the files,
the model card, the errors, and (where torch is installed) numerical parity.

The key/shape table (tests/data/torchvision_state_dicts.json) was written from
torchvision's own models (versions in the file), so CI checks the whole mapping without
torch. The parity tests load the export into torchvision and compare features; they
skip without torch/torchvision (not a test dependency: PyPI's Linux wheels are the CUDA
builds, several GB).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from lusjax import checkpoint, cli, export_torch, models

TABLE = json.loads((Path(__file__).parent / "data/torchvision_state_dicts.json").read_text())
STEM = {
    "resnet18": "conv1.weight",
    "resnet50": "conv1.weight",
    "mobilenetv3_small": "features.0.0.weight",
    "mobilenetv3_large": "features.0.0.weight",
}


def _random_variables(name: str, channels: int = 1, size: int = 32, seed: int = 0) -> dict:
    """Random params and non-trivial BN statistics (so a swapped mean/var shows)."""
    model = models.get(name, num_channels=channels, dtype="float32")
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32),
    )
    rng = np.random.default_rng(seed)

    def fill(path, s):
        leaf = path[-1].key
        if leaf == "var":
            return rng.uniform(0.5, 2.0, s.shape).astype(np.float32)
        if leaf == "scale":
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        fan_in = int(np.prod(s.shape[:-1])) or 1
        return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


@pytest.mark.parametrize("name", sorted(export_torch.TORCHVISION))
def test_keys_and_shapes_equal_torchvision(name):
    expected = TABLE["models"][export_torch.TORCHVISION[name]]
    sd = export_torch.state_dict(name, {}, _random_variables(name, channels=3), step=7)
    assert sorted(sd) == sorted(k for k, _ in expected)
    for key, shape in expected:
        assert list(sd[key].shape) == shape, key
    assert sd[STEM[name]].shape[1] == 3
    assert all(
        v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32)
        for k, v in sd.items()
    )


def test_gray_stem_to_three_channels_gives_the_same_conv():
    v = _random_variables("resnet18", channels=1)
    one = export_torch.state_dict("resnet18", {}, v)["conv1.weight"]
    three = export_torch.state_dict("resnet18", {}, v, channels=3)["conv1.weight"]
    assert one.shape == (64, 1, 7, 7) and three.shape == (64, 3, 7, 7)
    # A gray image repeated 3x meets sum over input channels of the kernel: the 1-channel one.
    np.testing.assert_allclose(three.sum(axis=1, keepdims=True), one, rtol=1e-6)
    v3 = _random_variables("resnet18", channels=3)
    back = export_torch.state_dict("resnet18", {}, v3, channels=1)["conv1.weight"]
    full = export_torch.state_dict("resnet18", {}, v3)["conv1.weight"]
    np.testing.assert_allclose(back[:, 0], full.sum(axis=1), rtol=1e-6)


def test_values_are_transposed_and_bn_statistics_named():
    v = _random_variables("mobilenetv3_small")
    sd = export_torch.state_dict("mobilenetv3_small", {}, v, step=5)
    p, s = v["params"], v["batch_stats"]
    np.testing.assert_array_equal(
        sd["features.1.block.0.0.weight"],  # depthwise [C,1,k,k]
        p["block0"]["dw_conv"]["kernel"].transpose(3, 2, 0, 1),
    )
    np.testing.assert_array_equal(
        sd["features.1.block.1.fc2.bias"], p["block0"]["se"]["fc2"]["bias"]
    )
    np.testing.assert_array_equal(sd["features.12.1.running_var"], s["last_bn"]["var"])
    np.testing.assert_array_equal(sd["features.12.1.weight"], p["last_bn"]["scale"])
    assert int(sd["features.12.1.num_batches_tracked"]) == 5


@pytest.mark.parametrize(
    "kwargs, match", [({"width": 0.5}, "width 0.5"), ({"stem": "small"}, "'small' stem")]
)
def test_no_torchvision_counterpart(kwargs, match):
    from lusjax.errors import UserError

    with pytest.raises(UserError, match=match):
        export_torch.check_exportable("resnet18", kwargs)
    with pytest.raises(UserError, match="resnet_tiny has no torchvision counterpart"):
        export_torch.check_exportable("resnet_tiny", {})


# ---------------------------------------------------------------------------
# The command, on a workdir holding an exported encoder.
# ---------------------------------------------------------------------------

SIZE = 32


def _workdir(tmp_path: Path, name: str, channels: int = 1) -> tuple[Path, dict]:
    wd = tmp_path / name
    variables = _random_variables(name, channels, SIZE)
    checkpoint.export_encoder(
        wd,
        variables,
        model_name=name,
        model_kwargs={"num_channels": channels, "width": 1.0, "dtype": "float32"},
        image_size=SIZE,
        step=12,
    )
    (wd / "config.json").write_text(
        json.dumps({"method": "simclr", "batch_size": 16, "data": {"data_dir": "data/pocus"}})
    )
    (wd / "pretrain_clips.json").write_text(
        json.dumps(
            {
                "data_dir": "/data/pocus",
                "split": "fold0+fold1",
                "video_id": ["a", "b", "c"],
                "patient_id": ["p1", "p1", "p2"],
            }
        )
    )
    return wd, variables


def _features(name: str, variables: dict, x: np.ndarray, channels: int = 1) -> np.ndarray:
    model = models.get(name, num_channels=channels, dtype="float32")
    return np.asarray(model.apply(variables, x, train=False))


def test_export_torch_writes_safetensors_and_model_card(tmp_path, capsys):
    wd, _ = _workdir(tmp_path, "mobilenetv3_small")
    eval_dir = wd / "eval"
    eval_dir.mkdir()
    (eval_dir / "results.json").write_text("{}")
    (eval_dir / "results.md").write_text("| encoder | frame acc |\n|---|---|\n| simclr | 0.91 |\n")
    assert cli.main(["export", str(wd), "--format", "torch", "--channels", "3"]) == 0
    out = wd / "export" / "torch"
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "mobilenet_v3_small.safetensors"), str(out / "MODEL_CARD.md")]
    sd = load_file(out / "mobilenet_v3_small.safetensors")
    assert sd["features.0.0.weight"].shape == (16, 3, 3, 3)
    assert int(sd["features.1.block.0.1.num_batches_tracked"]) == 12
    card = (out / "MODEL_CARD.md").read_text()
    for text in (
        "simclr",
        "3 clips of 2 patients",
        "fold0+fold1",
        "(x - 0.18) / 0.2",
        "torchvision.models.mobilenet_v3_small()",
        "model.classifier = torch.nn.Identity()",
        "| simclr | 0.91 |",
        "Energy: not recorded",
    ):
        assert text in card, text
    assert "Conv2d(" not in card  # 3 channels: torchvision's own stem fits


def test_export_flax_round_trips(tmp_path):
    import flax.serialization

    wd, variables = _workdir(tmp_path, "resnet18")
    out = tmp_path / "flax_out"
    assert cli.main(["export", str(wd), "--format", "flax", "--out", str(out)]) == 0
    restored = flax.serialization.msgpack_restore((out / "encoder.msgpack").read_bytes())
    x = np.random.default_rng(1).standard_normal((2, SIZE, SIZE, 1)).astype(np.float32)
    np.testing.assert_array_equal(
        _features("resnet18", restored, x), _features("resnet18", variables, x)
    )
    assert json.loads((out / "encoder.json").read_text())["model_name"] == "resnet18"
    assert "msgpack_restore" in (out / "MODEL_CARD.md").read_text()


def test_export_errors_are_one_line(tmp_path, capsys):
    wd, _ = _workdir(tmp_path, "resnet18")
    tiny = tmp_path / "tiny"
    checkpoint.export_encoder(
        tiny,
        _random_variables("resnet_tiny", 1, SIZE),
        model_name="resnet_tiny",
        model_kwargs={"num_channels": 1, "dtype": "float32"},
        image_size=SIZE,
        step=1,
    )
    cases = [
        ([str(wd), "--format", "onnx"], "unknown export format 'onnx'"),
        ([str(tmp_path), "--format", "torch"], "has no exported encoder"),
        ([str(tiny), "--format", "torch"], "resnet_tiny has no torchvision counterpart"),
        ([str(wd), "--format", "torch", "--channels", "2"], "--channels must be 1 or 3"),
    ]
    for argv, message in cases:
        assert cli.main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lusjax: error: ") and message in err[0], err
    assert not (tiny / "export").exists()


# ---------------------------------------------------------------------------
# Numerical parity with torchvision (where torch is installed).
# ---------------------------------------------------------------------------


def _torch_features(name: str, sd: dict, x_nhwc: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    fam = export_torch.family(name)
    model = getattr(torchvision.models, export_torch.TORCHVISION[name])()
    stem = sd[export_torch.STEM[fam] + ".weight"]
    conv = torch.nn.Conv2d(
        stem.shape[1], stem.shape[0], stem.shape[2], 2, (stem.shape[2] - 1) // 2, bias=False
    )
    if fam == "resnet":
        model.conv1 = conv
    else:
        model.features[0][0] = conv
    setattr(model, export_torch.HEAD[fam], torch.nn.Identity())
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def _parity(name: str, size: int = 64):
    v = _random_variables(name, 1, size, seed=3)
    x = np.random.default_rng(4).standard_normal((2, size, size, 1)).astype(np.float32)
    ref = _features(name, v, x)
    for channels in (1, 3):
        sd = export_torch.state_dict(name, {}, v, channels=channels)
        got = _torch_features(name, sd, np.repeat(x, channels, axis=-1))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small"])
def test_torchvision_features_equal_lusjax(name):
    _parity(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenetv3_large"])
def test_torchvision_features_equal_lusjax_large(name):
    _parity(name)
