"""Localisation on real module structure (random init, small inputs).

Each model: the clean export verified with ``--localize`` names no departure and drops no point; the same file with
one middle convolution's weights scaled by 1.1 fails parity and is localised at that convolution.

- ``timm/mobilenetv3_small_050``: timm's ``BatchNormAct2d`` everywhere (the activation runs inside the norm module,
  so the BN module's output is post-activation while a folded convolution's ONNX output is pre-activation),
  squeeze-excitation, depthwise convolutions, residual adds;
- torchvision ``mobilenet_v3_large``: ``Conv2dNormActivation`` with ``ReLU(inplace=True)`` (which overwrites the
  BN output a forward hook saw) and Hardswish, squeeze-excitation;
- torchvision ``googlenet``: an Inception with ``BasicConv2d`` (Conv+BN folded) in four-branch concatenations.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import invoke
from tests.verify.test_verify import _cache_dir, export_model, exports_dir  # noqa: F401 - fixtures

SIZES = {"timm/mobilenetv3_small_050": 64, "mobilenet_v3_large": 64, "googlenet": 96}


def _export(exports_dir, spec: str, exporter: str = "torchscript"):
    """TorchScript exports take seconds where the torch.export-based exporter takes tens of seconds."""
    size = SIZES[spec]
    return export_model(exports_dir, spec=spec, exporter=exporter, input_shape=(1, 3, size, size))


def middle_conv(path) -> str:
    """The weight of the middle convolution of the file (its initializer is named after the torch module)."""
    m = onnx.load(str(path))
    inits = {t.name for t in m.graph.initializer}
    convs = [n.input[1] for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    return convs[len(convs) // 2]


def scaled(src, dst, weight: str, factor: float = 1.1) -> None:
    m = onnx.load(str(src))
    t = next(t for t in m.graph.initializer if t.name == weight)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), weight))
    onnx.save(m, str(dst))


def _verify(cli_runner, path, report):
    # --no-fp64-floor: these outputs sit far inside 1e-4; localisation still measures its own per-layer floor
    args = ["verify", str(path), "--localize", "--batch", "1", "--samples", "4", "--no-fp64-floor"]
    args += ["--json", str(report)]
    return invoke(cli_runner, args)


def _check_clean_and_planted(cli_runner, exports_dir, tmp_path, spec: str, exporter: str = "torchscript") -> None:
    src = _export(exports_dir, spec, exporter)
    report = tmp_path / "clean.json"
    r = _verify(cli_runner, src, report)
    assert r.exit_code == 0, r.stdout + r.stderr
    loc = json.loads(report.read_text())["localization"]
    assert loc["first"] is None and "first departure" not in r.stdout, r.stdout
    assert loc["dropped_mapping"] == [], loc["dropped_mapping"]  # every compared point is the same tensor
    assert loc["mapped_points"] > 20

    weight = middle_conv(src)
    module = weight.rsplit(".", 1)[0]
    bad = tmp_path / "bad.onnx"
    scaled(src, bad, weight)
    report = tmp_path / "bad.json"
    r = _verify(cli_runner, bad, report)
    assert r.exit_code == 1, r.stdout + r.stderr
    loc = json.loads(report.read_text())["localization"]
    assert loc["first"] is not None, r.stdout
    got = loc["first"]["module"]
    assert got == module or module.startswith(got + "."), (module, loc["summary"])
    assert loc["last_good"] is not None  # not "the departure starts at the model's input side"
    assert f"first departure at {got}" in r.stdout


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_timm_batchnormact_model(cli_runner, exports_dir, tmp_path, exporter):
    """Scopes from TorchScript node names, and from the dynamo exporter's metadata (which names the prepared
    model's modules: ``bn1.1``, the activation that replaced the folded ``bn1``)."""
    _check_clean_and_planted(cli_runner, exports_dir, tmp_path, "timm/mobilenetv3_small_050", exporter)


@pytest.mark.slow
def test_torchvision_conv2dnormactivation_inplace_relu(cli_runner, exports_dir, tmp_path):
    _check_clean_and_planted(cli_runner, exports_dir, tmp_path, "mobilenet_v3_large")


@pytest.mark.slow
def test_googlenet(cli_runner, exports_dir, tmp_path):
    _check_clean_and_planted(cli_runner, exports_dir, tmp_path, "googlenet")


