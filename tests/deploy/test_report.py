"""deploy's table and report (``deployinc.deploy.report``): figures that rest on an unsteady timing are marked, and
the report claims no speedup from one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from deployinc.deploy import report as R
from deployinc.deploy.request import DeployRequest

SPREAD = "p50 is 8.5 x min (1526 vs 179 ms; limit 2 x)"


def _result(torch_flags: list[str], ort_flags: list[str] | None = None) -> Any:
    req = DeployRequest(model="googlenet")
    req.check()

    def cand(cid: str, precision: str, p50: float, flags: list[str], vs_torch: float, vs_ort: float) -> dict[str, Any]:
        return {"id": cid, "precision": precision, "backend": "ort-cpu", "verdict": "pass",
                "metrics": {"max_rel": 1e-6, "cosine": 1.0, "top1_agreement": 1.0, "preset": "fp32"},
                "timing": {"1": {"p50_ms": p50, "p99_ms": p50 * 1.2, "images_per_s": 1000 / p50, "unsteady": flags}},
                "speedup": {"1": {"vs_torch": vs_torch, "vs_ort_fp32": vs_ort}}}  # fmt: skip

    fp32 = cand("fp32-ort-cpu", "fp32", 65.5, ort_flags or [], 1526.0 / 65.5, 1.0)
    int8 = cand("int8-ort-cpu", "int8", 30.0, [], 1526.0 / 30.0, 65.5 / 30.0)
    baseline = {"rows": {"torch": {"timing": {"1": {"p50_ms": 1526.0, "images_per_s": 0.66, "unsteady": torch_flags}}}}}
    return SimpleNamespace(request=req, results=[fp32, int8], baseline=baseline, chosen=int8, why="fastest passing candidate by p50 at batch 1")


def test_speedups_over_an_unsteady_eager_baseline_are_marked_and_not_claimed() -> None:
    res = _result([SPREAD])
    rows = {r[0]: dict(zip(R.HEADER, r)) for r in R.table_rows(res, mark="")}
    assert rows["fp32-ort-cpu"]["x torch"] == "23.30!" and rows["fp32-ort-cpu"]["x ORT fp32"] == "1.00"
    assert rows["int8-ort-cpu"]["x torch"] == "50.87!" and rows["int8-ort-cpu"]["x ORT fp32"] == "2.18"
    assert rows["int8-ort-cpu"]["p50 ms"] == "30.00"  # its own timing is steady
    text = R.text_table(res)
    assert "23.30!" in text and R.UNSTEADY_LEGEND in text
    assert "23.30!" in R.markdown_table(res)
    assert "p50 1526.00 ms!, 0.7 images/s (unsteady: p50 is 8.5 x min" in "\n".join(R._baseline_lines(res))
    line = R._speed_sentence(res, res.chosen, "1", res.chosen["timing"]["1"], res.chosen["speedup"]["1"])
    assert "x eager torch" not in line and "50.87" not in line
    assert "2.18x plain ORT CPU fp32" in line and f"no speedup claimed over eager torch (eager torch: {SPREAD})" in line


def test_an_unsteady_candidate_is_marked_on_its_row_and_in_the_ratios_against_it() -> None:
    res = _result([], ort_flags=["load average 4.10 on 2 cores"])
    rows = {r[0]: dict(zip(R.HEADER, r)) for r in R.table_rows(res, mark="")}
    fp32 = rows["fp32-ort-cpu"]
    assert fp32["p50 ms"] == "65.50!" and fp32["images/s"].endswith("!") and fp32["x torch"] == "23.30!"
    assert "unsteady timing: load average 4.10 on 2 cores" in fp32["note"]
    assert rows["int8-ort-cpu"]["x torch"] == "50.87" and rows["int8-ort-cpu"]["x ORT fp32"] == "2.18!"
    line = R._speed_sentence(res, res.chosen, "1", res.chosen["timing"]["1"], res.chosen["speedup"]["1"])
    assert "50.87x eager torch" in line and "no speedup claimed over plain ORT CPU fp32 (fp32-ort-cpu: load average" in line


def test_steady_figures_are_printed_bare() -> None:
    res = _result([])
    assert "!" not in R.text_table(res) and "!" not in R.markdown_table(res)
    line = R._speed_sentence(res, res.chosen, "1", res.chosen["timing"]["1"], res.chosen["speedup"]["1"])
    assert line == "p50 30.00 ms at batch 1, 50.87x eager torch and 2.18x plain ORT CPU fp32, measured in the same run"


def test_a_mixed_candidate_names_its_float_layers_their_share_of_the_work_and_the_cost_in_speed() -> None:
    res = _result([])
    whole = res.results[1]
    whole["artifact"] = "int8-cpu"
    mixed = {**whole, "id": "int8-ort-cpu-mixed", "artifact": "int8-cpu-mixed",
             "timing": {"1": {"p50_ms": 45.0, "p99_ms": 50.0, "images_per_s": 22.2, "unsteady": []}}}  # fmt: skip
    res.results.append(mixed)
    layer = {"node": "/conv1/Conv", "module": "conv1", "gain": 1.5e-2, "share": 0.0788}
    also = {"node": "/conv0/Conv", "module": "conv0", "share": 0.02}
    res.artifacts = {"int8-cpu-mixed": {"fallback": {"layers": [layer], "candidates": 58, "evaluations": 70, "seconds": 90.0, "float_share": 0.0988,
                                                     "also_float": [also]}}}  # fmt: skip
    text = "\n".join(R.precision_lines(res, mixed))
    assert "1 of 58 layers kept in float, 9.9% of the layers' multiply-adds (the layer fallback, 70 evaluations" in text
    assert "- `conv0` (ONNX node `/conv0/Conv`): computed in float with them (its output feeds only float layers now" in text
    assert "- `conv1` (ONNX node `/conv1/Conv`): alone in float it lowers the mean error by 1.50e-02; 7.9% of the multiply-adds" in text
    assert "p50 45.00 ms against 30.00 ms for the whole-model int8 (1.50x), same run" in text


def test_the_triton_notes_name_the_layers_in_float_and_those_carried_along() -> None:
    from deployinc.deploy.package import precision_notes

    art = {"recipe": {"name": "u8s8", "cpu_path": "avx512-vnni"},
           "fallback": {"layers": [{"module": "conv2"}], "also_float": [{"module": "conv1"}]}}  # fmt: skip
    notes = precision_notes({"precision": "int8", "backend": "ort-cpu"}, art)
    assert notes == ["precision: int8 on ort-cpu (int8 recipe u8s8, for the CPU int8 path avx512-vnni)",
                     "kept in float (1 layers): conv2", "computed in float with them: conv1"]  # fmt: skip


def test_the_second_look_is_reported_and_a_failing_one_says_to_verify_on_your_own_images() -> None:
    res = _result([])
    assert R.second_look_lines(res) == []  # none taken (fp32, or labelled images)
    res.second_look = {"seed": 100, "samples": 16, "verdict": "pass", "failures": [], "cosine": 0.9931, "top1_agreement": 0.9375}
    assert R.second_look_lines(res)[0].endswith("PASS (cosine 0.993100, top-1 agreement 0.9375).")
    res.second_look = {"seed": 100, "samples": 16, "verdict": "fail", "failures": ["ort-cpu batch 1 logits: top1 0.938 < 0.95"]}
    line = R.second_look_lines(res)[0]
    assert "16 other generated images (seed 100" in line and "**FAIL** (ort-cpu batch 1 logits: top1 0.938 < 0.95)" in line
    assert "`deployinc verify model.onnx --data <images> --providers ort-cpu --precision int8`" in line
    res.second_look = {**res.second_look, "backend": "openvino", "precision": "bf16", "threads": 1}
    assert "--providers openvino --precision bf16 --threads 1" in R.second_look_lines(res)[0]  # as deploy ran it
    res.second_look = {"seed": 100, "samples": 16, "verdict": "error", "failures": ["openvino cannot run here"]}
    line = R.second_look_lines(res)[0]
    assert line.endswith("error (openvino cannot run here); nothing was judged.") and "FAIL" not in line and "preset" not in line


def test_the_report_records_a_onednn_cap_beside_the_cpu_features(monkeypatch) -> None:
    res = _result([])
    res.__dict__.update(target="cpu", target_reason="asked", left_out=[], artifacts={}, reused=[], seconds=1.0, notes=[], second_look=None)
    monkeypatch.setattr(R, "isa_cap", lambda: "ONEDNN_MAX_CPU_ISA=AVX2")
    monkeypatch.setattr(R, "speed_flags", lambda: [])
    d = R.report_dict(res, None)
    assert d["isa_cap"] == "ONEDNN_MAX_CPU_ISA=AVX2" and d["cpu_flags"] == []
