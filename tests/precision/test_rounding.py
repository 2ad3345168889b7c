"""GPTQ weight rounding (deployinc.precision.rounding): the quantizer's grid kept, the layer's output error lowered."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from deployinc.core.images import natural_images
from deployinc.errors import BadInputError
from deployinc.precision import rounding as R
from deployinc.precision._common import cpu_session
from deployinc.precision.int8 import quantize_int8
from deployinc.precision.recipe import recipe_named

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_gptq_lowers_the_output_error_on_the_same_grid():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((64, 64))
    x = mix @ rng.standard_normal((64, 4000))  # correlated inputs: where spreading the error pays
    w = rng.standard_normal((16, 64))
    scale = np.abs(w).max(1) / 127
    zero = np.zeros(16)
    q = R.gptq_round(w, x @ x.T, scale, zero, -127, 127)
    nearest = np.clip(np.round(w / scale[:, None]), -127, 127)
    assert np.array_equal(q, np.round(q)) and q.min() >= -127 and q.max() <= 127
    err_gptq = np.linalg.norm((w - q * scale[:, None]) @ x)
    err_nearest = np.linalg.norm((w - nearest * scale[:, None]) @ x)
    assert err_gptq < 0.8 * err_nearest, (err_gptq, err_nearest)
    assert np.abs(q - nearest).max() <= 3  # a step or so away from nearest, never somewhere else


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),  # depthwise: keeps nearest rounding
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("rounding") / "net.onnx"
    net = _net()
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)  # fmt: skip
    cal = natural_images(32, (3, 32, 32), MEAN, STD, seed=1)
    kw = {"method": "minmax", "target": "cpu", "recipe": recipe_named("u8s8")}
    return path, quantize_int8(path, cal, weight_rounding="nearest", **kw), quantize_int8(path, cal, weight_rounding="gptq", **kw)


def _weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_quantized") and t.data_type == onnx.TensorProto.INT8}


def _scales(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")}


def test_the_int8_file_keeps_its_grid_and_moves_closer_to_fp32(quantized):
    path, nearest, gptq = quantized
    assert _scales(nearest.model).keys() == _scales(gptq.model).keys()
    assert all(np.array_equal(a, _scales(gptq.model)[k]) for k, a in _scales(nearest.model).items())  # same grid
    wn, wg = _weights(nearest.model), _weights(gptq.model)
    changed = [k for k in wn if not np.array_equal(wn[k], wg[k])]
    assert len(changed) == 3  # the two dense convolutions and the Linear; not the depthwise one
    assert gptq.report["weight_rounding"]["layers"] == 3 and nearest.report["weight_rounding"] == {"weight_rounding": "nearest"}
    meta = {p.key: p.value for p in gptq.model.metadata_props}
    assert json.loads(meta["deployinc.int8"])["weight_rounding"] == "gptq"
    x = natural_images(16, (3, 32, 32), MEAN, STD, seed=7)  # held-out images
    want = cpu_session(onnx.load(str(path)), threads=1).run(None, {"input": x})[0]

    def err(m) -> float:
        got = cpu_session(m, threads=1).run(None, {"input": x})[0]
        return float(np.linalg.norm(got - want) / np.linalg.norm(want))

    assert err(gptq.model) < err(nearest.model), (err(gptq.model), err(nearest.model))


def test_an_unknown_rounding_is_refused(quantized):
    path, _, _ = quantized
    with pytest.raises(BadInputError, match="unknown --weight-rounding value 'best'"):
        quantize_int8(path, natural_images(4, (3, 32, 32), MEAN, STD, seed=1), target="cpu", weight_rounding="best")