def test_folded_conv_of_batchnormact_is_compared_before_the_activation(exports_dir):
    """The folded conv's point is the BN's normalisation (pre-activation); the BN module's own point is the
    activation node after it, compared with the BN module's (post-activation) output."""
    import onnxruntime as ort

    from deployinc.metadata import read_provenance
    from deployinc.core.images import natural_images
    from deployinc.verify.localize import localize
    from deployinc.core.metrics import preset
    from deployinc.verify.reference import from_provenance

    src = _export(exports_dir, "timm/mobilenetv3_small_050")
    model = onnx.load(str(src))
    prov = read_provenance(model)
    ref = from_provenance(prov).module
    x = natural_images(2, (3, 64, 64), prov.mean, prov.std, seed=1)
    sess = ort.InferenceSession

    def run(m, names):
        s = sess(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip(names, s.run(names, {s.get_inputs()[0].name: x})))

    loc = localize(model, x, tolerance=preset("fp32", "ort-cpu"), run_exposed=run, reference_module=ref)
    by_label = {p.label: p for p in loc.points}
    stem = by_label["conv_stem (Conv2d, with bn1 folded in)"]
    assert stem.onnx_op == "Conv" and stem.torch_module == "bn1" and stem.passed
    act = by_label["bn1 (BatchNormAct2d)"]
    assert act.onnx_op == "HardSwish" and act.passed
    assert loc.first is None and not loc.dropped


def test_a_mapping_error_is_dropped_not_named(exports_dir, tinynets_dir, monkeypatch):
    """A point whose torch tensor is not the ONNX value (simulated: the captured tensor is scaled) departs on a
    clean export while the points computed from it agree: it is dropped (mapping), never the departure; a real
    fault after it is still found."""
    import onnxruntime as ort

    from deployinc.models.loading import load_model
    from deployinc.verify import localize as L
    from deployinc.core.images import natural_images
    from deployinc.core.metrics import preset

    from tests.verify.test_verify import SHAPE

    src = export_model(exports_dir)
    ref = load_model("tinynets:build", input_shape=SHAPE).module.eval()
    x = natural_images(2, SHAPE[1:], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=1)
    real = L.capture_torch

    def miscaptured(module, xx, wanted, dtype=np.float32):
        cap = real(module, xx, wanted, dtype)
        order, arr = cap.normalised["gbn"]
        cap.normalised["gbn"] = (order, np.maximum(arr, 0))  # post- instead of pre-activation
        return cap

    monkeypatch.setattr(L, "capture_torch", miscaptured)

    def run_on(model):
        def run(m, names):
            s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            return dict(zip(names, s.run(names, {"input": x})))

        return L.localize(model, x, tolerance=preset("fp32", "ort-cpu"), run_exposed=run, reference_module=ref)

    clean = run_on(onnx.load(str(src)))
    assert clean.first is None, clean.summary()
    assert [p.module for p in clean.dropped] == ["grouped"]
    assert "first departure" not in clean.summary() and "1 point(s) dropped (mapping)" in clean.summary()
    assert any(n.startswith("dropped (mapping): grouped") for n in clean.notes)

    bad = onnx.load(str(src))
    t = next(t for t in bad.graph.initializer if t.name == "pw.weight")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1.1), t.name))
    faulty = run_on(bad)
    assert faulty.first is not None and faulty.first.module == "pw", faulty.summary()
    assert "grouped" in [p.module for p in faulty.dropped]


