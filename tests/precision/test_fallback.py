"""Layer fallback (deployinc.precision.fallback): keeping a few layers of an int8 (or fp16) model in float, found
with the verifier's comparison as the oracle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from deployinc.core.images import natural_images
from deployinc.core.metrics import preset, task_failures
from deployinc.precision import fallback as F
from deployinc.precision._common import cpu_session
from deployinc.precision.int8 import quantize_int8
from deployinc.precision.recipe import recipe_named

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def planted_net() -> nn.Module:
    """conv1 -> conv2 -> conv3 -> head, where conv2 writes one channel ~1000x the others and conv3 ignores it: in
    float nothing is wrong, but an int8 conv3 reads that activation at a scale that zeroes every other channel.
    Only conv3 kept in float repairs it."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip
    with torch.no_grad():
        net[2].weight[0].mul_(0.0)
        net[2].bias[0] = 3000.0  # a constant, huge channel
        net[4].weight[:, 0].zero_()  # which conv3 does not read
    return net.eval()


def export(net: nn.Module, path: Path, size: int = 32) -> Path:
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)  # fmt: skip
    return path


def oracle_for(net: nn.Module, n: int = 16, labels: np.ndarray | None = None) -> F.Oracle:
    x = natural_images(n, (3, 32, 32), MEAN, STD, seed=0)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    goal = F.TaskGoal(labels) if labels is not None else None
    return F.Oracle(x, "input", {"logits": ref}, preset("int8", "cpu"), goal=goal, threads=1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("fallback")
    net = planted_net()
    path = export(net, d / "planted.onnx")
    cal = natural_images(32, (3, 32, 32), MEAN, STD, seed=1)
    q = quantize_int8(path, cal, method="minmax", target="cpu", recipe=recipe_named("u8s8")).model
    return net, path, q


def _conv_names(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def test_the_search_finds_the_planted_layer_and_only_it(planted):
    net, path, q = planted
    oracle = oracle_for(net)
    assert not oracle.judge(q).passed  # whole-model int8 fails its preset
    found = F.search(q, oracle, fp32=onnx.load(str(path)))
    conv3 = _conv_names(onnx.load(str(path)))[2]
    assert found.passed, found.summary()
    assert found.float_nodes == [conv3], found.summary()
    assert found.layers[0]["module"] == "4" and found.layers[0]["gain"] > 0  # the torch module (Sequential index 4)
    assert found.evaluations <= found.budget
    assert "1 of 4 layer(s) kept in float" in found.summary()
    costs = F.layer_costs(onnx.load(str(path)))
    conv2 = _conv_names(onnx.load(str(path)))[1]
    # conv3 in float reads conv2's float output, so conv2 (nothing int8 reads it now) is computed in float too
    assert [x["node"] for x in found.also_float] == [conv2] and conv2 in F.runs_in_float(found.model)
    assert found.float_share == pytest.approx((costs[conv2] + costs[conv3]) / sum(costs.values()))
    assert found.record()["float_share"] == round(found.float_share, 4) and found.layers[0]["share"] > 0
    assert F.runs_in_float(q) == []  # the whole int8 model: every layer int8 (the head's float output included)


def test_a_carried_along_layer_reads_constant_float_weights_and_computes_the_same(planted):
    """conv3 in float carries conv2 into float. conv2 then reads its weights as dequantized float constants (ORT
    gives only a constant-weight convolution its fast NCHWc kernel), and computes what it computed through the
    DequantizeLinear."""
    _, path, q = planted
    fp32 = onnx.load(str(path))
    _, conv2, conv3 = _conv_names(fp32)
    m = F.keep_float(q, [conv3], fp32)
    producer = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name for t in m.graph.initializer}
    node = next(n for n in m.graph.node if n.name == conv2)
    assert node.input[1] in inits and node.input[2] in inits and node.input[1] not in producer
    assert producer[node.input[0]].op_type == "DequantizeLinear"  # its input stays the quantized one
    # the same surgery without the constants: every weight read through its DequantizeLinear
    plain = onnx.ModelProto()
    plain.CopyFrom(m)
    dq = next(n for n in q.graph.node if n.name == conv2)
    wanted = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in dq.input[1:]}
    plain.graph.node.extend([n for n in q.graph.node if n.output[0] in wanted])
    target = next(n for n in plain.graph.node if n.name == conv2)
    for i in (1, 2):
        target.input[i] = dq.input[i]
    keep = {t.name for t in plain.graph.initializer}
    plain.graph.initializer.extend([t for t in q.graph.initializer if t.name not in keep])
    from deployinc.core.graph import toposort_nodes

    toposort_nodes(plain.graph)
    x = natural_images(4, (3, 32, 32), MEAN, STD, seed=3)
    a = cpu_session(m, threads=1, optimization="basic").run(None, {"input": x})[0]
    b = cpu_session(plain, threads=1, optimization="basic").run(None, {"input": x})[0]
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    assert F.keep_float(q, [], fp32).graph.initializer[0].name == q.graph.initializer[0].name  # nothing in float: a copy


