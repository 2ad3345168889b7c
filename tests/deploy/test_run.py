"""deploy's pipeline pieces (``deployinc.deploy.run``): the fp16 artifact, the judging of lower-precision candidates
(the task rule with labelled images), and one small deploy counting its torch reference builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto

from deployinc.deploy.plan import Candidate, choose
from deployinc.deploy.request import DeployRequest
from deployinc.deploy.run import _artifact, _judge_rule
from tests.precision.test_fp16 import convnet


def _verified(cosine: float, acc: float, ref_acc: float, agree: float, verdict: str, nonfinite: int = 0) -> dict[str, Any]:
    """What _verify returns for an int8 candidate before the rule: verify's own verdict under the int8 preset."""
    failures = [] if verdict == "pass" else [f"ort-cpu batch 8 logits: cosine {cosine:.6f} < 0.99"]
    return {"verdict": verdict, "failures": failures, "metrics": {"cosine": cosine, "top1_accuracy": acc, "top1_reference": ref_acc,
            "top1_agreement": agree, "nonfinite": nonfinite, "preset": "int8"}}  # fmt: skip


def _req(**kw: Any) -> DeployRequest:
    req = DeployRequest(model="x", **kw)
    req.check = lambda: None  # type: ignore[method-assign]  # no folder to check: the rule only reads the fields
    return req


INT8 = Candidate("int8", "ort-cpu", "int8-cpu")


def test_accurate_but_off_in_cosine_passes_by_the_task_rule():
    out = _verified(cosine=0.975, acc=0.969, ref_acc=0.967, agree=0.997, verdict="fail")  # the digits case of the issue
    _judge_rule(_req(accuracy_data="heldout/"), INT8, out)
    assert out["verdict"] == "pass" and out["rule"].startswith("task")
    assert out["preset_failures"] and "cosine" in out["preset_failures"][0]  # still reported


def test_close_in_cosine_but_losing_accuracy_fails_by_the_task_rule():
    out = _verified(cosine=0.995, acc=0.94, ref_acc=0.967, agree=0.995, verdict="pass")
    _judge_rule(_req(accuracy_data="heldout/"), INT8, out)
    assert out["verdict"] == "fail" and "2.70 points below" in out["failures"][0]


def test_the_task_rule_needs_agreement_and_finite_outputs_and_a_drop_setting():
    low = _verified(cosine=0.99, acc=0.967, ref_acc=0.967, agree=0.98, verdict="fail")
    _judge_rule(_req(accuracy_data="h/"), INT8, low)
    assert low["verdict"] == "fail" and "agreement" in low["failures"][0]
    nan = _verified(cosine=0.999, acc=0.967, ref_acc=0.967, agree=1.0, verdict="fail", nonfinite=4)
    _judge_rule(_req(accuracy_data="h/"), INT8, nan)
    assert nan["verdict"] == "fail" and "non-finite" in nan["failures"][0]
    loose = _verified(cosine=0.99, acc=0.95, ref_acc=0.967, agree=0.995, verdict="fail")
    _judge_rule(_req(accuracy_data="h/", max_accuracy_drop=2.0), INT8, loose)
    assert loose["verdict"] == "pass"


def test_without_labels_or_at_fp32_the_preset_decides():
    out = _verified(cosine=0.975, acc=0.969, ref_acc=0.967, agree=0.997, verdict="fail")
    _judge_rule(_req(), INT8, out)
    assert out["verdict"] == "fail" and out["rule"] == "preset int8"
    fp32 = _verified(cosine=0.975, acc=0.969, ref_acc=0.967, agree=0.997, verdict="fail")
    _judge_rule(_req(accuracy_data="h/"), Candidate("fp32", "ort-cpu", "fp32"), fp32)
    assert fp32["verdict"] == "fail"


def test_a_failed_check_is_not_lifted_by_the_task_rule():
    out = _verified(cosine=0.975, acc=0.969, ref_acc=0.967, agree=0.997, verdict="fail")
    out["failures"].append("preprocessing: the file's mean differs from the model's")
    _judge_rule(_req(accuracy_data="h/"), INT8, out)
    assert out["verdict"] == "fail"


def test_deploy_ships_the_accurate_int8_over_fp32():
    fast = {"id": "int8-ort-cpu", "precision": "int8", "backend": "ort-cpu", "timing": {"1": {"p50_ms": 5.0}}}
    fast.update(_verified(0.975, 0.969, 0.967, 0.997, "fail"))
    _judge_rule(_req(accuracy_data="h/"), INT8, fast)
    slow = {"id": "fp32-ort-cpu", "precision": "fp32", "backend": "ort-cpu", "verdict": "pass", "timing": {"1": {"p50_ms": 16.0}},
            "metrics": {"top1_agreement": 1.0}}  # fmt: skip
    pick, _ = choose([slow, fast], _req(accuracy_data="h/"))
    assert pick is not None and pick["id"] == "int8-ort-cpu"