def test_confirmation_rule_on_a_small_graph():
    """x -> a -> {b1, b2}; c = b1 + b2 -> d -> e (output, reshaped by Shape(b2)); b2 -> dead (reaches no output).

    A failing point is dropped when a point that every path from it goes through agrees again (a, with c agreeing),
    not when only a branch agrees (a, with b2 agreeing but c failing); a point that reaches no output is dropped; a
    Shape read is no path of values.
    """
    from onnx import TensorProto, helper

    from deployinc.verify.localize import Point, _confirm, _Pair, post_dominators

    nodes = [helper.make_node("Relu", [i], [o]) for i, o in (("x", "a"), ("a", "b1"), ("a", "b2"), ("b2", "dead"))]
    nodes += [helper.make_node("Add", ["b1", "b2"], ["c"]), helper.make_node("Relu", ["c"], ["d"])]
    nodes += [helper.make_node("Shape", ["b2"], ["s"]), helper.make_node("Reshape", ["d", "s"], ["e"])]
    value = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [1])], [value("e", TensorProto.FLOAT, [1])])
    model = helper.make_model(g)
    ipdom = post_dominators(model)
    got = [ipdom[v] for v in ("a", "b1", "b2", "c", "e", "dead")]
    assert got == ["c", "c", "c", "d", "", None]

    def pair(v, k, fails):
        p = Point(order=k, module=v, label=v, module_type="Relu", onnx_value=v, onnx_node=v, onnx_op="Relu",
                  torch_module=v)
        p.compared, p.failures = True, (["max_rel"] if fails else [])
        return _Pair(point=p, ref=None, node_index=k)

    def run(states):
        pairs = [pair(v, k, fails) for k, (v, fails) in enumerate(states.items())]
        _confirm(model, pairs)
        return {p.point.module: p.point.dropped for p in pairs}

    got = run({"a": True, "b1": True, "b2": False, "c": False, "dead": True, "e": False})
    assert got["a"] and "c, which every path from it goes through, agrees" in got["a"]
    assert got["b1"] and got["dead"] == "its value does not reach the model's output"
    got = run({"a": True, "b1": True, "b2": False, "c": True, "e": True})
    assert got == {"a": None, "b1": None, "b2": None, "c": None, "e": None}  # b2 agreeing does not clear a


def test_an_error_a_pooling_averages_back_is_named_so_not_a_mapping_error():
    """x -> a -> b -> pool -> y: int8's noise grows through a and b (cosine below budget) and the global average pool
    brings it back within budget. Neither is the departure, and neither is called a mapping error: the summary says
    how low the cosine went, where, and which pooling averaged it out; a plain agreeing point still means mapping."""
    from onnx import TensorProto, helper

    from deployinc.core.metrics import Tolerance
    from deployinc.verify.localize import Localization, Point, _conclude, _Pair

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("GlobalAveragePool", ["b"], ["pool"]), helper.make_node("Flatten", ["pool"], ["y"])]  # fmt: skip
    value = helper.make_tensor_value_info
    model = helper.make_model(helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [1])], [value("y", TensorProto.FLOAT, [1])]))

    def pair(v, k, op, cos):
        p = Point(order=k, module=v, label=f"{v} ({op})", module_type=op, onnx_value=v, onnx_node=v, onnx_op=op, torch_module=v)
        p.compared, p.cosine, p.failures = True, cos, ([f"cosine {cos} < 0.99"] if cos < 0.99 else [])
        return _Pair(point=p, ref=None, node_index=k)

    budget = Tolerance(max_rel=None, max_abs=None, min_cosine=0.99, min_top1=None, min_top5=None, name="int8-layer")
    loc = Localization(backend="ort-cpu", method="all", budget=budget, samples=2)
    _conclude(model, [pair("a", 0, "Relu", 0.985), pair("b", 1, "Relu", 0.95), pair("pool", 2, "GlobalAveragePool", 0.995)], loc)
    assert loc.first is None and [p.module for p in loc.averaged] == ["a", "b"] and loc.mapping == []
    assert loc.summary().startswith("no one layer departs: 2 point(s) exceed the budget")
    assert "down to cosine 0.950000 at b (Relu), and pool (GlobalAveragePool) averages their error back within budget on the 2 image(s)" in loc.summary()
    assert "dropped (mapping)" not in loc.summary() and any(n.startswith("averaged out: 2 point(s)") for n in loc.notes)
    assert loc.to_dict()["averaged_out"][0]["label"] == "a (Relu)" and loc.to_dict()["dropped_mapping"] == []

    fp32_budget = Tolerance(max_rel=1e-4, max_abs=None, min_cosine=0.99, min_top1=None, min_top5=None, name="fp32-layer")
    loc = Localization(backend="ort-cpu", method="all", budget=fp32_budget, samples=2)  # an element budget: no averaging out
    _conclude(model, [pair("a", 0, "Relu", 0.985), pair("b", 1, "Relu", 0.95), pair("pool", 2, "GlobalAveragePool", 0.995)], loc)
    assert not loc.averaged and [p.module for p in loc.mapping] == ["a", "b"]

    loc = Localization(backend="ort-cpu", method="all", budget=budget)  # b agreeing: a is a mapping error
    _conclude(model, [pair("a", 0, "Relu", 0.5), pair("b", 1, "Relu", 0.999), pair("pool", 2, "GlobalAveragePool", 0.999)], loc)
    assert [p.module for p in loc.mapping] == ["a"] and not loc.averaged and "1 point(s) dropped (mapping)" in loc.summary()
    assert "the lowest cosine is at b (Relu) (0.999000)" in loc.summary()  # a cosine budget: the worst cosine, not max_rel


