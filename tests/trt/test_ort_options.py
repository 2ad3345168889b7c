"""Optimisation profiles, ONNX Runtime TensorRT/CUDA provider options, TensorRT precision plans and parser-error
reports: everything of the TensorRT paths that needs no TensorRT."""

from __future__ import annotations

import os
import re
import stat
import types
from pathlib import Path

import numpy as np
import pytest

from deployinc.errors import BackendUnavailable, BadInputError
from deployinc.trt.profiles import (
    BatchRange,
    ort_shape_strings,
    parse_batch_range,
    profiles_for_inputs,
    profiles_for_model,
)


def conv_model(batch="N", value=0.1, qdq=False, name="input"):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 3, 3, 3), value, np.float32), "w")
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 6, 6])
    nodes, inits, src = [], [w], name
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", [name, "s", "z"], ["q"], name="q"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq")]
        src = "dq"
    nodes.append(helper.make_node("Conv", [src, "w"], ["y"], name="conv"))
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def save(model, path: Path) -> Path:
    from deployinc.io import save_onnx

    save_onnx(model, path)
    return path


# profiles ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("8", (8, 8, 8)), ("1,8,32", (1, 8, 32)), ("1:8:32", (1, 8, 32)), (" 2 , 4 , 4 ", (2, 4, 4)), (4, (4, 4, 4)),
     ((1, 2, 3), (1, 2, 3))],
)
def test_parse_batch_range(text, expected):
    r = parse_batch_range(text)
    assert (r.min, r.opt, r.max) == expected


@pytest.mark.parametrize("text", ["", "1,2", "0,1,2", "8,4,16", "1,8,x", "1,2,3,4", "1,8,100000", True])
def test_parse_batch_range_errors(text):
    with pytest.raises(BadInputError):
        parse_batch_range(text)


def test_profiles_for_dynamic_and_static_models():
    (p,) = profiles_for_model(conv_model("N"), "1,8,32")
    assert p.name == "input" and p.min == (1, 3, 8, 8) and p.opt == (8, 3, 8, 8) and p.max == (32, 3, 8, 8)
    (s,) = profiles_for_model(conv_model(1), "1")
    assert s.min == s.max == (1, 3, 8, 8)
    with pytest.raises(BadInputError, match="static batch of 1"):
        profiles_for_model(conv_model(1), "1,8,32")
    with pytest.raises(BadInputError, match="dynamic dimension"):
        profiles_for_inputs({"x": ["N", 3, "H", "W"]}, "1,2,4")
    (f,) = profiles_for_inputs({"x": ["N", 3, "H", "W"]}, "1,2,4", fixed={"x": [1, 3, 64, 64]})
    assert f.max == (4, 3, 64, 64)


def test_ort_shape_strings():
    profiles = profiles_for_inputs({"input": ["N", 3, 224, 224], "aux": ["N", 10]}, BatchRange(1, 8, 32))
    lo, opt, hi = ort_shape_strings(profiles)
    assert lo == "input:1x3x224x224,aux:1x10"
    assert opt == "input:8x3x224x224,aux:8x10"
    assert hi == "input:32x3x224x224,aux:32x10"
    with pytest.raises(BadInputError, match="cannot be written"):
        ort_shape_strings(profiles_for_inputs({"in:put": ["N", 3]}, "1"))


# ORT TensorRT provider options ------------------------------------------------------------------------------------


def _provider_library_option_names() -> set[str] | None:
    import onnxruntime

    lib = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    if not lib.exists():
        return None
    return {m.decode() for m in re.findall(rb"trt_[a-z0-9_]+", lib.read_bytes())}


