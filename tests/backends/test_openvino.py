"""The openvino backend (the OpenVINO runtime itself, deployinc/backends/openvino.py): its record and probe, its
runner at fp32, int8 (a QDQ file) and bf16 (where the CPU has it), and the commands that take its name."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deployinc.backends as B
from deployinc.backends import openvino as OV
from deployinc.errors import BackendUnavailable
from deployinc.factory import onnx_runner

from tests.conftest import invoke

PROBLEM = B.backend_problem("openvino")
needs_ov = pytest.mark.skipif(PROBLEM is not None, reason=f"the OpenVINO runtime cannot run here: {PROBLEM}")


def _bf16_here() -> bool:
    return PROBLEM is None and "BF16" in OV.capabilities()


needs_bf16 = pytest.mark.skipif(not _bf16_here(), reason=f"needs the OpenVINO runtime on a CPU with native bf16 ({PROBLEM or 'no BF16 capability'})")


def _convnet(path, batch: object = "batch") -> onnx.ModelProto:
    """Conv(3->8) + Relu + GlobalAveragePool + Flatten + Gemm(8->5): a tiny classifier with a dynamic batch."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
        numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.zeros(5, np.float32), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return model


@pytest.fixture
def convnet(tmp_path):
    path = tmp_path / "net.onnx"
    _convnet(path)
    return path


def _x(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 16, 16)).astype(np.float32)


def _ort(path, x: np.ndarray) -> np.ndarray:
    with onnx_runner("ort-cpu", path, threads=1) as r:
        return r.infer({"input": x})["logits"]


# the record ----------------------------------------------------------------------------------------------------------


def test_the_name_its_aliases_and_what_it_can_do():
    rec = B.get("openvino")
    assert B.canonical("OV") == B.canonical("openvino-runtime") == "openvino" and rec.family == "openvino"
    assert B.canonical("ort-ov") == "ort-openvino"  # ONNX Runtime's plugin provider keeps its own name
    assert rec.onnx and rec.device == "cpu" and "openvino" not in B.GPU_BACKENDS and "openvino" in B.targets("cpu")
    assert {p: rec.artifact(p) for p in ("fp32", "fp16", "bf16", "int8")} == {"fp32": "fp32", "fp16": None, "bf16": "fp32", "int8": "int8-cpu"}
    assert "openvino" in B.COMPUTE_PRECISION_BACKENDS["bf16"] and B.precision_problem("bf16", ["openvino"]) is None
    assert rec.accelerator("fp32") == {"name": "openvino"} and B.check_target("openvino") == "openvino" and B.checker("ov") is OV.check
    lines = rec.usage("bf16", 2)  # type: ignore[misc]
    assert any('"INFERENCE_PRECISION_HINT": "bf16"' in ln and '"INFERENCE_NUM_THREADS": 2' in ln for ln in lines)


def test_the_probe_names_a_missing_runtime(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert B.backend_problem("ov") == "the OpenVINO runtime (openvino) is not installed"


def test_a_missing_runtime_is_backend_unavailable_with_the_extra(monkeypatch, convnet):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as for a package not installed
    OV.core.cache_clear()
    try:
        with pytest.raises(BackendUnavailable, match="OpenVINO runtime") as e:
            onnx_runner("openvino", convnet).activate()
        assert "deployinc[openvino]" in (e.value.hint or "")
    finally:
        OV.core.cache_clear()


# the runner ----------------------------------------------------------------------------------------------------------


@needs_ov
def test_fp32_matches_ort_cpu_at_every_batch_size(convnet):
    with onnx_runner("openvino", convnet, threads=1) as r:
        assert (r.name, r.device, r.input_names(), r.output_names()) == ("openvino", "cpu", ["input"], ["logits"])
        assert r.details["openvino_config"] == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}
        assert r.compiled_shapes() == [((1, 3, 16, 16),)]  # the dynamic batch compiled static, for 1 first
        for n in (1, 5, 8):  # a model compiled for each batch size fed
            got = r.infer({"input": _x(n)})["logits"]
            np.testing.assert_allclose(got, _ort(convnet, _x(n)), rtol=1e-4, atol=1e-5)
        steps = r.bench_steps({"input": _x(2)})  # compiled for batch 2 before any timing
        assert r.compiled_shapes() == [((1, 3, 16, 16),), ((5, 3, 16, 16),), ((8, 3, 16, 16),), ((2, 3, 16, 16),)]
        steps.e2e()
        r.infer({"input": _x(3)})  # a fifth shape: the oldest is dropped
        assert len(r.compiled_shapes()) == r.MAX_SHAPES and ((1, 3, 16, 16),) not in r.compiled_shapes()
        assert all(p.get_partial_shape().is_static for c, _ in r._by_shape.values() for p in c.inputs)
    with onnx_runner("openvino", convnet.read_bytes(), path=convnet, name="mine") as r:  # an in-memory model
        assert r.name == "mine" and r.infer({"input": _x(2)})["logits"].shape == (2, 5)


