"""Planted faults are caught by `deployinc verify` and localised by torch module name.

- one weight tensor perturbed in a middle layer (both exporters): reported at that layer;
- a BatchNorm fold skipped on one layer (the BN removed, its statistics never folded into the convolution);
- a preprocessing mismatch (wrong mean/std written into the metadata);
- a backend that departs where the graph does not (bisection over truncated graphs, as for TensorRT);
- activations beyond fp16's range are flagged.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import invoke
from tests.verify.test_verify import SHAPE, _cache_dir, export_model, exports_dir  # noqa: F401 - fixtures

MIDDLE = "dw"  # stem -> grouped -> dw -> pw -> fc: the depthwise conv is the middle layer


def perturb(src, dst, name: str, scale: float = 0.5) -> None:
    m = onnx.load(str(src))
    t = next(t for t in m.graph.initializer if t.name == name)
    a = numpy_helper.to_array(t).copy()
    a += np.random.default_rng(0).standard_normal(a.shape).astype(a.dtype) * float(a.std()) * scale
    t.CopyFrom(numpy_helper.from_array(a, name))
    onnx.save(m, str(dst))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_perturbed_middle_weight_is_localised_by_module_name(cli_runner, exports_dir, tinynets_dir, tmp_path, exporter):
    src = export_model(exports_dir, exporter=exporter)
    bad = tmp_path / "bad.onnx"
    perturb(src, bad, f"{MIDDLE}.weight")
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad), "--json", str(report)])
    assert r.exit_code == 1, r.stdout + r.stderr
    d = json.loads(report.read_text())
    loc = d["localization"]  # automatic on failure
    assert loc["first"]["module"] == MIDDLE
    assert loc["first"]["torch_module"] == "dwbn"  # the folded conv is compared with the BN's output
    assert loc["last_good"] is not None and loc["last_good"]["module"] != MIDDLE
    assert "dw (Conv2d, with dwbn folded in)" in r.stdout
    assert "first departing layer is dw" in r.stderr
    assert loc["first"]["ref_max_abs"] > 0 and loc["first"]["test_max_abs"] > 0


def test_no_localize_flag(cli_runner, exports_dir, tinynets_dir, tmp_path):
    bad = tmp_path / "bad.onnx"
    perturb(export_model(exports_dir), bad, "pw.weight")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad), "--no-localize"])
    assert r.exit_code == 1 and "localisation" not in r.stdout and "--localize" in r.stderr


def test_skipped_bn_fold_on_one_layer(cli_runner, exports_dir, tinynets_dir, tmp_path):
    """The fold removed the BN but never scaled the conv: the ONNX conv holds the original, unfolded weights."""
    from deployinc.models.loading import load_model

    src = export_model(exports_dir, spec="tinynets:build_trained")
    original = load_model("tinynets:build_trained", input_shape=SHAPE).module  # the weights, as exported
    conv = original.grouped
    m = onnx.load(str(src))
    for t in m.graph.initializer:
        if t.name == "grouped.weight":
            t.CopyFrom(numpy_helper.from_array(conv.weight.detach().numpy().copy(), t.name))
        if t.name == "grouped.bias":
            t.CopyFrom(numpy_helper.from_array(conv.bias.detach().numpy().copy(), t.name))
    bad = tmp_path / "nofold.onnx"
    onnx.save(m, str(bad))
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad), "--json", str(report)])
    assert r.exit_code == 1, r.stdout + r.stderr
    first = json.loads(report.read_text())["localization"]["first"]
    assert first["module"] == "grouped" and first["torch_module"] == "gbn"
    assert "grouped (Conv2d, with gbn folded in)" in r.stdout


def _with_meta(src, dst, **changes) -> None:
    from deployinc.metadata import read_provenance, write_provenance

    m = onnx.load(str(src))
    p = read_provenance(m)
    for k, v in changes.items():
        setattr(p, k, v)
    write_provenance(m, p)
    onnx.save(m, str(dst))


def test_preprocessing_mismatch_registry_model(cli_runner, exports_dir, tmp_path):
    src = export_model(exports_dir, spec="resnet18")
    bad = tmp_path / "wrongnorm.onnx"
    _with_meta(src, bad, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad), "--json", str(report)])
    assert r.exit_code == 1, r.stdout + r.stderr
    d = json.loads(report.read_text())
    pre = next(c for c in d["checks"] if c["name"] == "preprocessing")
    assert pre["status"] == "fail"
    assert "preprocessing mismatch" in pre["message"] and "resnet18.toml" in pre["message"]
    assert "preprocessing mismatch" in r.stdout and "preprocessing mismatch" in r.stderr
    assert d["localization"]["first"]["module"] == "conv1" and d["localization"]["last_good"] is None


def test_preprocessing_mismatch_user_model(cli_runner, exports_dir, tinynets_dir, tmp_path):
    """A factory's own (trained) weights: the reference is the same model whatever the file says of mean/std, so
    parity cannot see a wrong normalisation; the first BatchNorm's statistics can, and verify says so."""
    src = export_model(exports_dir, spec="tinynets:build_trained")
    ok = invoke(cli_runner, ["verify", "--trust-model-code", str(src)])
    assert ok.exit_code == 0 and "preprocessing: OK" in ok.stdout
    bad = tmp_path / "wrongnorm.onnx"
    _with_meta(src, bad, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad)])
    assert "preprocessing: WARN" in r.stdout and "first BatchNorm (stem.1)" in r.stdout


