"""deployinc check: the static compatibility check against TensorRT's parser matrix and ONNX Runtime's kernels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deployinc.errors import BadInputError
from deployinc.trt.check import TARGETS, check_model, resolve_target
from tests.conftest import invoke


def build(nodes, inits=(), *, in_type=1, out_shape=None, opset=17, ir=8, inputs=None, outputs=None, domains=()):
    """A model from nodes over input 'x' (N x 3 x 8 x 8) to output 'y'."""
    from onnx import helper

    x = inputs or [helper.make_tensor_value_info("x", in_type, ["N", 3, 8, 8])]
    y = outputs or [helper.make_tensor_value_info("y", in_type, out_shape)]
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(helper.make_graph(nodes, "g", x, y, list(inits)), opset_imports=imports)
    m.ir_version = ir
    return m


def arr(name, value, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def cnn(opset=17, dtype=np.float32, in_type=1):
    from onnx import helper

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="/stem/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="/stem/relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="/stem/pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="/gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="/flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="/fc", transB=1),
    ]
    inits = [arr("w", np.random.default_rng(0).normal(size=(4, 3, 3, 3)), dtype), arr("fw", np.ones((5, 4)), dtype),
             arr("fb", np.zeros(5), dtype)]
    return build(nodes, inits, in_type=in_type, opset=opset)


@pytest.mark.parametrize("target", TARGETS)
def test_plain_cnn_is_compatible_everywhere(target):
    r = check_model(cnn(), target)
    assert r.compatible and not r.issues, r.format()
    assert r.op_counts["Conv"] == 1 and r.node_count == 6 and "verdict: compatible" in r.format()


def test_unknown_target_lists_known():
    with pytest.raises(BadInputError) as info:
        resolve_target("tensort")
    assert "tensort" in info.value.message
    assert "tensorrt, ort-cpu, ort-cuda" in info.value.hint and "did you mean tensorrt" in info.value.hint


def trt_errors(model):
    r = check_model(model, "tensorrt")
    return {(i.node, i.op): i.reason for i in r.errors}, r


def test_tensorrt_unsupported_ops_named():
    from onnx import helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("MaxUnpool", ["a", "idx"], ["b"], name="/up/MaxUnpool", kernel_shape=[2, 2]),
        helper.make_node("MyPlugin", ["b"], ["c"], name="/custom", domain="com.example"),
        helper.make_node("Identity", ["c"], ["y"], name="id"),
    ]
    errs, r = trt_errors(build(nodes, [arr("idx", np.zeros((1, 3, 4, 4)), np.int64)], domains=["com.example"]))
    assert "marked unsupported" in errs[("/up/MaxUnpool", "MaxUnpool")]
    assert "plugin" in errs[("/custom", "MyPlugin")]
    assert not r.compatible and "INCOMPATIBLE" in r.format() and "/up/MaxUnpool (MaxUnpool)" in r.format()


def test_tensorrt_documented_restrictions():
    from onnx import helper

    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool_idx", kernel_shape=[2, 2]),
        helper.make_node("AveragePool", ["p"], ["a"], name="pool_dil", kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("Resize", ["a", "", "sc"], ["r"], name="cubic", mode="cubic"),
        helper.make_node("Resize", ["r", "", "sc"], ["r2"], name="crop", coordinate_transformation_mode="tf_crop_and_resize"),
        helper.make_node("Resize", ["r2", "", "sc"], ["r3"], name="aa", antialias=1, mode="linear"),
        helper.make_node("Dropout", ["r3", "ratio", "train"], ["d"], name="drop_train"),
        helper.make_node("QuantizeLinear", ["d", "s", "zp"], ["q"], name="q_nonzero"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq_nonzero"),
        helper.make_node("TopK", ["dq", "k"], ["t", "ti"], name="topk", axis=1, sorted=0),
        helper.make_node("Identity", ["t"], ["y"], name="out"),
    ]
    inits = [arr("sc", [1, 1, 2, 2]), arr("ratio", 0.5), arr("train", True, np.bool_), arr("s", 0.1),
             arr("zp", 3, np.int8), arr("k", [1], np.int64)]
    errs, _ = trt_errors(build(nodes, inits, opset=19))
    assert "Indices" in errs[("pool_idx", "MaxPool")]
    assert "dilations" in errs[("pool_dil", "AveragePool")]
    assert "cubic" in errs[("cubic", "Resize")]
    assert "tf_crop_and_resize" in errs[("crop", "Resize")]
    assert "antialias" in errs[("aa", "Resize")]
    assert "is_training" in errs[("drop_train", "Dropout")]
    assert "zero point" in errs[("q_nonzero", "QuantizeLinear")]
    assert "zero point" in errs[("dq_nonzero", "DequantizeLinear")]
    assert "sorted" in errs[("topk", "TopK")]


def test_tensorrt_uint8_qdq_and_int32_bias_and_opset():
    from onnx import helper

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q_u8"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq_u8"),
        helper.make_node("DequantizeLinear", ["b", "s"], ["bf"], name="bias_dq"),
        helper.make_node("Add", ["dq", "bf"], ["y"], name="add"),
    ]
    inits = [arr("s", 0.1), arr("z", 0, np.uint8), arr("b", np.zeros((1, 3, 1, 1)), np.int32)]
    errs, _ = trt_errors(build(nodes, inits))
    assert "uint8" in errs[("q_u8", "QuantizeLinear")]
    assert "UINT8" in errs[("dq_u8", "DequantizeLinear")] and "symmetric" in errs[("dq_u8", "DequantizeLinear")]
    assert "INT32" in errs[("bias_dq", "DequantizeLinear")]
    errs, _ = trt_errors(cnn(opset=8))
    assert "opset 8" in errs[("", "<opset>")]


def test_tensorrt_double_is_a_warning_reduce_axes_an_error():
    from onnx import helper

    r = check_model(cnn(dtype=np.float64, in_type=11), "tensorrt")
    assert r.compatible and any("DOUBLE" in w.reason for w in r.warnings)
    nodes = [helper.make_node("Shape", ["x"], ["sh"], name="shape"),
             helper.make_node("Slice", ["sh", "st", "en"], ["ax"], name="slice"),
             helper.make_node("ReduceMean", ["x", "ax"], ["y"], name="/reduce_dynamic_axes")]
    errs, _ = trt_errors(build(nodes, [arr("st", [2], np.int64), arr("en", [4], np.int64)], opset=18))
    assert "axes must be an initializer" in errs[("/reduce_dynamic_axes", "ReduceMean")]


def test_ort_targets():
    r = check_model(cnn(dtype=np.float64, in_type=11), "ort-cpu")
    assert not r.compatible and any(i.node == "/stem/conv" and "DOUBLE" in i.reason for i in r.errors)
    r = check_model(cnn(dtype=np.float16, in_type=10), "ort-cpu")
    assert r.compatible and any("Casts" in w.reason for w in r.warnings)
    r = check_model(cnn(dtype=np.float16, in_type=10), "ort-cuda")
    assert r.compatible and not r.issues
    from onnx import helper

    bf16 = build([helper.make_node("LeakyRelu", ["x"], ["y"], name="/act")], in_type=16)
    r = check_model(bf16, "ort-cuda")
    assert r.compatible and [f.node for f in r.fallbacks] == ["/act"] and "CPU" in r.fallbacks[0].reason
    m = cnn()
    m.ir_version = 14
    r = check_model(m, "ort-cpu")
    assert not r.compatible and "IR version 14" in r.errors[0].reason
    assert check_model(m, "tensorrt").compatible


def test_ort_custom_domain_is_an_error():
    from onnx import helper

    nodes = [helper.make_node("Fancy", ["x"], ["y"], name="/fancy", domain="org.custom")]
    r = check_model(build(nodes, domains=["org.custom"]), "ort-cpu")
    assert not r.compatible and "custom-op library" in r.errors[0].reason


# CLI ---------------------------------------------------------------------------------------------------------------


def test_cli_exit_codes(tmp_path, cli_runner):
    from onnx import helper

    from deployinc.io import save_onnx

    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    save_onnx(cnn(), good)
    nodes = [helper.make_node("Unique", ["x"], ["y"], name="/uniq")]
    save_onnx(build(nodes), bad)
    r = invoke(cli_runner, ["check", str(good), "--target", "tensorrt", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "verdict: compatible with tensorrt" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["compatible"] is True
    r = invoke(cli_runner, ["check", str(bad), "--target", "tensorrt"])
    assert r.exit_code == 1
    assert "/uniq (Unique)" in r.stdout and "error:" in r.stderr and "/uniq" in r.stderr
    r = invoke(cli_runner, ["check", str(good), "--target", "onnxruntime"])
    assert r.exit_code == 2 and "unknown target 'onnxruntime'" in r.stderr
    assert "tensorrt, ort-cpu, ort-cuda" in r.stderr
    r = invoke(cli_runner, ["check", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 2 and "does not exist" in r.stderr
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    assert invoke(cli_runner, ["check", str(tmp_path / "junk.onnx")]).exit_code == 2


def test_cli_strict_fails_on_warnings(tmp_path, cli_runner):
    from deployinc.io import save_onnx

    p = tmp_path / "half.onnx"
    save_onnx(cnn(dtype=np.float16, in_type=10), p)
    assert invoke(cli_runner, ["check", str(p), "--target", "ort-cpu"]).exit_code == 0
    r = invoke(cli_runner, ["check", str(p), "--target", "ort-cpu", "--strict"])
    assert r.exit_code == 1 and "--strict" in r.stderr
