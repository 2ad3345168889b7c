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


# Models the probes broke (issue 22): user factories exported WITH --weights, checked independently: the written
# file on ONNX Runtime against the user's own eval() module on the same inputs (not deployinc's reference).

PROBENETS = '''
import torch
from torch import nn
import torch.nn.functional as F


def _head(c):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def _conv_bn_net(conv, c_in=3):
    return nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _head(8))


def weight_norm_hook():
    return _conv_bn_net(nn.utils.weight_norm(nn.Conv2d(3, 8, 3, padding=1)))


def weight_norm_param():
    return _conv_bn_net(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3, padding=1)))


def spectral_norm_param():
    return _conv_bn_net(nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 8, 3, padding=1)))


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)


class DictOut(Body):
    def forward(self, x):
        f = self.body(x).mean((2, 3))
        return {"features": f, "logits": self.fc(f)}


class TupleOut(Body):
    def forward(self, x):
        f = self.body(x).mean((2, 3))
        return self.fc(f), f


def dict_out():
    return DictOut()


def tuple_out():
    return TupleOut()


class Readers(nn.Module):
    """Three conv+BN pairs: the first conv's output is also added to (a torch call, not a module), the second goes
    through F.relu(..., inplace=True) before its BN; only the third folds."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = _head(8)

    def forward(self, x):
        y = self.c1(x)
        y = torch.relu(self.b1(y)) + y
        y = self.b2(F.relu(self.c2(y), inplace=True))
        return self.head(torch.relu(self.b3(self.c3(y))))


def readers():
    return Readers()


class StdConv(nn.Conv2d):
    """timm's StdConv2d: the weight is standardised in forward (a folded BN scale would be undone)."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0, eps=1e-6)
        return F.conv2d(x, w.reshape_as(self.weight), self.bias, self.stride, self.padding)


def std_conv():
    return _conv_bn_net(StdConv(3, 8, 3, padding=1))


def identities():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Identity(), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.Dropout2d(0.2), nn.BatchNorm2d(8), nn.ReLU(), _head(8))


def gray():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _head(8))


def block192():
    return nn.Sequential(nn.Conv2d(192, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), _head(8))
'''


@pytest.fixture(scope="module")
def probenets(tmp_path_factory):
    import importlib
    import sys

    d = tmp_path_factory.mktemp("probes")
    (d / "probenets22.py").write_text(PROBENETS)
    sys.path.insert(0, str(d))
    yield importlib.import_module("probenets22"), d
    sys.path.remove(str(d))


def _trained_checkpoint(module, path):
    """BN statistics and affine parameters away from their init, so a wrong fold shows; saved as --weights."""
    torch.manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    torch.save(module.state_dict(), path)


def _user_output(out):
    return out["logits"] if isinstance(out, dict) else out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize(
    "name, shape, folded, why",
    [
        ("weight_norm_hook", (1, 3, 16, 16), 2, None),
        ("weight_norm_param", (1, 3, 16, 16), 2, None),
        ("spectral_norm_param", (1, 3, 16, 16), 2, None),
        ("dict_out", (1, 3, 16, 16), 1, None),
        ("tuple_out", (1, 3, 16, 16), 1, None),
        ("readers", (1, 3, 16, 16), 1, "also read by torch."),
        ("std_conv", (1, 3, 16, 16), 1, "StdConv is a Conv2d subclass with its own forward"),
        ("identities", (1, 3, 16, 16), 2, None),
        ("gray", (1, 1, 16, 16), 1, None),
        ("block192", (1, 192, 8, 8), 1, None),
    ],
)
def test_probe_models_export_right_with_their_weights(probenets, tmp_path, name, shape, folded, why):
    mod, _ = probenets
    torch.manual_seed(0)
    user = getattr(mod, name)()
    ckpt = tmp_path / f"{name}.pt"
    _trained_checkpoint(user, ckpt)
    lines: list[str] = []
    out = tmp_path / f"{name}.onnx"
    res = export_pipeline(f"probenets22:{name}", out=out, weights=str(ckpt), input_shape=shape, threads=2, log=lines.append)
    assert res.passed
    assert len(res.prepare_report.folds) == folded, res.prepare_report.to_dict()
    skipped = [r for p in res.prepare_report.passes for _, r in p.skipped]
    if why:
        assert any(why in r for r in skipped), skipped
    # independent check: the user's own module in eval mode against the written file on ONNX Runtime
    user.eval()
    x = np.random.default_rng(3).standard_normal((2, *shape[1:])).astype(np.float32)
    with torch.no_grad():
        ref = _user_output(user(torch.from_numpy(x))).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    prov = read_provenance(onnx.load(str(out)))
    assert len(prov.mean) == len(prov.std) == shape[1]
    if shape[1] != 3:  # no ImageNet values for a non-RGB input: no normalisation, and a note says so
        assert prov.mean == [0.0] * shape[1] and prov.std == [1.0] * shape[1]
        assert any("no normalisation assumed" in line for line in lines)
    if name == "tuple_out":
        assert any("exporting element 0 (N, 10)" in line and "not exported: element 1 (N, 32)" in line for line in lines)
    if name == "dict_out":
        assert any("exporting 'logits' (N, 10)" in line and "'features' (N, 32)" in line for line in lines)
