"""The opset down-conversion's rules and refusals (deployinc.export.downgrade), on tiny hand-built opset-18 graphs,
and the IR-version note of the export reaching the user."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployinc.errors import ExportError
from deployinc.export.downgrade import downgrade_opset

X_SHAPE = [1, 3, 4, 4]


def _model(nodes, out_shape, initializers=(), opset=18, out_type=TensorProto.FLOAT, full_check=True):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE)],
        [helper.make_tensor_value_info("y", out_type, out_shape)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # read by every onnxruntime deployinc supports
    onnx.checker.check_model(model, full_check=full_check)
    return model


def _run(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _x():
    return np.random.default_rng(0).standard_normal(X_SHAPE).astype(np.float32)


# ReduceMean: axes input -> attribute; noop_with_empty_axes must be 0; axes must be constant -----------------------


def _reduce_mean(noop=0, computed_axes=False):
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    nodes = []
    axes_name = "axes"
    if computed_axes:  # the axes are the output of a node, not a constant or an initializer
        nodes.append(helper.make_node("Identity", ["axes"], ["axes_computed"], name="axes_id"))
        axes_name = "axes_computed"
    nodes.append(helper.make_node("ReduceMean", ["x", axes_name], ["y"], name="mean", keepdims=1, noop_with_empty_axes=noop))
    return _model(nodes, [1, 3, 1, 1], [axes])


@pytest.mark.parametrize("target", [17, 13])
def test_reduce_mean_default_case_lowers_and_agrees(target):
    model = _reduce_mean()
    low = downgrade_opset(model, target)
    assert _opset(low) == target
    onnx.checker.check_model(low, full_check=True)
    (node,) = low.graph.node
    assert list(node.input) == ["x"]
    assert _attrs(node) == {"axes": [2, 3], "keepdims": 1}  # noop_with_empty_axes=0 (its default) dropped
    assert not low.graph.initializer  # the constant only the axes input used is gone
    x = _x()
    np.testing.assert_allclose(_run(low, x), _run(model, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_run(low, x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6, atol=1e-6)
    assert _opset(model) == 18 and len(model.graph.node[0].input) == 2  # the input model is not changed


def test_reduce_mean_refuses_non_default_noop_with_empty_axes():
    with pytest.raises(ExportError, match=r"node mean \(ReduceMean\) uses attribute 'noop_with_empty_axes', which opset 17 lacks"):
        downgrade_opset(_reduce_mean(noop=1), 17)


def test_reduce_mean_refuses_computed_axes():
    with pytest.raises(ExportError, match=r"node mean \(ReduceMean\) has computed axes; opset 17 needs constant axes"):
        downgrade_opset(_reduce_mean(computed_axes=True), 17)


# Reshape: allowzero=1 only when the constant shape holds no 0 ----------------------------------------------------


def _reshape(allowzero, shape=None):
    inits, nodes = [], []
    if shape is None:  # a computed shape
        nodes.append(helper.make_node("Shape", ["x"], ["shape"], name="shape_of"))
        out_shape = X_SHAPE
    else:
        inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), "shape"))
        out_shape = [1, 48] if shape == [1, -1] else [0, 48]
    nodes.append(helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape", allowzero=allowzero))
    return _model(nodes, out_shape, inits, full_check=0 not in out_shape)  # [0, -1] cannot hold x: not run


@pytest.mark.parametrize("allowzero", [0, 1])
def test_reshape_allowzero_without_zeros_lowers_and_agrees(allowzero):
    model = _reshape(allowzero, [1, -1])
    low = downgrade_opset(model, 13)
    assert _opset(low) == 13
    onnx.checker.check_model(low, full_check=True)
    (node,) = low.graph.node
    assert "allowzero" not in _attrs(node)
    x = _x()
    np.testing.assert_array_equal(_run(low, x), x.reshape(1, -1))


def test_reshape_refuses_allowzero_with_a_zero_in_the_shape():
    with pytest.raises(ExportError, match=r"node reshape reshapes with allowzero=1 to a shape that may hold 0"):
        downgrade_opset(_reshape(1, [0, -1]), 13)


def test_reshape_refuses_allowzero_with_a_computed_shape():
    with pytest.raises(ExportError, match=r"node reshape reshapes with allowzero=1 to a shape that may hold 0"):
        downgrade_opset(_reshape(1, None), 13)


# attributes newer schemas added: dropped at their default, refused otherwise --------------------------------------


def _resize(antialias):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear", antialias=antialias)
    return _model([node], [1, 3, 8, 8], [scales])


def test_new_attribute_at_its_default_is_dropped():
    model = _resize(0)
    low = downgrade_opset(model, 17)
    assert _opset(low) == 17
    onnx.checker.check_model(low, full_check=True)
    assert _attrs(low.graph.node[0]) == {"mode": b"linear"}
    x = _x()
    np.testing.assert_allclose(_run(low, x), _run(model, x), rtol=1e-6, atol=1e-6)


def test_new_attribute_off_its_default_is_refused_not_dropped():
    with pytest.raises(ExportError, match=r"node up \(Resize\) uses attribute 'antialias', which opset 17 lacks") as info:
        downgrade_opset(_resize(1), 17)
    assert "--opset" in info.value.hint


# the IR-version note of the export ----------------------------------------------------------------------------------


def test_finish_export_keeps_the_ir_version_note(monkeypatch):
    import deployinc.export as E

    model = _model([helper.make_node("Relu", ["x"], ["y"])], X_SHAPE, opset=17)
    model.ir_version = 8
    monkeypatch.setattr(E, "max_readable_ir_version", lambda: 7)
    out = E.finish_export(model, 17, "torchscript")
    assert out.ir_version == 7
    notes = [p.value for p in out.metadata_props if p.key == "deployinc.export.note"]
    assert notes == ["IR version 8 lowered to 7, the highest the installed onnxruntime reads"]

    fresh = _model([helper.make_node("Relu", ["x"], ["y"])], X_SHAPE, opset=17)
    monkeypatch.setattr(E, "max_readable_ir_version", lambda: 8)
    assert not E.finish_export(fresh, 17, "torchscript").metadata_props  # nothing lowered, nothing noted


def test_pipeline_tells_the_user_the_ir_version_was_lowered(tinynets_dir, monkeypatch):
    import deployinc.export as E

    monkeypatch.setattr(E, "max_readable_ir_version", lambda: 7)  # below what any exporter writes
    lines: list[str] = []
    r = E.export_pipeline("tinynets:build", input_shape=(1, 3, 16, 16), exporter="torchscript", simplify=False, quick_check=False, log=lines.append)
    assert r.model.ir_version == 7
    assert any(n.startswith("IR version ") and n.endswith("lowered to 7, the highest the installed onnxruntime reads") for n in r.notes), r.notes
    assert not [p for p in r.model.metadata_props if p.key == "deployinc.export.note"]  # moved, not saved in the file