def test_a_folded_activation_is_the_quantizers_record_not_any_zero_point_at_zero():
    """A QuantizeLinear with a uint8 zero point of 0 after a convolution: a folded ReLU only where the file's record
    says so (deployinc's quantizer lists the Relu/Clip outputs it removed); a convolution that merely stayed
    non-negative on the calibration images is compared as it is, clipping and all. A file with no record falls back
    to the zero point; the record names Clip bounds too."""
    import json

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from deployinc.precision.int8 import folded_activations
    from deployinc.verify.localize import boundaries

    def qdq(meta):
        inits = [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w"), numpy_helper.from_array(np.float32(0.1), "s"),
                 numpy_helper.from_array(np.uint8(0), "zp")]  # fmt: skip
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="/c/Conv"), helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["yq"]),
                 helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["yd"])]  # fmt: skip
        value = helper.make_tensor_value_info
        g = helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [1, 1, 2, 2])], [value("yd", TensorProto.FLOAT, [1, 1, 2, 2])], inits)
        m = helper.make_model(g)
        if meta is not None:
            helper.set_model_props(m, {"deployinc.int8": json.dumps({"folded_activations": meta})})
        return m

    def folded(m):
        return boundaries(m, {"c"})[0]["c"][0].folded

    assert folded(qdq({})) is None  # deployinc's record: no activation was removed here
    assert folded(qdq({"y": [0.0, None]})) == (0.0, None)
    assert folded(qdq(None)) == (0.0, None)  # another tool's file: the zero point's clamp at 0

    fp = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c1"]), helper.make_node("Relu", ["c1"], ["r"]),
                            helper.make_node("Conv", ["r", "w"], ["c2"]), helper.make_node("Clip", ["c2", "lo", "hi"], ["k"]),
                            helper.make_node("Relu", ["k"], ["out"])], "fp", [], [],
                           [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")])  # fmt: skip
    q = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["r"]), helper.make_node("Conv", ["r", "w"], ["k"]),
                           helper.make_node("Relu", ["k"], ["out"])], "q", [], [])  # fmt: skip
    assert folded_activations(helper.make_model(fp), helper.make_model(q)) == {"r": [0.0, None], "k": [0.0, 6.0]}  # the kept Relu: not listed


def test_module_scopes_of_real_exports():
    """TorchScript names of nested containers carry paths relative to an enclosing module (``conv.1.0`` inside
    ``features.12``, ``blocks.1.1`` at the root) and repeated calls a suffix (``relu_1``); the exporter's metadata
    beats a parameter name a simplifier merged onto another module's node (equal LayerNorm weights deduplicated
    into ``features.0.1.weight``)."""
    from onnx import helper

    from deployinc.core.graph import _scope_from_torchscript_name, node_scopes

    mods = {"blocks", "blocks.1", "blocks.1.1", "blocks.1.1.conv_dw", "layer1", "layer1.0", "layer1.0.relu"}
    mods |= {"features", "features.12", "features.12.conv", "features.12.conv.1", "features.12.conv.1.0"}
    name = "/features/features.12/conv/conv.1/conv.1.0/Conv"
    assert _scope_from_torchscript_name(name, mods) == "features.12.conv.1.0"
    assert _scope_from_torchscript_name("/blocks/blocks.1/blocks.1.1/Add", mods) == "blocks.1.1"
    assert _scope_from_torchscript_name("/blocks/blocks.1/blocks.1.1/conv_dw/Conv", mods) == "blocks.1.1.conv_dw"
    assert _scope_from_torchscript_name("/layer1/layer1.0/relu_1/Relu", mods) == "layer1.0.relu"

    node = helper.make_node("LayerNormalization", ["x", "features.0.1.weight", "features.0.1.bias"], ["y"])
    meta = node.metadata_props.add()
    meta.key = "pkg.torch.onnx.name_scopes"
    meta.value = "['', 'features', 'features.2', 'features.2.0', 'layer_norm_4']"
    init = [helper.make_tensor(n, 1, [1], [1.0]) for n in ("features.0.1.weight", "features.0.1.bias")]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1])],
                          [helper.make_tensor_value_info("y", 1, [1])], initializer=init)
    scopes = node_scopes(helper.make_model(g), {"features", "features.0", "features.0.1", "features.2", "features.2.0"})
    assert scopes[0] == "features.2.0"