def test_fp16_options_and_private_keyed_dirs(tmp_path):
    from deployinc.trt.ort_options import TRT_OPTION_NAMES, tensorrt_provider_config

    model = save(conv_model(), tmp_path / "m.onnx")
    cfg = tensorrt_provider_config(model, precision="fp16", batch="1,8,32", cache_dir=tmp_path / "cache",
                                   compute_capability="9.0", builder_optimization_level=4, cuda_graph=True)
    o = cfg.options
    assert o["trt_fp16_enable"] == "True" and o["trt_int8_enable"] == "False"
    assert o["trt_engine_cache_enable"] == "True" and o["trt_timing_cache_enable"] == "True"
    assert o["trt_builder_optimization_level"] == "4" and o["trt_cuda_graph_enable"] == "True"
    assert o["trt_profile_min_shapes"] == "input:1x3x8x8" and o["trt_profile_max_shapes"] == "input:32x3x8x8"
    assert o["trt_profile_opt_shapes"] == "input:8x3x8x8"
    assert set(o) <= TRT_OPTION_NAMES and all(isinstance(v, str) for v in o.values())
    engine_dir = Path(o["trt_engine_cache_path"])
    assert engine_dir.is_dir() and engine_dir.is_relative_to(tmp_path / "cache")
    for d in (engine_dir, Path(o["trt_timing_cache_path"]), tmp_path / "cache"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert cfg.key.digest() in str(engine_dir)


def test_option_names_exist_in_installed_provider():
    from deployinc.trt.ort_options import TRT_OPTION_NAMES

    names = _provider_library_option_names()
    if names is None:
        pytest.skip("onnxruntime has no TensorRT provider library here (CPU-only build)")
    assert {n for n in TRT_OPTION_NAMES if n.startswith("trt_")} <= names


def test_engine_dirs_differ_per_model_precision_profile(tmp_path):
    from deployinc.trt.ort_options import tensorrt_provider_options

    a = save(conv_model(value=0.1), tmp_path / "a.onnx")
    b = save(conv_model(value=0.2), tmp_path / "b.onnx")  # same structure, other weights (ORT issue #6455)
    kw = dict(cache_dir=tmp_path / "c", compute_capability="8.6")
    dirs = {
        tensorrt_provider_options(a, precision="fp32", **kw)["trt_engine_cache_path"],
        tensorrt_provider_options(b, precision="fp32", **kw)["trt_engine_cache_path"],
        tensorrt_provider_options(a, precision="fp16", **kw)["trt_engine_cache_path"],
        tensorrt_provider_options(a, precision="fp32", batch="1,2,4", **kw)["trt_engine_cache_path"],
        tensorrt_provider_options(a, precision="fp32", cache_dir=tmp_path / "c", compute_capability="9.0")[
            "trt_engine_cache_path"],
    }
    assert len(dirs) == 5
    timing = {tensorrt_provider_options(m, precision="fp32", **kw)["trt_timing_cache_path"] for m in (a, b)}
    assert len(timing) == 1  # timing data is per GPU/version, shared across models


def test_int8_needs_qdq_or_table(tmp_path):
    from deployinc.trt.ort_options import CALIBRATION_TABLE_NAME, tensorrt_provider_config

    plain = save(conv_model(), tmp_path / "plain.onnx")
    qdq = save(conv_model(qdq=True), tmp_path / "qdq.onnx")
    kw = dict(cache_dir=tmp_path / "c", compute_capability="9.0")
    with pytest.raises(BadInputError, match="no Q/DQ nodes"):
        tensorrt_provider_config(plain, precision="int8", **kw)
    cfg = tensorrt_provider_config(qdq, precision="int8", **kw)
    assert cfg.options["trt_int8_enable"] == "True" and cfg.options["trt_fp16_enable"] == "True"
    assert "trt_int8_calibration_table_name" not in cfg.options
    table = tmp_path / "calibration.flatbuffers"
    table.write_bytes(b"\x10\x00\x00\x00flatbuffer-ish")
    with pytest.raises(BadInputError, match="refuses a calibration table"):
        tensorrt_provider_config(qdq, precision="int8", calibration_table=table, **kw)
    cfg = tensorrt_provider_config(plain, precision="int8", calibration_table=table, fp16_fallback=False, **kw)
    assert cfg.options["trt_int8_calibration_table_name"] == CALIBRATION_TABLE_NAME
    assert cfg.options["trt_int8_use_native_calibration_table"] == "False"
    assert cfg.options["trt_fp16_enable"] == "False"
    assert (cfg.engine_cache_dir / CALIBRATION_TABLE_NAME).read_bytes() == table.read_bytes()
    native = tmp_path / "native.cache"
    native.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    cfg = tensorrt_provider_config(plain, precision="int8", calibration_table=native, **kw)
    assert cfg.options["trt_int8_use_native_calibration_table"] == "True"
    with pytest.raises(BadInputError, match="given with precision fp16"):
        tensorrt_provider_config(plain, precision="fp16", calibration_table=native, **kw)
    with pytest.raises(BadInputError, match="does not exist"):
        tensorrt_provider_config(plain, precision="int8", calibration_table=tmp_path / "missing", **kw)


@pytest.mark.parametrize("kw,match", [({"precision": "int4"}, "unknown precision"),
                                      ({"builder_optimization_level": 6}, "outside 0-5"),
                                      ({"builder_optimization_level": True}, "outside 0-5"),
                                      ({"workspace_bytes": 0}, "positive"),
                                      ({"batch": "4,2,1"}, "not ordered")])
def test_bad_provider_arguments(tmp_path, kw, match):
    from deployinc.trt.ort_options import tensorrt_provider_options

    m = save(conv_model(), tmp_path / "m.onnx")
    with pytest.raises(BadInputError, match=match):
        tensorrt_provider_options(m, cache_dir=tmp_path / "c", compute_capability="9.0", **kw)


def test_cuda_provider_options():
    from deployinc.trt.ort_options import CUDA_OPTION_NAMES, cuda_provider_options

    o = cuda_provider_options()
    assert o == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "enable_cuda_graph": "0", "use_tf32": "0"}
    o = cuda_provider_options(device_id=1, conv_algo_search="heuristic", cuda_graph=True, tf32=True,
                              gpu_mem_limit=2 << 30, prefer_nhwc=True)
    assert o["cudnn_conv_algo_search"] == "HEURISTIC" and o["enable_cuda_graph"] == "1" and o["prefer_nhwc"] == "1"
    assert set(o) <= CUDA_OPTION_NAMES
    with pytest.raises(BadInputError):
        cuda_provider_options(conv_algo_search="FASTEST")