@needs_ov
def test_the_usage_snippet_runs_the_file_at_a_static_batch_of_one(convnet, tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(convnet.read_bytes())
    monkeypatch.chdir(tmp_path)
    scope = {"images": _x(1)}
    exec("\n".join(B.get("openvino").usage("fp32", 1)), scope)  # noqa: S102 - the README/report lines, run as written
    assert scope["model"].inputs[0].partial_shape.is_static
    np.testing.assert_allclose(scope["logits"], _ort(convnet, _x(1)), rtol=1e-4, atol=1e-5)


@needs_ov
def test_int8_runs_a_qdq_file(convnet, tmp_path):
    qdq = _qdq(convnet, tmp_path / "net.int8.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(qdq).graph.node)
    with onnx_runner("openvino", qdq, precision="int8", threads=1) as r:
        got = r.infer({"input": _x(8)})["logits"]
    ref = _ort(convnet, _x(8))
    cos = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert cos > 0.99 and not np.array_equal(got, ref)  # int8 arithmetic: close, not identical


@needs_bf16
def test_bf16_computes_in_bf16_where_the_cpu_has_it(convnet):
    with onnx_runner("openvino", convnet, precision="bf16", threads=1) as r:
        assert r.details["openvino_config"]["INFERENCE_PRECISION_HINT"] == "bf16"
        got = r.infer({"input": _x(8)})["logits"]
    ref = _ort(convnet, _x(8))
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.1 and not np.allclose(got, ref, rtol=1e-6, atol=1e-7)


@needs_ov
def test_bf16_is_refused_where_the_cpu_cannot_compute_it(monkeypatch, convnet):
    monkeypatch.setattr(OV, "capabilities", lambda: ["WINOGRAD", "FP32", "INT8"])
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        onnx_runner("openvino", convnet, precision="bf16").activate()


@needs_ov
def test_a_file_openvino_cannot_read_is_an_onnx_file_error(tmp_path):
    from deployinc.errors import OnnxFileError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(OnnxFileError, match="OpenVINO runtime cannot read"):
        onnx_runner("openvino", bad).activate()


# the commands ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory):
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("ovrt") / "inception_cifar.onnx"
    export_pipeline("inception_cifar", out=out, threads=2)
    return out


@needs_ov
def test_verify_providers_openvino_passes(cli_runner, small_onnx, tmp_path):
    out = tmp_path / "v.json"
    r = invoke(cli_runner, ["verify", str(small_onnx), "--providers", "openvino", "--batch", "1,4", "--samples", "16", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = {b["backend"]: b for b in json.loads(out.read_text())["backends"]}
    assert rows["openvino"]["status"] == "ran" and rows["openvino"]["passed"] is True, rows


@needs_ov
def test_bench_backends_ort_cpu_and_openvino(cli_runner, small_onnx, tmp_path):
    out = tmp_path / "b.json"
    r = invoke(cli_runner, ["bench", str(small_onnx), "--backends", "ort-cpu,openvino", "--iters", "3", "--warmup", "1",
                            "--threads", "1", "--no-progress", "--json", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = {(x["backend"], x["precision"], x["status"]) for x in json.loads(out.read_text())["results"]}
    assert {("ort-cpu", "fp32", "ok"), ("openvino", "fp32", "ok")} <= got, got


def test_deploy_plans_openvino_candidates_where_the_runtime_runs():
    from deployinc.deploy.plan import plan
    from deployinc.deploy.request import DeployRequest

    req = DeployRequest(model="x", search=False)
    req.check()
    cands, left, target, _ = plan(req, lambda b: None if b in ("ort-cpu", "openvino") else f"{b} is not here", bf16_native=True, cpus=1)
    ids = [c.id for c in cands]
    assert target == "cpu" and {"fp32-openvino", "bf16-openvino", "int8-openvino", "int8-openvino-mixed"} <= set(ids), ids
    assert "fp16-openvino" not in ids and next(c for c in cands if c.id == "int8-openvino").artifact == "int8-cpu"
    cands, left, _, _ = plan(req, lambda b: None if b in ("ort-cpu", "openvino") else "no", bf16_native=False, cpus=1)
    assert "bf16-openvino" not in [c.id for c in cands] and any(d["backend"] == "openvino" and "bf16" in d["reason"] for d in left)


# check: the runtime asked, not a table --------------------------------------------------------------------------------


@needs_ov
def test_check_asks_the_runtime_and_passes_a_file_it_runs(cli_runner, small_onnx, tmp_path):
    out = tmp_path / "c.json"
    r = invoke(cli_runner, ["check", str(small_onnx), "--target", "ov", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "target: the OpenVINO runtime" in r.output and "query_model" in r.output and "verdict: compatible with openvino" in r.output
    rep = json.loads(out.read_text())
    assert rep["target"] == "openvino" and rep["compatible"] is True and rep["target_title"].startswith("the OpenVINO runtime")


@needs_ov
def test_check_names_an_operator_openvino_cannot_convert(cli_runner, tmp_path):
    path = tmp_path / "custom.onnx"
    node = helper.make_node("Foo", ["x"], ["y"], domain="com.example", name="foo0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]), str(path))
    r = invoke(cli_runner, ["check", str(path), "--target", "openvino"])
    assert r.exit_code == 1, r.output
    assert "No conversion rule found for operations: com.example.Foo" in r.output and "Traceback" not in r.output


def test_check_without_the_runtime_says_how_to_install_it(cli_runner, tmp_path, monkeypatch):
    def missing() -> None:
        raise BackendUnavailable("the OpenVINO runtime (openvino) is not installed", hint=OV.INSTALL_HINT)

    path = tmp_path / "net.onnx"
    _convnet(path)
    monkeypatch.setattr(OV, "core", missing)
    r = invoke(cli_runner, ["check", str(path), "--target", "openvino"])
    assert r.exit_code != 0 and "is not installed" in r.output and "deployinc[openvino]" in r.output and "Traceback" not in r.output


# without VNNI -------------------------------------------------------------------------------------------------------

_SATURATE = """
import sys
import numpy as np
from deployinc.factory import onnx_runner
from deployinc.precision.recipe import recipe_for
for path in sys.argv[1:]:
    with onnx_runner("openvino", path, threads=1) as r:
        print(float(r.infer({"x": np.ones((1, 64, 8, 8), np.float32)})["y"][0, 0, 4, 4]))
print(recipe_for("cpu").name)
"""


def _all_at_the_top(path, q: int) -> None:
    """QDQ Conv, 64 channels, 3x3: activations quantize to 255, every weight to ``q``: the centre output is
    64 x 9 x 1.0 x q x 0.01 exactly, and each u8 x s8 pair sum (2 x 255 x q) overflows int16 when q is 127."""
    w = np.full((32, 64, 3, 3), q, np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0), helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])]  # fmt: skip
    inits = [numpy_helper.from_array(np.float32(1 / 255), "xs"), numpy_helper.from_array(np.uint8(0), "xz"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.full(32, 0.01, np.float32), "ws"), numpy_helper.from_array(np.zeros(32, np.int8), "wz")]  # fmt: skip
    graph = helper.make_graph(nodes, "sat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@needs_ov
@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's AVX2 cap is an x86 setting")
def test_openvino_without_vnni_saturates_8_bit_weights_and_the_recipe_there_is_7_bit(tmp_path):
    """What the CPU recipe rests on, for OpenVINO as for ONNX Runtime: capped at AVX2 (what a Zen 3 has), oneDNN's
    u8 x s8 kernel sums pairs in int16 and an 8-bit weight saturates it; the 7-bit weights of reduce_range come out
    exact; and deployinc, seeing the cap, chooses reduce_range."""
    import os
    import subprocess
    import sys

    full, seven = tmp_path / "w127.onnx", tmp_path / "w63.onnx"
    _all_at_the_top(full, 127)
    _all_at_the_top(seven, 63)
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", _SATURATE, str(full), str(seven)], env={**env, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                         capture_output=True, text=True, timeout=300, check=True).stdout.split()  # fmt: skip
    got_full, got_seven, recipe = float(out[0]), float(out[1]), out[2]
    assert abs(got_seven - 64 * 9 * 63 * 0.01) < 1e-3  # 7-bit: exact
    assert got_full < 0.75 * (64 * 9 * 127 * 0.01)  # 8-bit: the int16 pair sums clipped (370 of 731.52 here)
    assert recipe == "u8s8-reduce-range"


# an int8 file's float layers in bf16 (--float-precision) ---------------------------------------------------------------


def _qdq(convnet, out, op_types=None, calib_scale: float = 1.0):
    """``convnet`` quantized by ONNX Runtime (QDQ, uint8 activations, int8 weights) on four batches of ``_x(4)``
    (times ``calib_scale``: below 1, ranges that clip real inputs); ``op_types``: only those ops (None: all it quantizes)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": _x(4) * np.float32(calib_scale)} for _ in range(4)])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.items, None)

    quantize_static(str(convnet), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, **({"op_types_to_quantize": op_types} if op_types else {}))  # fmt: skip
    return out


def _int8_conv_only(convnet, tmp_path):
    """The tiny classifier with its Conv in int8 and its Gemm left in float (a mixed file)."""
    return _qdq(convnet, tmp_path / "net.mixed.onnx", ["Conv"])


def test_the_float_precision_is_openvinos_hint_for_an_int8_file_and_nothing_else():
    assert OV.compile_config("int8", 2, "bf16") == {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 2}
    assert OV.compile_config("int8", None, None)["INFERENCE_PRECISION_HINT"] == "f32"
    assert OV.compile_config("int8", None, "fp32")["INFERENCE_PRECISION_HINT"] == "f32"
    assert B.get("openvino").float_precisions == ("bf16",) and B.get("ort-cpu").float_precisions == ()
    assert "INFERENCE_PRECISION_HINT\": \"bf16\"" in "\n".join(B.get("openvino").usage("int8", None, "bf16"))
    with pytest.raises(ValueError, match="ort-cpu cannot compute the float layers"):
        onnx_runner("ort-cpu", "m.onnx", precision="int8", float_precision="bf16")
    with pytest.raises(ValueError, match="of a fp32 file"):
        onnx_runner("openvino", "m.onnx", precision="fp32", float_precision="bf16")


def test_float_precision_problems_name_the_backend_and_the_precision():
    assert B.float_precision_problem(None, "fp32", ["ort-cpu"]) is None
    assert B.float_precision_problem("fp32", "fp32", ["ort-cpu"]) is None
    assert B.float_precision_problem("bf16", "int8", ["openvino"]) is None
    assert B.float_precision_problem("bf16", None, ["openvino"]) is None  # verify detects the file's precision later
    problem, hint = B.float_precision_problem("bf16", "int8", ["ort-cpu", "openvino"])
    assert "ort-cpu" in problem and hint == "use --providers openvino"
    problem, _ = B.float_precision_problem("bf16", "fp16", ["openvino"])
    assert "applies to an int8 file, and this one runs at fp16" in problem


@needs_bf16
def test_an_int8_file_with_its_float_layers_in_bf16_runs_them_in_bf16(convnet, tmp_path):
    qdq = _int8_conv_only(convnet, tmp_path)
    x = _x(8)
    with onnx_runner("openvino", qdq, precision="int8", threads=1) as r:
        assert r.details["openvino_config"]["INFERENCE_PRECISION_HINT"] == "f32" and "float_precision" not in r.details
        f32 = r.infer({"input": x})["logits"]
    with onnx_runner("openvino", qdq, precision="int8", threads=1, float_precision="bf16") as r:
        assert r.details["openvino_config"]["INFERENCE_PRECISION_HINT"] == "bf16" and r.details["float_precision"] == "bf16"
        bf = r.infer({"input": x})["logits"]
    cos = float((bf * f32).sum() / (np.linalg.norm(bf) * np.linalg.norm(f32)))
    assert cos > 0.999 and not np.array_equal(bf, f32)  # the Gemm left in float now rounds to bf16


@needs_ov
def test_float_layers_in_bf16_are_refused_where_the_cpu_cannot_compute_them(monkeypatch, convnet, tmp_path):
    qdq = _int8_conv_only(convnet, tmp_path)
    monkeypatch.setattr(OV, "capabilities", lambda: ["WINOGRAD", "FP32", "INT8"])
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        onnx_runner("openvino", qdq, precision="int8", float_precision="bf16").activate()


def test_verify_and_bench_refuse_float_precision_where_it_cannot_apply(cli_runner, convnet, tmp_path):
    out = tmp_path / "v.json"
    r = invoke(cli_runner, ["verify", str(convnet), "--against", str(convnet), "--providers", "cpu", "--float-precision", "bf16", "--json", str(out)])
    assert r.exit_code == 2 and "computes an int8 file's float layers in fp32" in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()
    r = invoke(cli_runner, ["verify", str(convnet), "--against", str(convnet), "--providers", "openvino", "--float-precision", "bf16"])
    assert r.exit_code == 2 and "applies to an int8 file, and this one runs at fp32" in r.output, r.output
    r = invoke(cli_runner, ["bench", str(convnet), "--backends", "openvino", "--precision", "fp32", "--float-precision", "bf16", "--no-progress"])
    assert r.exit_code == 2 and "applies to an int8 file" in r.output and "Traceback" not in r.output, r.output
    r = invoke(cli_runner, ["bench", str(convnet), "--backends", "openvino", "--float-precision", "bf16", "--no-progress"])
    assert r.exit_code == 2 and "net.onnx: --float-precision bf16 applies to an int8 file, and this one runs at fp32" in r.output, r.output
    r = invoke(cli_runner, ["verify", str(convnet), "--float-precision", "fp8"])
    assert r.exit_code == 2 and "fp8" in r.output, r.output


@needs_bf16
@pytest.mark.parametrize("isolate", ["--isolate", "--no-isolate"])
def test_verify_judges_an_int8_file_with_bf16_float_layers_by_the_int8_preset(cli_runner, convnet, tmp_path, isolate):
    qdq = _int8_conv_only(convnet, tmp_path)
    out = tmp_path / "v.json"
    r = invoke(cli_runner, ["verify", str(qdq), "--against", str(convnet), "--providers", "openvino", "--float-precision", "bf16",
                            "--samples", "8", "--batch", "1,4", "--localize", isolate, "--json", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert data["precision"] == "int8" and "float layers in bf16" in data["precision_source"], data["precision_source"]
    row = next(b for b in data["backends"] if b["backend"] == "openvino")
    assert row["status"] == "ran" and row["tolerance"]["name"] == "int8", row
    assert row["runner"]["openvino_config"]["INFERENCE_PRECISION_HINT"] == "bf16" and row["runner"]["float_precision"] == "bf16", row["runner"]
    assert bool(row["runner"].get("isolated")) is (isolate == "--isolate")
    assert r.exit_code in (0, 1) and "Traceback" not in r.output, r.output
    assert data["localization"] is not None and data["localization"]["backend"] == "openvino", data["localization"]  # ORT CPU beside it


def test_deploy_adds_openvinos_int8_candidates_with_bf16_float_layers_only_where_the_cpu_has_bf16():
    from deployinc.deploy.plan import plan
    from deployinc.deploy.request import DeployRequest

    def ids(bf16_native: bool, **kw: object) -> dict[str, object]:
        req = DeployRequest(model="x", **kw)  # type: ignore[arg-type]
        req.check()
        cands, *_ = plan(req, lambda b: None if b in ("ort-cpu", "openvino") else "no", bf16_native=bf16_native, cpus=2)
        return {c.id: c for c in cands}

    got = ids(True)
    floats = {k: c for k, c in got.items() if c.options.get("float")}  # type: ignore[attr-defined]
    assert set(floats) == {"int8-openvino-mixed-float-bf16"}, sorted(got)  # the mixed file's float layers; not ORT's
    assert floats["int8-openvino-mixed-float-bf16"].artifact == "int8-cpu-mixed-qdq-bf16"  # type: ignore[attr-defined]  # its own set
    assert floats["int8-openvino-mixed-float-bf16"].precision == "int8"  # type: ignore[attr-defined]
    assert not any(k.endswith("float-bf16") for k in ids(False))  # no native bf16: OpenVINO would emulate it
    assert not any(k.endswith("float-bf16") for k in ids(True, search=False))  # --no-search: one candidate each
    assert not any(k.endswith("float-bf16") for k in ids(True, precisions=("fp32", "int8")))  # bf16 not asked
    assert "int8-openvino-mixed-float-bf16" in ids(True, precisions=("int8", "bf16"))


def test_deploys_report_and_package_name_the_float_precision():
    from deployinc.deploy.package import precision_notes
    from deployinc.deploy.report import _run_snippet, verify_command

    look = {"backend": "openvino", "precision": "int8", "threads": None, "float_precision": "bf16"}
    assert "--providers openvino --precision int8 --float-precision bf16" in verify_command(look)
    assert "--float-precision" not in verify_command({**look, "float_precision": None})
    chosen = {"backend": "openvino", "precision": "int8", "options": {"fallback": "mixed", "float": "bf16"}}
    assert any('"INFERENCE_PRECISION_HINT": "bf16"' in line for line in _run_snippet(chosen))
    assert any("float layers computed in bf16" in n and "what the candidate without it did" in n for n in precision_notes(chosen, {}))
    widened = {"float_form": {"added": [{"node": "n"}], "fp32_float_layers": "PASS cosine 0.9921"}}
    assert any("with them in fp32 (a server without the hint) it was judged on the layer search's images: PASS cosine 0.9921" in n
               for n in precision_notes(chosen, widened))  # fmt: skip
    assert not any("bf16" in n for n in precision_notes({**chosen, "options": {}}, {}))


def test_deploys_report_says_the_shipped_files_float_layers_ran_in_bf16_and_what_triton_runs():
    from types import SimpleNamespace

    from deployinc.deploy.report import _triton_float_lines, precision_lines

    def res(cid: str, options: dict, verdict: str, p50: float, artifact: str = "int8-cpu-mixed-qdq") -> dict:
        return {"id": cid, "artifact": artifact, "backend": "openvino", "precision": "int8", "options": options, "verdict": verdict,
                "timing": {"1": {"p50_ms": p50}}}  # fmt: skip

    chosen = res("int8-openvino-mixed-float-bf16", {"fallback": "mixed", "float": "bf16"}, "pass", 8.0, artifact="int8-cpu-mixed-qdq-bf16")
    twin = res("int8-openvino-mixed", {"fallback": "mixed"}, "fail", 10.0)
    whole = res("int8-openvino", {}, "fail", 5.0, artifact="int8-cpu")
    layer = {"module": "conv1", "node": "n1", "gain": 1e-3, "share": 0.1}
    added = {"module": "layer2.conv", "node": "n2", "gain": 5e-4, "share": 0.05, "for": "bf16"}
    fallback = {"layers": [layer], "candidates": 3, "evaluations": 5, "seconds": 1.0, "float_share": 0.1}
    bf16 = {"backend": "openvino", "float_precision": "bf16", "images": 96, "evaluations": 2, "added": [added],
            "base_line": "FAIL cosine 0.9903", "line": "PASS cosine 0.9913", "fp32_float_layers": "PASS cosine 0.9921"}  # fmt: skip
    result = SimpleNamespace(results=[whole, twin, chosen], request=SimpleNamespace(batches=[1]),
                             artifacts={"int8-cpu-mixed-qdq": {"fallback": fallback},
                                        "int8-cpu-mixed-qdq-bf16": {"fallback": {**fallback, "layers": [layer, added]}, "float_form": bf16}})  # fmt: skip
    lines = precision_lines(result, chosen)
    assert any(line.startswith("openvino computes the layers the file leaves in float in bf16") for line in lines), lines
    assert any("8.00 ms against 5.00 ms for the whole-model int8 (1.60x), same run (its float layers in bf16, 1 more of them than "
               "int8-openvino-mixed; 10.00 ms for that file with them in fp32)." in line for line in lines), lines  # fmt: skip
    assert any("`layer2.conv`" in line and "added for its float layers in bf16" in line for line in lines), lines
    assert any(line.startswith("Judged on openvino with its float layers in bf16, on the search's 96 images by the search's tolerance: the searched "
                               "set FAIL cosine 0.9903; with 1 more layer(s) of the search's ranking") and "PASS cosine 0.9913 (2 evaluations)" in line for line in lines), lines  # fmt: skip
    same = precision_lines(SimpleNamespace(**{**vars(result), "artifacts": {"int8-cpu-mixed-qdq-bf16": {"fallback": fallback, "float_form": {**bf16, "added": []}}}}), chosen)
    assert any("(its float layers in bf16; 10.00 ms for the same file with them in fp32)." in line for line in same), same
    triton = " ".join(_triton_float_lines(result, chosen))  # the widened file is not the sibling's: its own fp32-float judgement
    assert "computes this file's float layers in fp32 (judged so on the layer search's images: PASS cosine 0.9921)" in triton, triton
    triton = " ".join(_triton_float_lines(SimpleNamespace(**{**vars(result), "artifacts": {}}), chosen))  # the same file as the sibling's
    assert "computes the float layers in fp32" in triton and "(int8-openvino-mixed: FAIL here)" in triton
    assert _triton_float_lines(result, twin) == []


@needs_bf16
def test_an_oracle_on_openvino_judges_the_form_deploy_ships(convnet, tmp_path):
    from deployinc.core.metrics import preset
    from deployinc.precision import fallback as F

    qdq = _int8_conv_only(convnet, tmp_path)
    x = _x(8)
    base = F.Oracle(x, "input", {"logits": _ort(convnet, x)}, preset("int8"), threads=1)
    on_ort = base.outputs(onnx.load(qdq))["logits"]
    on_ov = F.Oracle(x, "input", base.reference, base.tolerance, threads=1, backend="openvino", float_precision="bf16").outputs(onnx.load(qdq))["logits"]
    with onnx_runner("openvino", qdq, precision="int8", threads=1, float_precision="bf16") as r:
        direct = r.infer({"input": x})["logits"]
    assert np.allclose(on_ov, direct, rtol=1e-5, atol=1e-6) and not np.allclose(on_ov, on_ort, rtol=1e-6, atol=1e-7)


@needs_bf16
@pytest.mark.parametrize("case", ["holds", "widened", "spent", "not-bf16s"])
def test_the_bf16_form_of_a_mixed_file_keeps_the_layer_searchs_margin(monkeypatch, convnet, tmp_path, case):
    """deploy's int8-cpu-mixed-qdq-bf16 (the file of int8-openvino-mixed-float-bf16) is the mixed file judged on
    OpenVINO with its float layers in bf16, on the search's images by the search's tolerance (a tenth of the cosine
    budget in hand): kept where it holds; widened by the next layers of the search's ranking where bf16 spends the
    margin; no artifact (FAIL) where even those do not restore it; kept, judged by verify alone, where the form with
    fp32 float layers misses the margin too (not bf16's doing)."""
    from dataclasses import replace

    from deployinc.core.metrics import preset
    from deployinc.deploy import run as R
    from deployinc.deploy.request import DeployRequest
    from deployinc.io import atomic_write_text
    from deployinc.precision import fallback as F

    qdq = _qdq(convnet, tmp_path / "int8-cpu-mixed-qdq.onnx", ["Conv"], calib_scale=0.3)  # conv in int8 (ranges that clip), fc in float
    ranking = [{"node": "fc", "gain": 2e-3}, {"node": "conv", "gain": 1e-3}]
    fallback = {"float_nodes": ["fc"], "layers": [{"node": "fc", "module": "fc", "gain": 2e-3, "share": 0.1}], "ranking": ranking,
                "float_share": 0.1, "candidates": 2}  # fmt: skip
    atomic_write_text(tmp_path / "int8-cpu-mixed-qdq.json", json.dumps({"format": 1, "made": "quantize", "fallback": fallback}), force=True)
    x = _x(8)
    widened = F.keep_float(onnx.load(qdq), ["conv"], onnx.load(convnet), constant_weights=False)
    if case in ("spent", "widened"):  # a file on OpenVINO with fp32 float layers (this one, the widened one): bf16's error counts
        with onnx_runner("openvino", qdq if case == "spent" else widened.SerializeToString(), precision="int8", threads=1) as r:
            ref = r.infer({"input": x})["logits"]
    else:  # the fp32 model: the int8 layers' own error counts too
        ref = _ort(convnet, x)
    on = F.Oracle(x, "input", {"logits": ref}, preset("int8"), threads=1, backend="openvino", float_precision="bf16")
    whole, wide = (on.judge(m).metrics["cosine"] for m in (onnx.load(qdq), widened))
    assert wide > whole or case != "widened"  # against the widened file's own fp32 form, it is the closer one

    def preset_for(search_cosine: float) -> float:  # the preset whose search tolerance (a tenth in hand) is this cosine
        return 1 - (1 - search_cosine) / F.SEARCH_BUDGET_SHARE

    cosine = {"holds": preset_for(whole - 1e-4), "widened": preset_for((whole + wide) / 2), "spent": preset_for(0.999999)}.get(case, 0.999999999)
    oracle = F.Oracle(x, "input", {"logits": ref}, replace(preset("int8"), min_cosine=cosine), threads=1, set_size=4)
    monkeypatch.setattr(R, "_oracle", lambda *a, **k: oracle)
    req = DeployRequest(model="x", samples=4)
    artifacts: dict = {}
    out = tmp_path / "int8-cpu-mixed-qdq-bf16.onnx"
    if case == "spent":
        with pytest.raises(R.NoArtifact, match="spend the margin the layer search kept .* do not restore it") as err:
            R._artifact(req, tmp_path, convnet, "int8-cpu-mixed-qdq-bf16", artifacts)
        assert err.value.verdict == "fail" and not out.exists()
        return
    R._artifact(req, tmp_path, convnet, "int8-cpu-mixed-qdq-bf16", artifacts)  # made through deploy's artifact step
    info = artifacts["int8-cpu-mixed-qdq-bf16"]
    bf = info["float_form"]
    assert bf["backend"] == "openvino" and bf["images"] == 8 and out.is_file(), bf
    added = [r["node"] for r in bf["added"]]
    assert bool(added) is (case == "widened"), bf
    assert ("misses the layer search's margin on openvino" in bf.get("note", "")) is (case == "not-bf16s"), bf
    stamped = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}.get("deployinc.int8", "{}")).get("fallback", {})
    if case == "widened":
        assert added == ["conv"] and bf["line"].startswith("PASS") and bf["base_line"].startswith("FAIL") and info["fallback"]["float_nodes"] == ["fc", "conv"]
        assert stamped["float_nodes"] == ["fc", "conv"] and "ranking" not in stamped and "1 more layer(s) in float" in info["made"]
        assert all(r["for"] == "bf16" and r["module"] for r in bf["added"])
        assert bf["fp32_float_layers"].startswith("PASS")  # what a server without the hint computes, judged too
    else:  # the file as it was: the same layers in int8
        assert F.layer_candidates(onnx.load(out)) == F.layer_candidates(onnx.load(qdq)) == ["conv"]


@needs_bf16
def test_bench_runs_and_records_an_int8_files_float_layers_in_bf16(cli_runner, convnet, tmp_path, monkeypatch):
    import deployinc.bench.harness as H

    qdq = _int8_conv_only(convnet, tmp_path)
    asked: list[object] = []
    real = H.onnx_runner

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        asked.append(k.get("float_precision"))
        return real(*a, **k)

    monkeypatch.setattr(H, "onnx_runner", spy)
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    r = invoke(cli_runner, ["bench", str(qdq), "--backends", "openvino", "--float-precision", "bf16", "--iters", "3", "--warmup", "1",
                            "--no-progress", "--json", str(out), "--md", str(md)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert asked and set(asked) == {"bf16"}, asked  # the runner bench built and timed
    assert json.loads(out.read_text())["config"]["float_precision"] == "bf16"
    assert "an int8 file's float layers in bf16 (--float-precision)" in md.read_text()
    r = invoke(cli_runner, ["bench", str(qdq), "--backends", "torch", "--float-precision", "bf16", "--no-progress"])
    assert r.exit_code == 2 and "only eager torch was asked" in r.output and "Traceback" not in r.output, r.output


def test_a_baseline_benched_with_other_float_layers_is_noted():
    from deployinc.bench.regression import check_same_model
    from deployinc.bench.report import BenchReport

    a = BenchReport(model={"name": "m"}, config={"threads": 2, "float_precision": "bf16"}, environment={})
    b = BenchReport(model={"name": "m"}, config={"threads": 2}, environment={})
    assert any("float layers ran in bf16 here and in fp32 in the baseline" in n for n in check_same_model(a, b, "b.json"))
    assert not any("float layers" in n for n in check_same_model(b, b, "b.json"))


@needs_ov
def test_a_graph_that_will_not_take_a_static_batch_of_one_runs_as_read(tmp_path):
    """A graph whose batch is fixed inside it (a Reshape to a leading 2) cannot be compiled for batch 1: the runner
    falls back to the model as read (dynamic), says so in its details, and computes what ORT CPU computes."""
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, None])], [shape])  # fmt: skip
    path = tmp_path / "fixed-inside.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with onnx_runner("openvino", path, threads=1) as r:
        assert r.details["openvino_shapes"] == "as read (dynamic): a static shape would not compile"
        assert r.compiled_shapes() == []
        got = r.infer({"input": x})["out"]
    with onnx_runner("ort-cpu", path, threads=1) as o:
        np.testing.assert_allclose(got, o.infer({"input": x})["out"], rtol=1e-6)
