"""fp16: an fp16 variant of a zoo model passes under the fp16 preset (top-1 agreement >= 99% on the input set)
and fails under the fp32 preset, with the failing metric named."""

from __future__ import annotations

import json

import onnx
import pytest

from tests.conftest import invoke
from tests.verify.test_verify import _cache_dir, export_model, exports_dir  # noqa: F401 - fixtures


@pytest.fixture
def fp16_resnet18(exports_dir, tmp_path):  # noqa: F811
    from deployinc.io import save_onnx
    from deployinc.precision.fp16 import convert_to_fp16

    src = export_model(exports_dir, spec="resnet18", input_shape=(1, 3, 64, 64))
    out = tmp_path / "resnet18-fp16.onnx"
    save_onnx(convert_to_fp16(onnx.load(str(src))).model, out)
    return out


def test_fp16_variant_passes_fp16_preset_and_fails_fp32(cli_runner, fp16_resnet18, tmp_path):
    report = tmp_path / "r16.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(fp16_resnet18), "--samples", "16", "--json", str(report)])
    assert r.exit_code == 0, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["precision"] == "fp16"  # detected from the file
    for res in d["backends"][0]["results"]:
        out = res["outputs"][0]
        assert out["top1"] >= 0.99 and out["tolerance"]["name"].startswith("fp16")
        assert out["max_rel"] > 1e-4  # genuinely fp16 numbers, not an fp32 file
    assert "[fp16" in r.stdout

    report32 = tmp_path / "r32.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(fp16_resnet18), "--precision", "fp32", "--no-localize", "--json", str(report32)])
    assert r.exit_code == 1
    d = json.loads(report32.read_text())
    assert d["verdict"] == "fail"
    assert any("max_rel" in f and "> 1e-04" in f for f in d["failures"])  # which metric failed
    assert "max_rel" in r.stderr and "fp32-cpu" in r.stdout