# TensorRT precision plans and parser errors -----------------------------------------------------------------------


def test_plan_precision_weak_typing_trt10():
    from deployinc.trt.engine import plan_precision

    p = plan_precision("fp16", "10.8.0", has_weak_precision_flags=True, model_has_qdq=False)
    assert p.set_flags == ("FP16",) and not p.strongly_typed and not p.convert_to_fp16
    p = plan_precision("fp32", "10.8.0", has_weak_precision_flags=True, model_has_qdq=False)
    assert p.clear_flags == ("TF32",) and p.set_flags == ()
    assert plan_precision("fp32", "10.8.0", has_weak_precision_flags=True, model_has_qdq=False,
                          allow_tf32=True).clear_flags == ()
    p = plan_precision("int8", "10.8.0", has_weak_precision_flags=True, model_has_qdq=True)
    assert p.set_flags == ("INT8", "FP16")
    assert plan_precision("int8", "8.6.1", has_weak_precision_flags=True, model_has_qdq=True,
                          fp16_fallback=False).set_flags == ("INT8",)


def test_plan_precision_strong_typing_trt11():
    from deployinc.trt.engine import plan_precision

    p = plan_precision("fp16", "11.0.0", has_weak_precision_flags=False, model_has_qdq=False)
    assert p.strongly_typed and p.set_flags == () and p.convert_to_fp16
    p = plan_precision("fp16", "11.0.0", has_weak_precision_flags=False, model_has_qdq=False, model_is_fp16=True)
    assert not p.convert_to_fp16
    p = plan_precision("int8", "11.2.0", has_weak_precision_flags=False, model_has_qdq=True)
    assert p.strongly_typed and p.set_flags == ()
    # a TensorRT 10 build whose bindings lack the flags also gets strong typing
    assert plan_precision("fp16", "10.15.0", has_weak_precision_flags=False, model_has_qdq=False).strongly_typed


def test_plan_precision_refuses_int8_without_qdq():
    from deployinc.trt.engine import plan_precision

    with pytest.raises(BadInputError, match="QDQ"):
        plan_precision("int8", "10.8.0", has_weak_precision_flags=True, model_has_qdq=False)
    with pytest.raises(BadInputError, match="unknown precision"):
        plan_precision("bf8", "10.8.0", has_weak_precision_flags=True, model_has_qdq=False)


def test_parser_errors_are_reported_per_node():
    from deployinc.trt.engine import format_parser_errors, parser_errors

    class Err:
        def __init__(self, node, desc, name=None, op=None):
            self._n, self._d = node, desc
            if name is not None:
                self.node_name = lambda: name
                self.node_operator = lambda: op

        def node(self):
            return self._n

        def desc(self):
            return self._d

        def code(self):
            return "ErrorCode.UNSUPPORTED_NODE"

    parser = types.SimpleNamespace(num_errors=2)
    errs = [Err(0, "no importer for op Foo", name="/foo/Foo", op="Foo"), Err(1, "Indices output unsupported")]
    parser.get_error = lambda i: errs[i]
    found = parser_errors(parser)
    assert found[0]["node_name"] == "/foo/Foo" and "node_name" not in found[1]
    model = types.SimpleNamespace(graph=types.SimpleNamespace(node=[
        types.SimpleNamespace(name="/foo/Foo", op_type="Foo"), types.SimpleNamespace(name="/pool/MaxPool", op_type="MaxPool")]))
    lines = format_parser_errors(found, model)
    assert lines == ["/foo/Foo (Foo): no importer for op Foo", "/pool/MaxPool (MaxPool): Indices output unsupported"]


def test_runner_without_tensorrt_is_unavailable(tmp_path):
    from deployinc.lazy import available
    from deployinc.trt.runner import TensorRTRunner

    if available("tensorrt"):
        pytest.skip("tensorrt is importable here; the integration tests cover it")
    runner = TensorRTRunner(save(conv_model(), tmp_path / "m.onnx"), precision="fp16")
    with pytest.raises(BackendUnavailable, match="tensorrt is not importable") as info:
        runner.activate()
    assert info.value.hint and "TensorRT" in info.value.hint
    assert not runner.is_active
