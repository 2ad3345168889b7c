"""Issue 13 part 2: Split(num_outputs) lowered below opset 18; the fallback to the other exporter and, when the opset
is not pinned, to a higher opset, recorded on screen and in the metadata; one clear error when nothing works."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import deployinc.export as E
from deployinc.errors import DeployincError, ExportError
from deployinc.export import export_onnx, export_pipeline, opset_pinned, run_exporter
from deployinc.export.downgrade import downgrade_opset
from deployinc.export.fallback import UnexportableError, export_with_fallback
from deployinc.metadata import PREFIX, read_provenance
from deployinc.prepare import prepare

from tests.conftest import invoke


class ShuffleBlock(nn.Module):
    """ShuffleNet v2's stride-1 unit in small: split the channels in two, transform one half, concatenate, shuffle."""

    def __init__(self, channels: int = 8):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
                                    nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle


class TinyShuffle(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.stage = nn.Sequential(ShuffleBlock(8), ShuffleBlock(8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.stage(self.stem(x)).mean((2, 3)))


@torch.library.custom_op("deployinc_test::twist", mutates_args=())
def twist(x: torch.Tensor) -> torch.Tensor:
    """An operator neither exporter knows."""
    return x.flip(-1) * 2


@twist.register_fake
def _twist_fake(x):
    return torch.empty_like(x)


class Twisted(nn.Module):
    def forward(self, x):
        return twist(x)


def unexportable_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Twisted()), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def shuffle_prepared():
    torch.manual_seed(0)
    prepared, _ = prepare(TinyShuffle().eval(), SHAPE)
    return prepared


@pytest.fixture(scope="module")
def tiny_prepared(tinynets_dir):
    import importlib

    torch.manual_seed(0)
    prepared, _ = prepare(importlib.import_module("tinynets").build(), SHAPE)
    return prepared


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# Split(num_outputs) -------------------------------------------------------------------------------------------------


def test_channel_split_lowered_to_opset_17_keeps_numbers(shuffle_prepared):
    raw = run_exporter(shuffle_prepared, SHAPE, 17, "dynamo")
    splits = [n for n in raw.graph.node if n.op_type == "Split"]
    assert splits and all(any(a.name == "num_outputs" for a in n.attribute) for n in splits)  # the case of the issue
    model = export_onnx(shuffle_prepared, SHAPE, opset=17, exporter="dynamo")
    assert _opset(model) == 17
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in (n for n in model.graph.node if n.op_type == "Split"):
        assert not any(a.name == "num_outputs" for a in n.attribute)
        assert inits[n.input[1]].tolist() == [4, 4]
    x = np.random.default_rng(0).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        ref = shuffle_prepared(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort(model, {"input": x})[0], ref, atol=1e-5, rtol=1e-5)


def _split_model(dims, n: int, axis: int = 1) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [dims[0], None, dims[2]]) for i in range(n)]
    node = helper.make_node("Split", ["x"], [o.name for o in outs], name="cut", axis=axis, num_outputs=n)
    m = helper.make_model(helper.make_graph([node], "g", [x], outs), opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8  # what every onnxruntime reads
    return m


@pytest.mark.parametrize("target", [17, 13, 12])
def test_uneven_split_matches_opset_18(target):
    m = _split_model(["N", 7, 4], 3)  # opset 18: ceil(7 / 3) = 3 per part, the last one smaller: 3, 3, 1
    low = downgrade_opset(m, target)
    onnx.checker.check_model(low, full_check=True)
    (node,) = low.graph.node
    if target >= 13:
        assert onnx.numpy_helper.to_array(low.graph.initializer[0]).tolist() == [3, 3, 1]
    else:
        assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "split")) == [3, 3, 1]
    x = np.arange(2 * 7 * 4, dtype=np.float32).reshape(2, 7, 4)
    for a, b in zip(_ort(m, {"x": x}), _ort(low, {"x": x})):
        np.testing.assert_array_equal(a, b)


def test_split_of_a_dynamic_axis_is_refused_clearly():
    with pytest.raises(ExportError, match=r"node cut \(Split\) splits axis 1 into 2 parts, but the size of that axis is not static"):
        downgrade_opset(_split_model(["N", "C", 4], 2), 17)


# fallback -----------------------------------------------------------------------------------------------------------


def _fail_dynamo(monkeypatch):
    real = E.run_exporter

    def run(module, shape, opset, exporter, dynamic_batch=True):
        if exporter == "dynamo":
            raise ExportError("the dynamo exporter failed: simulated failure", hint="-")
        return real(module, shape, opset, exporter, dynamic_batch)

    monkeypatch.setattr(E, "run_exporter", run)