def test_the_fp16_candidate_keeps_fp32_inputs_and_outputs(tmp_path: Path) -> None:
    """A user feeds deploy's fp16 model the same float32 images as the fp32 one, and gets float32 logits back."""
    from deployinc.io import save_onnx

    fp32 = tmp_path / "fp32.onnx"
    m = convnet()
    for key, value in (("deployinc.mean", "[0.5, 0.5, 0.5]"), ("deployinc.std", "[0.25, 0.25, 0.25]")):
        e = m.metadata_props.add()
        e.key, e.value = key, value
    save_onnx(m, fp32)
    req = DeployRequest(model=str(fp32), threads=1)
    artifacts: dict = {}
    path = _artifact(req, tmp_path, fp32, "fp16", artifacts)
    model = onnx.load(str(path))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)  # and it is fp16 inside
    assert "I/O kept fp32" in artifacts["fp16"]["made"]


@pytest.mark.slow
def test_deploy_builds_the_torch_reference_once(tmp_path: Path, monkeypatch, zoo_onnx) -> None:
    """The eager baseline, every candidate's verify and the mixed int8's layer search use one torch reference, built
    on first use (every torch model deployinc builds goes through ``load_model``, so its calls count the builds; the
    code before this counted one per verified candidate and one for the baseline); a deploy run again with every
    result cached builds none."""
    from deployinc.deploy.run import evaluate
    from deployinc.models import loading

    fp32 = zoo_onnx("inception_cifar")  # exported before the count starts
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path / "cache"))
    builds: list[str] = []
    real = loading.load_model

    def counted(spec: str, *a: Any, **kw: Any) -> Any:
        builds.append(spec)
        return real(spec, *a, **kw)

    monkeypatch.setattr(loading, "load_model", counted)
    options = dict(precisions=["fp32", "fp16", "int8"], backends=["ort-cpu"], torch_compile=False, iters=5, warmup=1, samples=4, threads=2)
    result = evaluate(DeployRequest(model=str(fp32), **options))
    verified = [r for r in result.results if r.get("metrics", {}).get("cosine") is not None]
    assert len(verified) >= 3, result.results  # fp32, fp16 and int8 on ORT CPU, each verified against the reference
    assert any("mixed" in r["id"] for r in result.results)  # its layer search judged on the reference's outputs too
    assert {"torch", "torch-fused"} <= set(result.baseline["rows"]) and all(r["timing"] for r in result.baseline["rows"].values())
    assert builds == ["inception_cifar"], f"the torch reference was built {len(builds)} times"

    builds.clear()
    again = evaluate(DeployRequest(model=str(fp32), **options))
    assert set(again.reused) >= {"baseline", *(r["id"] for r in result.results)}
    assert builds == [], "a deploy with every result cached builds no reference"
    assert result.runoff is not None and {k: v for k, v in (again.runoff or {}).items() if k != "format"} == result.runoff  # read back, not timed again
    assert again.chosen is not None and result.chosen is not None and again.chosen["id"] == result.chosen["id"]


def test_the_qdq_twin_of_a_mixed_artifact_names_only_the_chosen_layers_in_float() -> None:
    from deployinc.deploy.run import _qdq_info

    layers = [{"node": "c2", "module": "conv2", "share": 0.009}]
    mixed = {"path": "/s/int8-cpu-mixed.onnx", "made": "quantize + layer fallback: 1 layer(s) in float", "reused": True, "seconds": 3.0,
             "fallback": {"layers": layers, "also_float": [{"node": "c1", "module": "conv1", "share": 0.079}], "float_share": 0.088}}  # fmt: skip
    info = _qdq_info(mixed)
    assert info["fallback"]["also_float"] == [] and info["fallback"]["float_share"] == 0.009
    assert "path" not in info and "reused" not in info and "int8 (behind DequantizeLinear)" in info["made"]
    assert mixed["fallback"]["also_float"]  # the mixed artifact's own record is untouched
    own = {"float_nodes": ["c7", "c9"], "layers": [{"node": "c7", "module": "b.c7", "share": 0.004}, {"node": "c9", "module": "b.c9", "share": 0.002}],
           "also_float": [], "float_share": 0.006}  # fmt: skip
    twin = _qdq_info({**mixed, "qdq_fallback": own, "qdq_made": "quantize + layer fallback: 2 layer(s) in float"})  # the twin's own set
    assert twin["fallback"] == own and "qdq_fallback" not in twin and "qdq_made" not in twin
    assert twin["made"] == "quantize + layer fallback: 2 layer(s) in float; carried-along layers' weights left int8 (behind DequantizeLinear)"


