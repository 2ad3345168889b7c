"""deploy's choice (``deployinc.deploy.plan``): the tie rule, the requirements, and timings that are not steady."""

from __future__ import annotations

from typing import Any

from deployinc.deploy.plan import TIE, choose, eligible, unsteady
from deployinc.deploy.request import DeployRequest


def _req(**kw: Any) -> DeployRequest:
    req = DeployRequest(model="x", **kw)
    req.check()
    return req


def _res(cid: str, precision: str, backend: str, p50: float, agree: float | None = 1.0, flags: list[str] | None = None) -> dict:
    metrics = {} if agree is None else {"top1_agreement": agree}
    return {"id": cid, "precision": precision, "backend": backend, "verdict": "pass", "metrics": metrics,
            "timing": {"1": {"p50_ms": p50, "images_per_s": 1000 / p50, "unsteady": flags or []}}}  # fmt: skip


def test_the_tie_is_a_ratio_of_the_best_not_a_difference() -> None:
    req = _req()
    assert TIE == 0.03
    # 100 ms against 40 ms: 2.5 x slower, no tie, whatever units the scores are in (1/p50 differ by only 0.015)
    pick, why = choose([_res("fp32-ort-cpu", "fp32", "ort-cpu", 100.0), _res("int8-ort-cpu", "int8", "ort-cpu", 40.0)], req)
    assert pick["id"] == "int8-ort-cpu" and "tied" not in why
    # within 3% of the best: a tie (fp32 takes it); just over 3%: none
    pick, why = choose([_res("fp32-ort-cpu", "fp32", "ort-cpu", 41.2), _res("int8-ort-cpu", "int8", "ort-cpu", 40.0)], req)
    assert pick["id"] == "fp32-ort-cpu" and "tied with int8-ort-cpu" in why
    assert choose([_res("fp32-ort-cpu", "fp32", "ort-cpu", 41.3), _res("int8-ort-cpu", "int8", "ort-cpu", 40.0)], req)[0]["id"] == "int8-ort-cpu"
    # by throughput the scores are large (images/s): 970.9 vs 1000 ties, 960 does not
    req = _req(objective="throughput")
    assert choose([_res("fp32-ort-cpu", "fp32", "ort-cpu", 1.03), _res("int8-ort-cpu", "int8", "ort-cpu", 1.0)], req)[0]["id"] == "fp32-ort-cpu"
    assert choose([_res("fp32-ort-cpu", "fp32", "ort-cpu", 1.0417), _res("int8-ort-cpu", "int8", "ort-cpu", 1.0)], req)[0]["id"] == "int8-ort-cpu"


def test_a_tie_goes_to_fewer_dependencies() -> None:
    req = _req()
    # both fp32, OpenVINO 2% faster: a tie, and plain ORT CPU needs less installed
    pick, why = choose([_res("fp32-ort-openvino", "fp32", "ort-openvino", 9.8), _res("fp32-ort-cpu", "fp32", "ort-cpu", 10.0)], req)
    assert pick["id"] == "fp32-ort-cpu" and "fewer dependencies" in why
    # TensorRT's provider against a native engine, and ORT CUDA against both
    trt = [_res("fp16-trt-engine", "fp16", "trt-engine", 5.0), _res("fp16-ort-trt", "fp16", "ort-trt", 5.1)]
    assert choose(trt, req)[0]["id"] == "fp16-ort-trt"
    assert choose([*trt, _res("fp16-ort-cuda", "fp16", "ort-cuda", 5.14)], req)[0]["id"] == "fp16-ort-cuda"
    # out of the tie, speed decides again
    assert choose([_res("fp32-ort-openvino", "fp32", "ort-openvino", 9.0), _res("fp32-ort-cpu", "fp32", "ort-cpu", 10.0)], req)[0]["id"] == "fp32-ort-openvino"


def test_a_tie_goes_to_float_layers_at_fp32_over_bf16() -> None:
    req = _req()
    bf = {**_res("int8-openvino-mixed-float-bf16", "int8", "openvino", 9.8), "options": {"fallback": "mixed", "float": "bf16"}}
    fp = {**_res("int8-openvino-mixed", "int8", "openvino", 10.0), "options": {"fallback": "mixed"}}
    pick, why = choose([bf, fp], req)
    assert pick["id"] == "int8-openvino-mixed" and "then fp32 float layers" in why
    assert choose([{**bf, "timing": {"1": {**bf["timing"]["1"], "p50_ms": 9.0, "images_per_s": 111.1}}}, fp], req)[0]["id"] == bf["id"]


def test_min_top1_agreement_refuses_an_unknown_agreement() -> None:
    req = _req(min_top1_agreement=0.9)
    unknown = _res("fp32-ort-cpu", "fp32", "ort-cpu", 10.0, agree=None)
    assert eligible(unknown, req) == "top-1 agreement unknown < --min-top1-agreement 0.9"
    unknown["metrics"]["top1_agreement"] = None
    assert "unknown" in eligible(unknown, req)
    assert eligible(_res("a", "fp32", "ort-cpu", 10.0, agree=0.95), req) is None
    assert "0.8500 < --min-top1-agreement" in eligible(_res("a", "fp32", "ort-cpu", 10.0, agree=0.85), req)
    assert choose([unknown], req)[0] is None
    assert eligible(unknown, _req()) is None  # no floor asked: unknown is fine


def test_the_choice_does_not_rest_on_unsteady_timings() -> None:
    req = _req()
    shaky = _res("int8-ort-cpu", "int8", "ort-cpu", 4.0, flags=["p50 is 8.5 x min (34 vs 4 ms; limit 2 x)"])
    steady = _res("fp32-ort-cpu", "fp32", "ort-cpu", 10.0)
    assert unsteady(shaky, "latency", [1]) == ["p50 is 8.5 x min (34 vs 4 ms; limit 2 x)"] and unsteady(steady, "latency", [1]) == []
    pick, why = choose([shaky, steady], req)
    assert pick["id"] == "fp32-ort-cpu" and "not ranked, as their timings stayed unsteady when measured again: int8-ort-cpu" in why
    # nothing steady passed: ranked anyway, and the reason says what the choice rests on
    steady["timing"]["1"]["unsteady"] = ["load average 4.10 on 2 cores"]
    pick, why = choose([shaky, steady], req)
    assert pick["id"] == "int8-ort-cpu" and "rests on unsteady figures" in why
    # a result cached before the flag existed counts as steady
    del shaky["timing"]["1"]["unsteady"]
    pick, why = choose([shaky, steady], req)
    assert pick["id"] == "int8-ort-cpu" and why.endswith("not ranked, as their timings stayed unsteady when measured again: fp32-ort-cpu")