def _need_opset_18(monkeypatch):
    real = E.finish_export

    def finish(model, opset, exporter):
        if opset < 18:
            raise ExportError(f"simulated: opset {opset} lacks an op", hint="-")
        return real(model, opset, exporter)

    monkeypatch.setattr(E, "finish_export", finish)


def test_fallback_to_torchscript_is_said_and_recorded(tinynets_dir, monkeypatch):
    _fail_dynamo(monkeypatch)
    said: list[str] = []
    r = export_pipeline("tinynets:build", input_shape=SHAPE, simplify=False, log=said.append)
    assert r.passed
    prov = read_provenance(onnx.load_model_from_string(r.model.SerializeToString()))
    assert (prov.exporter, prov.opset) == ("torchscript", 17)
    expected = "dynamo failed at opset 17: simulated failure; exported with torchscript at opset 17"
    assert prov.fallback == expected and f"export fallback: {expected}" in said
    assert prov.export_path == [
        {"exporter": "dynamo", "opset": 17, "error": "simulated failure"},
        {"exporter": "torchscript", "opset": 17, "error": None},
    ]
    assert prov.opset_pinned is False


def test_pinned_opset_is_never_raised(tiny_prepared, monkeypatch):
    _need_opset_18(monkeypatch)
    with pytest.raises(UnexportableError) as info:
        export_with_fallback(tiny_prepared, SHAPE, 17, "dynamo", opset_pinned=True)
    assert "dynamo at opset 17: simulated: opset 17 lacks an op; torchscript at opset 17: simulated" in info.value.message
    assert "only opset 17 was tried because it was pinned" in info.value.hint


def test_default_opset_may_rise(tiny_prepared, monkeypatch):
    _need_opset_18(monkeypatch)
    model, path = export_with_fallback(tiny_prepared, SHAPE, 17, "dynamo", opset_pinned=False)
    assert _opset(model) == 18 and (path.used.exporter, path.used.opset) == ("dynamo", 18)
    assert [(a.exporter, a.opset) for a in path.attempts] == [("dynamo", 17), ("torchscript", 17), ("dynamo", 18)]
    assert path.summary().endswith("exported with dynamo at opset 18 (opset 17 was a default, not pinned; pass --opset to require one)")


def test_no_fallback_gives_the_first_error(tiny_prepared, monkeypatch):
    _fail_dynamo(monkeypatch)
    with pytest.raises(ExportError, match="simulated failure") as info:
        export_with_fallback(tiny_prepared, SHAPE, 17, "dynamo", fallback=False)
    assert not isinstance(info.value, UnexportableError)


def test_opset_pinned_by_flag_or_user_config(tmp_path):
    assert opset_pinned(None, {"opset": 17}) and not opset_pinned(None, {"opset": None})
    with_opset, without = tmp_path / "a.toml", tmp_path / "b.toml"
    with_opset.write_text('[model]\nname = "resnet18"\n[export]\nopset = 17\n')
    without.write_text('[model]\nname = "resnet18"\n[export]\nexporter = "dynamo"\n')
    assert opset_pinned(with_opset, {}) and not opset_pinned(without, {})


def test_unexportable_model_names_operator_and_module():
    torch.manual_seed(0)
    net = unexportable_net().eval()
    with pytest.raises(UnexportableError) as info:
        export_with_fallback(net, SHAPE, 17, "dynamo", opset_pinned=True)
    err = info.value
    assert isinstance(err, DeployincError) and err.hint
    assert "no export path works for operator deployinc_test::twist in torch module 1.1" in err.message
    assert "\n" not in err.message and "\x1b" not in err.message
    assert "replace deployinc_test::twist in 1.1" in err.hint


def test_cli_says_the_fallback_and_refuses_to_raise_a_pinned_opset(cli_runner, tinynets_dir, tmp_path, monkeypatch):
    _need_opset_18(monkeypatch)
    args = ["export", "tinynets:build", "--input-shape", "1,3,16,16", "--no-simplify", "--no-check"]
    r = invoke(cli_runner, [*args, "--out", str(tmp_path / "a.onnx")])
    assert r.exit_code == 0, r.stderr
    assert "(opset 18, dynamo after a fallback, dynamic batch)" in r.stdout
    assert "export fallback: dynamo failed at opset 17: simulated: opset 17 lacks an op;" in r.stderr
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "a.onnx")).metadata_props}
    assert "exported with dynamo at opset 18" in meta[PREFIX + "fallback"]
    r = invoke(cli_runner, [*args, "--opset", "17", "--out", str(tmp_path / "b.onnx")])
    assert r.exit_code == 2 and not (tmp_path / "b.onnx").exists()
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: no export path works") and lines[-1].startswith("hint: ")
    assert "Traceback" not in r.stderr