def test_the_chosen_lower_precision_file_is_judged_again_on_other_images_once(tmp_path: Path, monkeypatch) -> None:
    from deployinc.deploy import run as D

    seen: list[int] = []

    def fake_verify(req, path, cand, subject=None, seed=0):  # noqa: ANN001, ANN202
        seen.append(seed)
        return {"verdict": "fail", "failures": ["top1 0.938 < 0.95"], "metrics": {"cosine": 0.991, "top1_agreement": 0.875}}

    monkeypatch.setattr(D, "_verify", fake_verify)
    req = DeployRequest(model="x", samples=16)
    chosen = {"id": "int8-ort-cpu", "precision": "int8", "backend": "ort-cpu", "artifact": "int8-cpu", "options": {}}
    model = tmp_path / "int8-cpu.onnx"
    model.write_bytes(b"one")
    arts = {"int8-cpu": {"path": str(model)}}
    look = D._second_look(req, tmp_path, chosen, arts, None)
    assert look is not None and look["verdict"] == "fail" and look["seed"] == D.SECOND_LOOK_SEED != 0 and seen == [D.SECOND_LOOK_SEED]
    assert look["backend"] == "ort-cpu" and look["precision"] == "int8"
    assert D._second_look(req, tmp_path, chosen, arts, None) == look and seen == [D.SECOND_LOOK_SEED]  # kept with the state
    model.write_bytes(b"two")  # the artifact was remade: looked at again
    D._second_look(req, tmp_path, chosen, arts, None)
    assert len(seen) == 2

    def broken(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        from deployinc.errors import DeployincError

        raise DeployincError("ort-cpu cannot run here")

    monkeypatch.setattr(D, "_verify", broken)
    model.write_bytes(b"three")
    assert D._second_look(req, tmp_path, chosen, arts, None)["verdict"] == "error"  # reported, never fatal
    assert D._second_look(req, tmp_path, {**chosen, "precision": "fp32", "id": "fp32-ort-cpu"}, arts, None) is None
    assert D._second_look(DeployRequest(model="x", accuracy_data=str(tmp_path)), tmp_path, chosen, arts, None) is None


def test_the_layer_search_judges_verify_images_and_more_sets_each_on_its_own(tmp_path: Path, monkeypatch) -> None:
    """The search's oracle: verify's --samples images first, then more of the same seed up to SEARCH_IMAGES, judged
    in sets of --samples; kept with the state, and remade when the kept one holds another count."""
    import numpy as np

    from deployinc.core.images import natural_images
    from deployinc.deploy import run as D
    from deployinc.precision import fallback as fb

    asked: list[int] = []

    def fake_reference(vreq, subject=None):  # noqa: ANN001, ANN202
        asked.append(vreq.samples)
        x = np.zeros((vreq.samples, 3, 8, 8), np.float32)
        return x, {"logits": np.zeros((vreq.samples, 10), np.float32)}, None, "input"

    monkeypatch.setattr(D, "reference_run", fake_reference)
    fp32 = tmp_path / "m.onnx"
    o = D._oracle(DeployRequest(model="x", samples=16), tmp_path, fp32, "input")
    assert asked == [96] and len(o.inputs) == 96 and o.set_size == 16
    # verify's own 16 images are the first set: the generator's prefix
    assert np.array_equal(natural_images(16, (3, 8, 8), seed=0), natural_images(96, (3, 8, 8), seed=0)[:16])
    assert "6 sets of 16, each judged on its own" in o.describe()
    search, plain = fb.int8_search_oracles(o, 16)  # the search's judge and the verdict's own
    assert search.tolerance.min_cosine == 0.991 and search.tolerance.min_top1 == 0.95  # a tenth of the cosine budget in hand
    assert search.set_size == 16 and len(search.inputs) == 96
    assert plain.tolerance.min_cosine == 0.99 and len(plain.inputs) == 16 and plain.set_size is None and len(plain.reference["logits"]) == 16
    D._oracle(DeployRequest(model="x", samples=16), tmp_path, fp32, "input")
    assert asked == [96]  # kept with the state
    o = D._oracle(DeployRequest(model="x", samples=100), tmp_path, fp32, "input")
    assert asked == [96, 100] and len(o.inputs) == 100 and "sets" not in o.describe()  # remade: one set of 100