def test_preprocessing_mismatch_with_trained_statistics(cli_runner, exports_dir, tinynets_dir, tmp_path):
    """Checkpoint weights: parity cannot see a wrong mean/std, the first BatchNorm's statistics can."""
    import torch

    from deployinc.models.loading import load_model

    trained = load_model("tinynets:build", input_shape=SHAPE, seed=3).module  # statistics from ImageNet-normalised inputs
    ckpt = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), ckpt)
    src = export_model(exports_dir, weights=str(ckpt))
    ok = invoke(cli_runner, ["verify", "--trust-model-code", str(src)])
    assert ok.exit_code == 0 and "preprocessing: OK" in ok.stdout
    bad = tmp_path / "wrongnorm.onnx"
    _with_meta(src, bad, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad)])
    assert "preprocessing: WARN" in r.stdout and "first BatchNorm (stem.1)" in r.stdout


def test_bisection_finds_a_backend_only_departure(exports_dir, tinynets_dir):
    """A fusing backend (simulated: it computes `dw` wrongly) is bisected over truncated graphs; cuts without a torch
    counterpart are compared with ONNX Runtime CPU."""
    import onnxruntime as ort

    from deployinc.models.loading import load_model
    from deployinc.core.images import natural_images
    from deployinc.verify.localize import localize, single_tensor_cuts
    from deployinc.core.metrics import preset

    model = onnx.load(str(export_model(exports_dir)))
    ref = load_model("tinynets:build", input_shape=SHAPE).module.eval()
    x = natural_images(2, SHAPE[1:], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=1)
    seen: list[int] = []

    def run(m, names, broken):
        m = onnx.ModelProto.FromString(m.SerializeToString())
        if broken:
            for t in m.graph.initializer:
                if t.name == "dw.weight":
                    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5, t.name))
        seen.append(len(m.graph.output))
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip(names, s.run(names, {"input": x})))

    loc = localize(
        model,
        x,
        tolerance=preset("fp32", "tensorrt"),
        run_exposed=lambda m, names: run(m, names, True),
        run_proxy_exposed=lambda m, names: run(m, names, False),
        reference_module=ref,
        method="bisect",
        backend="simulated-trt",
    )
    assert loc.first is not None and loc.first.module == "dw", loc.summary()
    assert loc.method == "bisect" and any("bisection" in n for n in loc.notes)
    assert single_tensor_cuts(model)  # the chain has cuts
    assert max(seen[1:]) == 1  # every read on the backend is a single-output truncated graph