def test_int8_with_fallback_also_makes_the_form_that_keeps_int8_weights(planted):
    """Beside ORT's form (carried-along layers read float constants), the same set with every int8 weight behind
    its DequantizeLinear, stamped alike: what OpenVINO runs in int8."""
    net, path, _ = planted
    cal = natural_images(32, (3, 32, 32), MEAN, STD, seed=1)
    res, found = F.int8_with_fallback(path, cal, oracle_for(net), method="minmax", recipe=recipe_named("u8s8"), weight_rounding="nearest",
                                      twin=True)  # fmt: skip
    assert found.passed and found.qdq_model is not None
    _, conv2, _ = _conv_names(onnx.load(str(path)))

    def weight_from(model):
        producer = {o: n for n in model.graph.node for o in n.output}
        node = next(n for n in model.graph.node if n.name == conv2)
        return producer[node.input[1]].op_type if node.input[1] in producer else "constant"

    assert weight_from(res.model) == "constant" and weight_from(found.qdq_model) == "DequantizeLinear"
    records = [json.loads({p.key: p.value for p in m.metadata_props}["deployinc.int8"])["fallback"] for m in (res.model, found.qdq_model)]
    assert records[0]["float_nodes"] == records[1]["float_nodes"] == found.float_nodes
    ranking = found.record()["ranking"]  # what the bf16 widening adds from: every layer ranked, most gain first
    assert len(ranking) == found.ranked > 0 and set(found.float_nodes) <= {r["node"] for r in ranking}
    assert [r["gain"] for r in ranking] == sorted((r["gain"] for r in ranking), reverse=True)
    assert F.twin_record(found)["ranking"] == found.record()["ranking"] and "ranking" not in records[1]
    assert records[0]["also_float"] and records[1]["also_float"] == []  # OpenVINO runs conv2 in int8: only conv3 in float
    assert records[1]["float_share"] < records[0]["float_share"]
    # without twin=True none is made; for TensorRT the carried layers keep their DequantizeLinear (it runs them int8)
    _, plain = F.int8_with_fallback(path, cal, oracle_for(net), method="minmax", recipe=recipe_named("u8s8"), weight_rounding="nearest")
    assert plain.qdq_model is None
    trt, tfound = F.int8_with_fallback(path, cal, oracle_for(net), method="minmax", target="tensorrt", weight_rounding="nearest")
    assert tfound.passed and tfound.float_nodes and weight_from(trt.model) == "DequantizeLinear"
    x = natural_images(4, (3, 32, 32), MEAN, STD, seed=3)
    a, b = (cpu_session(m, threads=1).run(None, {"input": x})[0] for m in (res.model, found.qdq_model))
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_layer_costs_are_multiply_adds_of_the_fp32_and_the_int8_file(planted):
    _, path, q = planted
    fp32 = onnx.load(str(path))
    costs = F.layer_costs(fp32)
    c1, c2, c3 = _conv_names(fp32)
    assert costs[c1] == 8 * 3 * 9 * 32 * 32 and costs[c2] == 16 * 8 * 9 * 32 * 32 and costs[c3] == 16 * 16 * 9 * 32 * 32
    assert sorted(costs.values())[0] == 16 * 10  # the Linear head: its weights
    assert {n: c for n, c in F.layer_costs(q).items() if n in costs} == costs  # the QDQ file: the same work


