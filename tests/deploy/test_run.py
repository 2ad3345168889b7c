"""deploy's judging of lower-precision candidates (deployinc.deploy.run): the task rule with labelled images."""

from __future__ import annotations

from typing import Any

from deployinc.deploy.plan import Candidate, choose
from deployinc.deploy.request import DeployRequest
from deployinc.deploy.run import _judge_rule


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