def test_overflow_beyond_fp16_is_flagged(cli_runner, tmp_path, tmp_path_factory, monkeypatch):
    import sys

    d = tmp_path_factory.mktemp("bignets")
    (d / "bignets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def build(num_classes=10):
                torch.manual_seed(0)
                net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
                with torch.no_grad():
                    net[0].weight.mul_(3000.0)
                    net[2].weight.mul_(30.0)
                return net
            """
        )
    )
    monkeypatch.syspath_prepend(str(d))
    sys.modules.pop("bignets", None)
    out = tmp_path / "big.onnx"
    from deployinc.export import export_pipeline

    export_pipeline("bignets:build", out=out, exporter="torchscript", input_shape=(1, 3, 16, 16), threads=2)
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(out), "--localize", "--json", str(report)])
    assert r.exit_code == 0, r.stdout + r.stderr
    loc = json.loads(report.read_text())["localization"]
    assert loc["fp16_overflow"], loc
    assert "beyond fp16's 65504" in r.stdout


def test_torchscript_scope_names_and_dynamo_metadata(tinynets_dir):
    import importlib

    import torch

    from deployinc.export import export_onnx
    from deployinc.prepare import prepare
    from deployinc.core.graph import _scope_from_torchscript_name, node_scopes

    mods = {"inception4c", "inception4c.branch2", "inception4c.branch2.1", "inception4c.branch2.1.conv", "layer1", "layer1.0", "layer1.0.conv1"}
    assert _scope_from_torchscript_name("/inception4c/branch2/branch2.1/conv/Conv", mods) == "inception4c.branch2.1.conv"
    assert _scope_from_torchscript_name("/layer1/layer1.0/conv1/Conv", mods) == "layer1.0.conv1"
    assert _scope_from_torchscript_name("/layer1/layer1.0/relu_1/Relu", mods) == "layer1.0"
    assert _scope_from_torchscript_name("/Flatten", mods) == ""
    torch.manual_seed(0)
    net = importlib.import_module("tinynets").build().eval()
    prepared, _ = prepare(net, SHAPE)
    m = export_onnx(prepared, SHAPE, exporter="dynamo")  # unsimplified: scopes in node metadata
    names = {n for n, _ in net.named_modules() if n}
    scopes = node_scopes(m, names)
    ops = {m.graph.node[i].op_type: s for i, s in scopes.items() if s}
    assert {"stem.0", "grouped", "dw", "pw", "fc"} <= set(scopes.values())
    assert "Conv" in ops


def test_an_int8_graphs_folded_relu_is_compared_after_the_relu(cli_runner, exports_dir, tinynets_dir, tmp_path):
    """ONNX Runtime's quantizer removes a Relu whose output it quantizes from 0 up: the conv's own output feeds the
    QuantizeLinear, which clamps at 0. The conv's point is compared after a ReLU on both sides (the torch side is the
    BN's pre-activation output), not reported as a departure of cosine ~0.7; so is each value by name against the
    float ONNX file, whose Relu output carries the name."""
    from deployinc.core.images import natural_images
    from deployinc.precision.int8 import quantize_int8, write_int8
    from deployinc.precision.recipe import recipe_for
    from deployinc.verify.localize import RELU_FOLDED

    src = export_model(exports_dir, spec="tinynets:build_trained")
    res = quantize_int8(src, natural_images(32, SHAPE[1:], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=1),
                        target="cpu", method="percentile", recipe=recipe_for("cpu"), weight_rounding="nearest")  # fmt: skip
    q = tmp_path / "int8.onnx"
    write_int8(res, q)
    qm = onnx.load(str(q))
    assert "Relu" not in {n.op_type for n in qm.graph.node}  # the quantizer folded every ReLU, and the file says which
    record = json.loads({p.key: p.value for p in qm.metadata_props}["deployinc.int8"])["folded_activations"]
    assert len(record) == 4 and all(v == [0.0, None] for v in record.values()), record
    for args in (["--trust-model-code"], ["--against", str(src)]):
        report = tmp_path / "r.json"
        r = invoke(cli_runner, ["verify", str(q), *args, "--localize", "--json", str(report), "--force"])
        assert r.exit_code in (0, 1), r.stdout + r.stderr
        points = [p for p in json.loads(report.read_text())["localization"]["points"] if p["compared"]]
        folded = [p for p in points if p["label"].endswith(RELU_FOLDED)]
        assert len(folded) >= 3, [p["label"] for p in points]  # stem, grouped, dw, pw: each conv's ReLU folded
        assert min(p["cosine"] for p in points) > 0.97, [(p["label"], p["cosine"]) for p in points]