def test_pruning_drops_the_costliest_layer_first():
    """A set where either of two layers repairs the model with a third: the pruned set keeps the cheap one, even
    though the costly one gained more alone (least-useful-first would keep the costly one)."""
    gains, costs = {"a": 0.3, "b": 0.1, "c": 0.2}, {"a": 100, "b": 1, "c": 1}

    def judge(nodes):
        ok = "c" in nodes and ("a" in nodes or "b" in nodes)
        return F.Judgement(ok, 0.0 if ok else 1.0, "pass" if ok else "fail", "preset")

    assert F._prune(["a", "b", "c"], gains, costs, judge, lambda _s: None, lambda: True) == ["b", "c"]


def test_every_layer_in_float_computes_what_fp32_computes(planted):
    net, path, q = planted
    fp32 = onnx.load(str(path))
    x = natural_images(4, (3, 32, 32), MEAN, STD, seed=3)
    want = cpu_session(fp32, threads=1).run(None, {"input": x})[0]
    got = cpu_session(F.keep_float(q, F.layer_candidates(q), fp32), threads=1).run(None, {"input": x})[0]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
    # none in float: the int8 model itself (surgery that changes nothing)
    same = cpu_session(F.keep_float(q, [], fp32), threads=1).run(None, {"input": x})[0]
    base = cpu_session(q, threads=1).run(None, {"input": x})[0]
    assert np.array_equal(same, base)


def test_a_layer_whose_relu_the_quantizer_folded_reads_the_relu(planted):
    """ORT's QDQ quantizer folds Conv+Relu into the QuantizeLinear (uint8 clamps at 0); a float conv3 must read
    relu(conv2), not conv2's raw output under the Relu's tensor name."""
    net, path, q = planted
    assert not any(n.op_type == "Relu" for n in q.graph.node)
    conv3 = _conv_names(onnx.load(str(path)))[2]
    m = F.keep_float(q, [conv3], onnx.load(str(path)))
    assert any(n.op_type == "Relu" for n in m.graph.node)


def test_a_model_that_passes_keeps_nothing_in_float(planted, tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = export(net, tmp_path / "easy.onnx")
    q = quantize_int8(path, natural_images(32, (3, 32, 32), MEAN, STD, seed=1), target="cpu").model
    found = F.search(q, oracle_for(net), fp32=onnx.load(str(path)))
    assert found.passed and found.float_nodes == [] and found.evaluations == 1


def _identity_model(k: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "id",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])])  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_oracle_judges_each_set_on_its_own():
    # 32 flat-logit samples; one of them (in the second set of 16) changes class beyond a tie: 31 of 32 agree
    # (passes 0.95 over all), but that set alone has 15 of 16 (fails it), as verify would judge it
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1000)).astype(np.float32)
    x[:, 0] = x.max(axis=1) + 2.0
    ref = x.astype(np.float64).copy()
    x[20, 1] = x[20, 0] + 0.05
    ref[20, 1] = ref[20, 0] - 0.6
    model = _identity_model(1000)
    whole = F.Oracle(x, "input", {"logits": ref}, preset("int8", "cpu"), threads=1).judge(model)
    sets = F.Oracle(x, "input", {"logits": ref}, preset("int8", "cpu"), threads=1, set_size=16)
    j = sets.judge(model)
    assert whole.passed and not j.passed and "set 2: top1 0.938 < 0.95" in j.line
    assert sets.describe() == "32 verification images (2 sets of 16, each judged on its own)"


