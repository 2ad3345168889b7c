"""deployinc.export: both exporters, opset boundaries and down-conversion, the provenance metadata round trip."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deployinc.errors import BadInputError, ExportError
from deployinc.export import SUPPORTED_OPSETS, export_onnx, export_pipeline, max_readable_ir_version
from deployinc.export.downgrade import downgrade_opset
from deployinc.metadata import Provenance, read_provenance, write_provenance
from deployinc.prepare import prepare


@pytest.fixture(scope="module")
def tiny_prepared(tinynets_dir):
    import importlib

    torch.manual_seed(0)
    m = importlib.import_module("tinynets").build()
    prepared, _ = prepare(m, (1, 3, 16, 16))
    return prepared


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def _opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_exporters_at_opset_boundaries(tiny_prepared, exporter, opset):
    model = export_onnx(tiny_prepared, (1, 3, 16, 16), opset=opset, exporter=exporter)
    assert _opset(model) == opset
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"BatchNormalization", "Dropout"}
    assert model.ir_version <= max_readable_ir_version()
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_prepared(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(model, x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("opset", [12, 22])
def test_unsupported_opset_is_a_clear_error(tiny_prepared, exporter, opset):
    with pytest.raises(BadInputError, match=f"opset {opset} is not supported by the {exporter} exporter"):
        export_onnx(tiny_prepared, (1, 3, 16, 16), opset=opset, exporter=exporter)
    assert SUPPORTED_OPSETS[exporter][0] == 13


def test_static_batch(tiny_prepared):
    model = export_onnx(tiny_prepared, (2, 3, 16, 16), opset=17, exporter="torchscript", dynamic_batch=False)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_downgrade_hardswish_to_opset_13_keeps_numbers(tinynets_dir):
    import importlib

    m = importlib.import_module("tinynets").hardswish_net().eval()
    prepared, _ = prepare(m, (1, 3, 16, 16))
    model = export_onnx(prepared, (1, 3, 16, 16), opset=13, exporter="dynamo")
    ops = {n.op_type for n in model.graph.node}
    assert "HardSwish" not in ops and {"HardSigmoid", "Mul"} <= ops
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32) * 3
    with torch.no_grad():
        ref = prepared(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(model, x), ref, atol=1e-5, rtol=1e-5)


def test_downgrade_refuses_ops_without_a_rule():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    node = helper.make_node("Gelu", ["x"], ["y"], name="my_gelu")  # Gelu exists since opset 20
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(ExportError, match="my_gelu: op Gelu does not exist in opset 17"):
        downgrade_opset(m, 17)


def test_metadata_round_trip():
    from onnx import helper

    m = helper.make_model(helper.make_graph([], "g", [], []))
    m.metadata_props.add(key="author", value="someone")
    prov = Provenance(model_spec="googlenet", weights="none", seed=3, input_shape=[1, 3, 224, 224], passes=["eval"], tolerances={"max_rel": 1e-3})
    write_provenance(m, prov)
    write_provenance(m, prov)  # idempotent: no duplicate keys
    keys = [p.key for p in m.metadata_props]
    assert len(keys) == len(set(keys)) and "author" in keys
    back = read_provenance(onnx.load_model_from_string(m.SerializeToString()))
    assert back == prov
    assert read_provenance(helper.make_model(helper.make_graph([], "g", [], []))) is None


def test_pipeline_on_user_factory_writes_checked_file(tinynets_dir, tmp_path):
    out = tmp_path / "tiny.onnx"
    result = export_pipeline("tinynets:build", out=out, input_shape=(1, 3, 32, 32), num_classes=7, exporter="torchscript")
    assert result.passed and out.exists()
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    prov = read_provenance(model)
    assert prov.model_spec == "tinynets:build" and prov.num_classes == 7 and prov.input_shape == [1, 3, 32, 32]
    assert not prov.bn_recalibrated and prov.state_sha256 and "fold_conv_bn" in prov.passes and "onnxsim" in prov.passes
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7
    assert result.simplify_report.before and result.simplify_report.after


def test_pipeline_simplify_skipped_and_onnxslim(tinynets_dir):
    r = export_pipeline("tinynets:build", input_shape=(1, 3, 16, 16), exporter="torchscript", simplify=False)
    assert r.simplify_report is None and "onnxsim" not in r.provenance.passes
    r = export_pipeline("tinynets:build", input_shape=(1, 3, 16, 16), exporter="torchscript", simplifier="onnxslim")
    assert r.simplify_report.simplifier == "onnxslim" and r.passed


def test_simplifier_result_that_differs_is_rejected(tinynets_dir, monkeypatch):
    import deployinc.simplify as S

    def sabotage(model, simplifier):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for init in out.graph.initializer:
            if len(init.dims) == 4:
                arr = onnx.numpy_helper.to_array(init) * 1.5
                init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
                break
        return out

    monkeypatch.setattr(S, "_run_simplifier", sabotage)
    r = export_pipeline("tinynets:build", input_shape=(1, 3, 16, 16), exporter="torchscript")
    assert r.simplify_report.kept == "original"
    assert "differs from the original" in r.simplify_report.notes[0]
    assert r.passed  # the kept, unsimplified graph is right
