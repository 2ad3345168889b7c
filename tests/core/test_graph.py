"""ONNX graph helpers (deployinc.core.graph): the guard of a zero Pad before a MaxPool from ONNX Runtime's PadFusion."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deployinc.core.graph import guard_pad_before_maxpool


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_a_zero_pad_before_maxpool_computes_what_torch_does(tmp_path, pool):
    """timm's BiT stem: ConstantPad2d(1, 0) then MaxPool2d(3, 2), on negative activations."""
    net = torch.nn.Sequential(torch.nn.ConstantPad2d(1, 0.0), torch.nn.MaxPool2d(3, 2) if pool == "max" else torch.nn.AvgPool2d(3, 2)).eval()
    x = -torch.rand(2, 4, 9, 9) - 0.5
    path = tmp_path / "pad.onnx"
    torch.onnx.export(net, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"])
    model = onnx.load(str(path))
    want = net(x).numpy()
    if pool == "max":
        assert np.abs(_run(model, x.numpy()) - want).max() > 0.1  # what ONNX Runtime computes unguarded
    n = guard_pad_before_maxpool(model)
    assert n == (1 if pool == "max" else 0)
    onnx.checker.check_model(model, full_check=True)
    assert np.abs(_run(model, x.numpy()) - want).max() < 1e-6  # (avg: float rounding of the sum)


def test_a_non_zero_pad_is_left_alone(tmp_path):
    net = torch.nn.Sequential(torch.nn.ConstantPad2d(1, -5.0), torch.nn.MaxPool2d(3, 2)).eval()
    path = tmp_path / "pad.onnx"
    torch.onnx.export(net, (torch.rand(1, 2, 8, 8),), str(path), opset_version=17, dynamo=False)
    assert guard_pad_before_maxpool(onnx.load(str(path))) == 0


def test_export_of_a_user_model_with_the_bit_stem_is_right(cli_runner, tmp_path, monkeypatch):
    from tests.conftest import invoke

    (tmp_path / "bitstem.py").write_text(
        "import torch\n"
        "def build(num_classes=10):\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ConstantPad2d(1, 0.0), torch.nn.MaxPool2d(3, 2),\n"
        "                               torch.nn.Conv2d(8, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "b.onnx"
    r = invoke(cli_runner, ["export", "bitstem:build", "--input-shape", "1,3,32,32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    import importlib

    own = importlib.import_module("bitstem").build().eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = own(torch.from_numpy(x)).numpy()
    got = _run(onnx.load(str(out)), x)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
