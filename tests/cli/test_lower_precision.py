"""``quantize --fallback`` / ``--recipe`` and ``convert --fallback`` end to end, and their bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.conftest import invoke
from tests.precision.test_fallback import export, planted_net


@pytest.fixture(scope="module")
def planted_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("lowp")
    calib = d / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(calib / f"{i}.png")
    return export(planted_net(), d / "planted.onnx"), calib


def test_quantize_fallback_keeps_the_planted_layer_in_float(cli_runner, planted_files, tmp_path):
    model, calib = planted_files
    out = tmp_path / "q.onnx"
    r = invoke(cli_runner, ["quantize", str(model), "--data", str(calib), "--fallback", "auto", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 of 4 layer(s) kept in float (94.1% of the layers' multiply-adds): 4 (/4/Conv) (and 2 computed in float with them)" in r.output
    # deploy's search: verify's 16 images and more sets of as many, each on its own, a tenth of the budget in hand
    assert "judged by int8 with 10% of its cosine budget in hand" in r.output and "96 verification images (6 sets of 16, each judged on its own)" in r.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    rec = json.loads(meta["deployinc.int8"])
    assert rec["fallback"]["float_nodes"] == ["/4/Conv"] and rec["recipe"]["name"] in ("u8s8", "u8s8-reduce-range")
    report = json.loads((tmp_path / "q.calibration.json").read_text())
    assert report["fallback"]["layers"][0]["module"] == "4" and report["recipe"]["cpu_path"]


def test_quantize_names_the_recipe_and_takes_another(cli_runner, planted_files, tmp_path):
    model, calib = planted_files
    r = invoke(cli_runner, ["quantize", str(model), "--data", str(calib), "--recipe", "u8s8-reduce-range", "--out", str(tmp_path / "r.onnx"), "--no-check"])
    assert r.exit_code == 0, r.output
    assert "int8 recipe u8s8-reduce-range" in r.output
    rec = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "r.onnx")).metadata_props}["deployinc.int8"])
    assert rec["recipe"]["reduce_range"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fallback", "bogus"], "unknown --fallback value 'bogus'"),
        (["--recipe", "u9s9"], "unknown int8 recipe 'u9s9'"),
        (["--weight-rounding", "best"], "unknown --weight-rounding value 'best'"),
        (["--recipe", "u8s8", "--target", "tensorrt"], "TensorRT refuses"),
    ],
)
def test_quantize_bad_fallback_or_recipe(cli_runner, planted_files, tmp_path, args, message):
    model, calib = planted_files
    out = tmp_path / "bad.onnx"
    r = invoke(cli_runner, ["quantize", str(model), "--data", str(calib), "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "hint:" in r.stderr and "Traceback" not in r.output
    assert not out.exists() and not (tmp_path / "bad.calibration.json").exists()


def test_an_fp16_fallback_on_an_int8_file_is_refused(cli_runner, planted_files, tmp_path):
    model, calib = planted_files
    q = tmp_path / "q.onnx"
    assert invoke(cli_runner, ["quantize", str(model), "--data", str(calib), "--out", str(q), "--no-check"]).exit_code == 0
    out = tmp_path / "f.onnx"
    r = invoke(cli_runner, ["convert", str(q), "--fallback", "auto", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "already int8" in r.stderr and "hint: give the fp32 export" in r.stderr
    assert not out.exists()
    r = invoke(cli_runner, ["convert", str(model), "--fallback", "sometimes", "--out", str(out)])
    assert r.exit_code == 2 and "unknown --fallback value" in r.stderr and not out.exists()


def test_convert_fallback_writes_a_model_that_passes(cli_runner, planted_files, tmp_path):
    model, _ = planted_files
    out = tmp_path / "f.onnx"
    r = invoke(cli_runner, ["convert", str(model), "--fallback", "auto", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "fp16 layer fallback" in r.output and out.is_file()
    assert "96 verification images (12 sets of 8, each judged on its own)" in r.output, r.output  # as deploy's search
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(str(out)).graph.initializer)