def test_a_whole_model_the_verdicts_own_judge_passes_needs_no_search(tmp_path):
    # deploy's search keeps part of the budget in hand; a whole model that the preset itself passes is not searched
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = export(net, tmp_path / "easy.onnx")
    q = quantize_int8(path, natural_images(32, (3, 32, 32), MEAN, STD, seed=1), target="cpu").model
    plain = oracle_for(net)
    strict = F.Oracle(plain.inputs, "input", plain.reference, preset("int8", "cpu").with_overrides(min_cosine=0.99999999), threads=1)
    assert plain.judge(q).passed and not strict.judge(q).passed
    found = F.search(q, strict, fp32=onnx.load(str(path)), whole_enough=plain)
    assert found.passed and found.float_nodes == [] and found.whole.passed and found.evaluations == 1


def test_the_task_rule_judges_accuracy_not_cosine():
    # accurate but off in cosine: passes; close in cosine but 2 points less accurate: fails
    assert task_failures(0, 0.90, 0.905, 0.995) == []
    fails = task_failures(0, 0.90, 0.88, 0.995)
    assert len(fails) == 1 and "2.00 points below" in fails[0]
    assert any("agreement" in f for f in task_failures(0, 0.90, 0.90, 0.98))
    assert any("non-finite" in f for f in task_failures(3, 0.90, 0.90, 1.0))
    assert any("unknown" in f for f in task_failures(0, None, 0.9, 1.0))


def test_the_oracle_with_labels_uses_the_task_rule(planted):
    net, path, q = planted
    x = natural_images(16, (3, 32, 32), MEAN, STD, seed=0)
    with torch.no_grad():
        labels = net(torch.from_numpy(x)).numpy().argmax(1)  # fp32 is right on every image
    j = oracle_for(net, labels=labels).judge(onnx.load(str(path)))
    assert j.passed and j.rule.startswith("task") and j.metrics["top1_accuracy"] == 1.0


def test_the_search_resumes_after_kill_9(planted, tmp_path):
    net, path, q = planted
    qpath = tmp_path / "q.onnx"
    onnx.save(q, str(qpath))
    state = tmp_path / "state.json"
    code = f"""
import sys, onnx, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.precision.test_fallback import planted_net, oracle_for
from deployinc.precision import fallback as F
q = onnx.load({str(qpath)!r}); fp32 = onnx.load({str(path)!r})
oracle = oracle_for(planted_net())
slow = lambda nodes: (time.sleep(0.7), F.keep_float(q, nodes, fp32))[1]
F.search(q, oracle, fp32=fp32, build=slow, state=__import__('pathlib').Path({str(state)!r}), state_key='k')
"""
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            if state.is_file() and len(json.loads(state.read_text()).get("judgements", {})) >= 3:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = len(json.loads(state.read_text())["judgements"])
    assert done >= 3
    resumed = F.search(q, oracle_for(net), fp32=onnx.load(str(path)), state=state, state_key="k")
    clean = F.search(q, oracle_for(net), fp32=onnx.load(str(path)))
    assert resumed.float_nodes == clean.float_nodes
    assert resumed.evaluations == clean.evaluations - done  # only what the killed run had not judged
    # a state file of another key is not used
    other = F.search(q, oracle_for(net), fp32=onnx.load(str(path)), state=state, state_key="another")
    assert other.evaluations == clean.evaluations