def test_provenance_without_the_new_fields_still_reads():
    from deployinc.metadata import Provenance, write_provenance

    m = helper.make_model(helper.make_graph([], "g", [], []))
    write_provenance(m, Provenance(model_spec="googlenet", export_path=[{"exporter": "dynamo", "opset": 17, "error": None}]))
    old = [p for p in m.metadata_props if p.key not in {PREFIX + k for k in ("export_path", "fallback", "opset_pinned")}]
    del m.metadata_props[:]
    m.metadata_props.extend(old)  # as a file written before fallbacks were recorded
    prov = read_provenance(m)
    assert prov.model_spec == "googlenet" and prov.export_path == [] and prov.fallback is None and prov.opset_pinned is None


def _reshape_bakes_batch_1(shape=SHAPE) -> onnx.ModelProto:
    """Valid ONNX with a dynamic batch that ONNX Runtime cannot run at batch 2: a Reshape to a constant [1, C*H*W]
    (what torch.export did to torchvision's ViT traced at batch 1)."""
    c, h, w = shape[1:]
    x = helper.make_tensor_value_info(E.INPUT_NAME, TensorProto.FLOAT, ["batch", c, h, w])
    y = helper.make_tensor_value_info(E.OUTPUT_NAME, TensorProto.FLOAT, ["batch", c * h * w])
    target = helper.make_tensor("target", TensorProto.INT64, [2], [1, c * h * w])
    g = helper.make_graph([helper.make_node("Reshape", [E.INPUT_NAME, "target"], [E.OUTPUT_NAME])], "baked", [x], [y], [target])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_ort_run_problem_names_the_batch_that_fails():
    problem = E.ort_run_problem(_reshape_bakes_batch_1(), SHAPE, dynamic_batch=True)
    assert problem is not None and problem.startswith("ONNX Runtime cannot run its graph at batch 2:")
    assert E.ort_run_problem(_reshape_bakes_batch_1(), SHAPE, dynamic_batch=False) is None  # batch 1 only: it runs


def test_a_graph_that_does_not_run_falls_back_to_the_other_exporter(tiny_prepared, monkeypatch):
    real = E.run_exporter

    def run(module, shape, opset, exporter, dynamic_batch=True):
        return _reshape_bakes_batch_1(shape) if exporter == "dynamo" else real(module, shape, opset, exporter, dynamic_batch)

    monkeypatch.setattr(E, "run_exporter", run)
    model, path = export_with_fallback(tiny_prepared, SHAPE, 17, "dynamo", True, opset_pinned=True)
    assert path.used is not None and (path.used.exporter, path.used.opset) == ("torchscript", 17)
    first = path.attempts[0]
    assert first.exporter == "dynamo" and "does not run" in first.error and "batch 2" in first.error
    assert E.ort_run_problem(model, SHAPE) is None
    # without fallback the one path asked for is taken as it is (export's quick check then fails it)
    model, path = export_with_fallback(tiny_prepared, SHAPE, 18, "dynamo", True, opset_pinned=True, fallback=False)
    assert [a.exporter for a in path.attempts] == ["dynamo"] and E.ort_run_problem(model, SHAPE) is not None


class BatchOne(nn.Module):
    """Works at batch 1 only: the flatten bakes the batch in."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 16 * 16, 3)

    def forward(self, x):
        return self.fc(self.conv(x).view(1, -1))


def test_a_batch_1_only_model_is_told_to_export_with_a_static_batch(cli_runner, tmp_path, monkeypatch):
    torch.manual_seed(0)
    with pytest.raises(UnexportableError) as info:
        export_with_fallback(BatchOne().eval(), SHAPE, 17, "dynamo", True, opset_pinned=True)
    assert "--no-dynamic-batch" in info.value.hint, info.value.hint
    assert "torchscript at opset 17" in info.value.message and "graph does not run" in info.value.message, info.value.message
    model, path = export_with_fallback(BatchOne().eval(), SHAPE, 17, "dynamo", False, opset_pinned=True)  # static: fine
    assert path.used is not None and E.ort_run_problem(model, SHAPE, dynamic_batch=False) is None
