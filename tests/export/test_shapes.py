"""Shape annotations an exporter gets wrong are inferred again (core.graph.reinfer_shapes), and a random-weight
model whose classifier its own code sets to zero gets seeded weights (models.loading.reinit_zero_linears).

The case behind all three fixes here: torchvision's ViT. Traced at batch 1, torch.export specialises the batch in
its second attention layer (a reshape to ``[17, 1, 3, 32]``), so the dynamo exporter traces a dynamic batch at 2;
the exporter annotates the GELU output with the example's batch although the batch is dynamic, and ONNX Runtime's
MatMul+Add fusion trusts the annotation, so annotations are inferred again; and its head is initialised to zero,
so every image gives the same logits and any comparison would pass.
"""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from deployinc.core.graph import reinfer_shapes
from deployinc.models.loading import load_model, reinit_zero_linears

from torchvision.models.vision_transformer import VisionTransformer


def _graph_with_a_wrong_annotation():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [y], value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_reinfer_shapes_replaces_a_static_batch_by_the_symbolic_one():
    model = _graph_with_a_wrong_annotation()
    fixed, note = reinfer_shapes(model)
    assert note is None
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in fixed.graph.value_info}
    assert dims == {"h": ["batch", 4]}
    assert [d.dim_value for d in model.graph.value_info[0].type.tensor_type.shape.dim] == [1, 4], "the input model is not changed"


def test_reinfer_shapes_keeps_the_annotations_when_inference_fails(monkeypatch):
    calls = []

    def boom(_m, strict_mode=False, data_prop=False):
        calls.append(data_prop)
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] made up")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", boom)
    model = _graph_with_a_wrong_annotation()
    fixed, note = reinfer_shapes(model)
    assert calls == [True, False], "tried with data propagation, then without"
    assert fixed is model and len(fixed.graph.value_info) == 1
    assert note is not None and note.startswith("kept the exporter's shape annotations: ONNX shape inference failed (InferenceError")


def test_reinit_zero_linears_only_touches_all_zero_layers():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    keep = m[0].weight.detach().clone()
    torch.nn.init.zeros_(m[2].weight)
    torch.nn.init.zeros_(m[2].bias)
    assert reinit_zero_linears(m) == ["2"]
    assert torch.equal(m[0].weight, keep) and m[2].weight.abs().sum() > 0
    assert reinit_zero_linears(m) == []


@pytest.fixture
def vit_pkg(monkeypatch):
    """A tiny torchvision ViT registered as a built-in model: deployinc initialises registry models without weights
    itself (a user's factory returns its own weights, zero head included, and they are exported as they are)."""
    from deployinc.models import registry

    registry._ensure_builtins()

    def build(num_classes=10):
        return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=num_classes)

    name = "tiny_vit_for_tests"
    info = registry.ModelInfo(name=name, family="vit", input_size=(3, 32, 32), num_classes=10, source="builtin", builder=build)
    monkeypatch.setitem(registry._BUILTIN, name, info)
    yield name


def test_vit_random_weights_give_input_dependent_logits_and_the_same_model_twice(vit_pkg):
    a = load_model(vit_pkg, weights=None, input_shape=(1, 3, 32, 32), seed=0)
    assert any("the model's own code initialises heads.head to zero" in n for n in a.notes), a.notes
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = a.module(x)
    assert not torch.equal(y[0], y[1])
    b = load_model(vit_pkg, weights=None, input_shape=(1, 3, 32, 32), seed=0)
    assert a.state_sha256 == b.state_sha256, "the re-initialisation is seeded: export and reference rebuild the same model"


def test_vit_exports_with_a_dynamic_batch_and_runs_at_batch_2(vit_pkg, tmp_path, monkeypatch):
    import onnxruntime as ort

    from deployinc.export import export_pipeline

    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "vit.onnx"
    res = export_pipeline(vit_pkg, out=out, exporter="dynamo", opset=17, input_shape=(1, 3, 32, 32), threads=2)
    assert res.quick_check and res.passed, res.quick_check_line  # the quick check runs batch 1 and 2
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)})[0]
    assert y.shape == (3, 10) and not np.allclose(y[0], y[1])


def test_a_file_exported_with_the_zero_head_still_rebuilds(vit_pkg):
    """A file written before the re-initialisation recorded the zero head's state_sha256: the reference puts the
    head back to zero (and says so) instead of refusing the file as changed weights."""
    a = load_model(vit_pkg, weights=None, input_shape=(1, 3, 32, 32), seed=0)
    assert a.zero_init_sha256 and a.zero_init_sha256 != a.state_sha256 and list(a.zero_init) == ["heads.head"]
    assert not a.matches_export("0" * 64)
    assert a.matches_export(a.zero_init_sha256)
    assert not a.module.heads.head.weight.any() and any("exported with heads.head at zero" in n for n in a.notes)
    b = load_model(vit_pkg, weights=None, input_shape=(1, 3, 32, 32), seed=0)
    assert b.matches_export(b.state_sha256) and b.module.heads.head.weight.any()
