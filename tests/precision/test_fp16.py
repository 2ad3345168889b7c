"""fp16 conversion: IO types, kept-fp32 ops and nodes, the overflow report naming layers, the convert command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deployinc.errors import CheckFailed
from tests.conftest import invoke


def convnet(scale: float = 1.0, seed: int = 0):
    """Conv-Relu-Conv-Relu-GAP-Flatten-Gemm on N x 3 x 16 x 16; ``scale`` multiplies the second conv's weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = (rng.normal(0, 0.2, (16, 8, 3, 3)) * scale).astype(np.float32)
    fw = rng.normal(0, 0.3, (5, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (fw, "fw"), (np.zeros(5, np.float32), "fb"))]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="/conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="/conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="/gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="/flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="/fc", transB=1),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])
    m = helper.make_model(helper.make_graph(nodes, "convnet", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def images(n=4, seed=0):
    from deployinc.core.images import natural_images

    return natural_images(n, (3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), seed=seed)


def test_convert_keeps_io_fp32_and_matches():
    from onnx import TensorProto

    from deployinc.precision.fp16 import convert_to_fp16

    res = convert_to_fp16(convnet(), images=images())
    m = res.model
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(t.data_type == TensorProto.FLOAT16 for t in m.graph.initializer)
    assert res.overflow is not None and res.overflow.ok and res.overflow.tensors_checked == 7
    assert res.parity["min_cosine"] > 0.999 and res.parity["top1_agreement"] == 1.0
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["deployinc.precision"]) == "fp16"


def test_fp16_io_and_kept_ops():
    from onnx import TensorProto

    from deployinc.precision.fp16 import convert_to_fp16

    m = convert_to_fp16(convnet(), keep_io_types=False).model
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    kept = convert_to_fp16(convnet(), keep_fp32_ops=["Gemm"], keep_fp32_nodes=["/conv1"]).model
    inits = {t.name: t.data_type for t in kept.graph.initializer}
    assert inits["fw"] == TensorProto.FLOAT and inits["w1"] == TensorProto.FLOAT and inits["w2"] == TensorProto.FLOAT16


def test_overflow_names_layers_and_can_keep_them_fp32():
    from deployinc.precision.fp16 import FP16_MAX, convert_to_fp16, overflow_report

    big = convnet(scale=5e5)
    rep = overflow_report(big, images())
    names = {r.node for r in rep.overflowing}
    assert "/conv2" in names and "/conv1" not in names
    assert all(r.max_abs > FP16_MAX for r in rep.overflowing)
    with pytest.raises(CheckFailed) as info:
        convert_to_fp16(big, images=images())
    assert "/conv2 (Conv)" in info.value.message and "--keep-overflow-fp32" in info.value.hint
    res = convert_to_fp16(big, images=images(), keep_overflow_fp32=True)
    assert "/conv2" in res.kept_fp32_nodes and "/relu2" in res.kept_fp32_nodes  # producer and consumer
    assert np.isfinite(res.parity["max_abs"]) and res.parity["min_cosine"] > 0.999


def test_unknown_node_name_is_bad_input():
    from deployinc.errors import BadInputError
    from deployinc.precision.fp16 import convert_to_fp16

    with pytest.raises(BadInputError, match="no node named"):
        convert_to_fp16(convnet(), keep_fp32_nodes=["/nope"])


def test_cli_convert(tmp_path, cli_runner):
    from deployinc.io import load_onnx, save_onnx

    src = tmp_path / "net.onnx"
    save_onnx(convnet(), src)
    r = invoke(cli_runner, ["convert", str(src), "--precision", "fp16", "--samples", "4"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "net.fp16.onnx"
    assert out.exists() and "no layer exceeds the fp16 range" in r.stdout and "min cosine" in r.stdout
    assert load_onnx(out).model.graph.output[0].type.tensor_type.elem_type == 1
    r = invoke(cli_runner, ["convert", str(src)])
    assert r.exit_code == 2 and "exists" in r.stderr and "--force" in r.stderr
    r = invoke(cli_runner, ["convert", str(src), "--precision", "bf16"])
    assert r.exit_code == 2

    big = tmp_path / "big.onnx"
    save_onnx(convnet(scale=5e5), big)
    r = invoke(cli_runner, ["convert", str(big), "--samples", "4"])
    assert r.exit_code == 1 and "/conv2 (Conv)" in r.stderr and "fp16 range" in r.stderr
    assert not (tmp_path / "big.fp16.onnx").exists()
    r = invoke(cli_runner, ["convert", str(big), "--samples", "4", "--keep-overflow-fp32"])
    assert r.exit_code == 0 and "/conv2 (Conv)" in r.stdout and (tmp_path / "big.fp16.onnx").exists()


def test_overflow_on_negative_only_values_is_reported():
    """A layer whose activations are all <= 0 and reach -1e6: its largest *magnitude* is over 65504 (float16 turns
    it into -inf), though its largest value is 0."""
    from onnx import TensorProto, helper, numpy_helper

    from deployinc.precision.fp16 import FP16_MAX, overflow_report

    k = numpy_helper.from_array(np.array(-1e6, np.float32), "k")
    fw = numpy_helper.from_array(np.full((5, 3), 1e-3, np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(5, np.float32), "fb")
    nodes = [
        helper.make_node("Relu", ["input"], ["r"], name="/relu"),
        helper.make_node("Mul", ["r", "k"], ["neg"], name="/negate"),  # <= 0 everywhere, down to about -1e6
        helper.make_node("ReduceMax", ["neg"], ["top"], name="/rmax", axes=[2, 3], keepdims=0),  # max over space: 0 or below
        helper.make_node("Gemm", ["top", "fw", "fb"], ["logits"], name="/fc", transB=1),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])
    m = helper.make_model(helper.make_graph(nodes, "neg", [x], [y], [k, fw, fb]), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    rep = overflow_report(m, images())
    over = {r.node: r for r in rep.overflowing}
    assert "/negate" in over and over["/negate"].max_abs > FP16_MAX and over["/negate"].finite
    assert "/relu" not in over and not rep.ok