def test_fp16_fallback_keeps_a_layer_fp16_cannot_hold_in_fp32(tmp_path):
    """A classifier whose weights are below fp16's smallest value (the converter clamps them to it) must stay fp32,
    and only it; the search finds it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()  # fmt: skip
    with torch.no_grad():
        net[6].weight.mul_(1e-9)
        net[6].bias.zero_()
    path = export(net, tmp_path / "tiny.onnx")
    x = natural_images(8, (3, 32, 32), MEAN, STD, seed=0)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    oracle = F.Oracle(x, "input", {"logits": ref}, preset("fp16", "cpu"), threads=1)
    model, found = F.fp16_with_fallback(onnx.load(str(path)), oracle, threads=1)
    assert not found.whole.passed and found.passed, found.summary()
    gemm = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm")
    assert found.float_nodes == [gemm]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["deployinc.fp16"])["fallback"]["float_nodes"] == [gemm]


def test_the_cheapest_passing_set_judged_on_the_way_wins(tmp_path):
    """Two layers each repair the model alone; the costly one gains more, so grow-and-bisect picks it, but the cheap
    one passed alone in the ranking and wins."""
    memo = F._Memo(None, "k")
    ok = F.Judgement(True, 0.0, "pass", "preset")
    memo.put(["costly"], ok)
    memo.put(["cheap"], ok)
    memo.put(["other"], F.Judgement(False, 1.0, "fail", "preset"))
    costs = {"costly": 1000, "cheap": 10, "other": 1}

    def work(nodes):
        return sum(costs[n] for n in nodes), len(nodes)

    assert F._cheapest_passing(memo, ["costly"], work, {"costly", "cheap", "other"}, lambda _s: None) == ["cheap"]
    assert F._cheapest_passing(memo, ["costly"], work, {"costly", "other"}, lambda _s: None) == ["costly"]  # not a candidate


def test_the_search_prefers_the_gain_per_multiply_add_where_it_costs_less(monkeypatch):
    """Errors that add up: two costly layers repair the model together (the most sensitive prefix), while the cheap
    ones repair it with one costly layer for about half the float work. The second grow-and-bisect, by gain per
    multiply-add, finds the cheaper set; the search keeps it."""
    contrib = {"big1": 0.3, "big2": 0.25, "s1": 0.1, "s2": 0.1, "s3": 0.1, "s4": 0.1, "z": 0.0}
    costs = {"big1": 100, "big2": 100, "s1": 5, "s2": 5, "s3": 5, "s4": 5, "z": 1}

    class Additive:
        def judge(self, nodes):
            err = 1.0 - sum(contrib[n] for n in nodes)
            return F.Judgement(err <= 0.5 + 1e-9, err, f"error {err:.2f}", "preset")

    monkeypatch.setattr(F, "layer_costs", lambda _model: costs)
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    found = F.search(model, Additive(), build=lambda nodes: list(nodes), candidates=list(contrib))
    work = sum(costs[n] for n in found.float_nodes)
    assert found.passed and "big2" not in found.float_nodes and work <= 115, found.float_nodes  # by gain alone: big1 + big2, 200
    assert F.thrifty_order({"a": 0.5, "b": 0.1, "c": -0.1}, {"a": 100, "b": 1, "c": 1}, ["a", "b", "c", "d"]) == ["b", "a", "c", "d"]


def test_the_openvino_twin_gets_the_passing_set_of_least_work_it_computes_in_float(monkeypatch):
    """Two layers each repair the model alone: A (100 multiply-adds) and B (10). Keeping B in float makes ONNX Runtime
    carry C (300) into float with it, so the ORT form keeps A (100 against 310); OpenVINO runs C in int8 all the same,
    so its twin keeps B (10 against 100)."""
    contrib, costs = {"A": 0.6, "B": 0.6, "C": 0.0}, {"A": 100, "B": 10, "C": 300}

    class Additive:
        def judge(self, model):
            err = 1.0 - sum(contrib[n] for n in model)
            return F.Judgement(err <= 0.5, err, f"error {err:.2f}", "preset")

    monkeypatch.setattr(F, "layer_costs", lambda _model: costs)
    monkeypatch.setattr(F, "keep_float", lambda _q, nodes, *_a, **_k: list(nodes))  # the "model": its float layers
    monkeypatch.setattr(F, "runs_in_float", lambda model: ["C"] if "B" in model else [])  # B's float output carries C along
    q = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    found = F.search(q, Additive(), candidates=["A", "B", "C"])
    assert found.passed and found.float_nodes == ["A"] and found.twin_nodes == ["B"], (found.float_nodes, found.twin_nodes)
    assert found.twin_judgement is not None and found.twin_judgement.passed
    rec = F.twin_record(found)
    assert rec["float_nodes"] == ["B"] and [x["node"] for x in rec["layers"]] == ["B"] and rec["also_float"] == []
    assert rec["float_share"] == round(10 / 410, 4) and "ONNX Runtime form" in rec["judged_on"]
    assert found.record()["float_nodes"] == ["A"]  # the ORT form's own record is unchanged


def test_keep_float_on_a_file_it_made_adds_to_its_set(planted):
    """The bf16 widening adds layers to a mixed file: keep_float of keep_float is keep_float of the union (a valid
    graph: the float copies the first call made are reused, not duplicated)."""
    net, path, q = planted
    fp32 = onnx.load(str(path))
    a, b, c = _conv_names(q)
    twice = F.keep_float(F.keep_float(q, [a], fp32, constant_weights=False), [c], fp32, constant_weights=False)
    once = F.keep_float(q, [a, c], fp32, constant_weights=False)
    onnx.checker.check_model(twice)
    names = [n.name for n in twice.graph.node if n.name]
    assert len(names) == len(set(names)) and len(twice.graph.node) == len(once.graph.node)
    x = natural_images(4, (3, 32, 32), MEAN, STD, seed=3)
    run = lambda m: cpu_session(m, threads=1).run(None, {"input": x})[0]  # noqa: E731
    assert np.array_equal(run(twice), run(once)) and set(F.layer_candidates(twice)) & {a, b, c} == {b}


class _Planted:
    """An oracle that passes a model only where ``needed`` all compute in float, counting its calls."""

    def __init__(self, needed: set[str], any_of: bool = False) -> None:
        self.needed, self.any_of, self.calls = needed, any_of, 0

    def judge(self, model) -> F.Judgement:
        self.calls += 1
        int8 = set(F.layer_candidates(model))
        ok = bool(self.needed - int8) if self.any_of else not (self.needed & int8)
        return F.Judgement(ok, 0.0 if ok else 1.0, "PASS" if ok else "FAIL", "planted")


def test_widen_adds_the_fewest_next_layers_of_the_ranking_and_resumes(planted, tmp_path):
    net, path, q = planted
    fp32 = onnx.load(str(path))
    a, b, c = _conv_names(q)
    base = F.keep_float(q, [a], fp32, constant_weights=False)
    ranking = [{"node": n, "gain": g} for n, g in ((a, 3.0), (b, 2.0), (c, 1.0))]  # a is in the set already
    oracle = _Planted({c})
    state = tmp_path / "widen.json"
    w = F.widen(base, [a], ranking, oracle, fp32=fp32, state=state, state_key="k")  # type: ignore[arg-type]
    assert w.passed and w.added == [b, c] and not w.base.passed and not set(F.layer_candidates(w.model)) & {a, b, c}
    assert w.evaluations == oracle.calls == 3  # the file, 1 more, 2 more
    again = F.widen(base, [a], ranking, _Planted({c}), fp32=fp32, state=state, state_key="k")  # type: ignore[arg-type]
    assert again.added == [b, c] and again.evaluations == 0  # a killed run resumes from the state file
    assert F.widen(base, [a], ranking, _Planted({b}), fp32=fp32).added == [b]  # type: ignore[arg-type]
    held = F.widen(base, [a], ranking, _Planted(set()), fp32=fp32)  # type: ignore[arg-type]
    assert held.passed and held.added == [] and held.model is base and held.evaluations == 1
    short = F.widen(base, [a], ranking, _Planted({c}), fp32=fp32, most=1)  # type: ignore[arg-type]
    assert not short.passed and short.model is None and short.added == [b]  # none within reach passes: nothing to ship


def test_widen_keeps_the_addition_of_fewer_multiply_adds(planted):
    """Like the search, widen tries the ranking by gain and by gain per multiply-add: where either layer would do,
    the cheap head beats the costly convolution that gained more."""
    net, path, q = planted
    fp32 = onnx.load(str(path))
    a, b, c = _conv_names(q)
    head = next(n.name for n in q.graph.node if n.op_type == "Gemm")
    ranking = [{"node": c, "gain": 3.0}, {"node": head, "gain": 1.0}, {"node": b, "gain": 0.5}]
    w = F.widen(q, [], ranking, _Planted({c, head}, any_of=True), fp32=fp32)  # type: ignore[arg-type]
    assert w.passed and w.added == [head], w.added
    costs = F.layer_costs(fp32)
    assert costs[head] < costs[c]
