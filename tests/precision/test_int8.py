"""int8 static quantization: QDQ output, calibration report, image-count rules, TensorRT compatibility, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deployinc.errors import BadInputError
from tests.conftest import invoke
from tests.precision.test_fp16 import convnet, images


def write_pngs(folder, n, size=20, seed=0):
    from PIL import Image

    from deployinc.core.images import natural_images

    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(natural_images(n, (3, size, size), seed=seed)):
        Image.fromarray((a.transpose(1, 2, 0) * 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def fp32_path(tmp_path_factory):
    from deployinc.io import save_onnx

    p = tmp_path_factory.mktemp("int8") / "net.onnx"
    m = convnet()
    e = m.metadata_props.add()
    e.key, e.value = "deployinc.mean", "[0.5, 0.5, 0.5]"
    e = m.metadata_props.add()
    e.key, e.value = "deployinc.std", "[0.25, 0.25, 0.25]"
    save_onnx(m, p)
    return p


def cosine_vs_fp32(fp32, q, x):
    from deployinc.precision._common import cpu_session

    a = cpu_session(fp32).run(None, {"input": x})[0]
    b = cpu_session(q).run(None, {"input": x})[0]
    return min(float(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)) for u, v in zip(a, b))


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_quantize_methods_for_tensorrt(fp32_path, method, monkeypatch):
    import onnxruntime.quantization.calibrate as ort_calibrate

    from deployinc.io import load_onnx
    from deployinc.precision.int8 import quantize_int8
    from deployinc.trt.check import check_model

    made = []  # each --method reaches its own ORT calibrator (not another's, not a default)
    real = ort_calibrate.create_calibrator
    monkeypatch.setattr(ort_calibrate, "create_calibrator", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    cal = images(32, seed=1)
    res = quantize_int8(fp32_path, cal, method=method, target="tensorrt")
    expected = {"minmax": "MinMaxCalibrater", "entropy": "EntropyCalibrater", "percentile": "PercentileCalibrater"}[method]
    assert [type(c).__name__ for c in made] == [expected]
    ops = res.report["op_counts"]
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    t = res.report["tensors"]
    assert t and all(v["min"] <= v["max"] for v in t.values())
    quantized = [v for v in t.values() if v["quantized"]]
    assert quantized and all(v["zero_point"] == 0 and v["type"] == "int8" for v in quantized)
    assert check_model(res.model, "tensorrt").compatible  # symmetric, no int32 bias DQ
    assert cosine_vs_fp32(load_onnx(fp32_path).model, res.model, images(8, seed=5)) > 0.99
    meta = {p.key: p.value for p in res.model.metadata_props}
    assert json.loads(meta["deployinc.precision"]) == "int8" and json.loads(meta["deployinc.int8"])["method"] == method
    assert json.loads(meta["deployinc.mean"]) == [0.5, 0.5, 0.5]  # provenance kept


def test_cpu_target_is_uint8_and_refused_by_tensorrt(fp32_path):
    from deployinc.precision.int8 import quantize_int8
    from deployinc.trt.check import check_model

    res = quantize_int8(fp32_path, images(8, seed=1), method="minmax", target="cpu", keep_fp32_before="/conv2")
    assert res.report["activation_type"].startswith("uint8")
    assert "/conv1" in res.report["excluded_nodes"] and "/relu1" in res.report["excluded_nodes"]
    assert not check_model(res.model, "tensorrt").compatible
    assert check_model(res.model, "ort-cpu").compatible


def test_image_count_rules():
    from deployinc.precision.int8 import MIN_IMAGES, check_image_count

    with pytest.raises(BadInputError) as info:
        check_image_count(3, "entropy")
    assert "3 calibration image(s)" in info.value.message and str(MIN_IMAGES["entropy"]) in info.value.message
    w = check_image_count(5, "minmax")
    assert w and "5 image(s)" in w[0]
    assert check_image_count(200, "percentile") == []
    with pytest.raises(BadInputError, match="unknown calibration method"):
        check_image_count(10, "kl")


def test_bad_inputs(fp32_path):
    from deployinc.precision.int8 import quantize_int8

    with pytest.raises(BadInputError, match="shape"):
        quantize_int8(fp32_path, np.zeros((4, 1, 16, 16), np.float32))
    with pytest.raises(BadInputError, match="no node named"):
        quantize_int8(fp32_path, images(4), exclude_nodes=["/nope"])
    with pytest.raises(BadInputError, match="unknown quantization target"):
        quantize_int8(fp32_path, images(4), target="gpu")


def test_cli_quantize(tmp_path, fp32_path, cli_runner):
    import shutil

    src = tmp_path / "net.onnx"
    shutil.copy(fp32_path, src)
    data = write_pngs(tmp_path / "calib", 12)
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data), "--method", "minmax"])
    assert r.exit_code == 0, r.output
    out, rep = tmp_path / "net.int8.onnx", tmp_path / "net.int8.calibration.json"
    assert out.exists() and rep.exists()
    report = json.loads(rep.read_text())
    assert report["calibration_images"] == 12 and report["calibration_data"]["folder"] == str(data)
    assert report["tensors"] and "12 image(s)" in r.stderr  # below the recommended count: a warning naming it
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data)])
    assert r.exit_code == 2 and "exists" in r.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(empty), "--force"])
    assert r.exit_code == 2 and "no image files" in r.stderr
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data), "--method", "entropy", "--force"])
    assert r.exit_code == 2 and "12 calibration image(s)" in r.stderr and "entropy" in r.stderr
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data), "--method", "kl", "--force"])
    assert r.exit_code == 2
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(tmp_path / "nowhere"), "--force"])
    assert r.exit_code == 2 and "does not exist" in r.stderr
