"""deploy's run-off (``deployinc.deploy.runoff``): the fastest passing candidates timed again, interleaved with ORT
CPU fp32, before the choice; what it replaces, what it keeps, what it reuses, and what the report says."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import onnx
import pytest

from deployinc.deploy import runoff as RO
from deployinc.deploy.report import runoff_lines, speedup_flags, table_rows
from deployinc.deploy.run import _speedups
from tests.precision.test_fp16 import convnet


def _req(**kw: Any) -> SimpleNamespace:
    base = dict(objective="latency", batches=[1], warmup=1, iters=6, threads=1, trust_model_code=False, require_backend=None,
                require_precision=None, min_top1_agreement=None, said=[])  # fmt: skip
    base.update(kw)
    ns = SimpleNamespace(**base)
    ns.say = ns.said.append
    return ns


def _row(ident: str, p50: float, verdict: str = "pass", **kw: Any) -> dict[str, Any]:
    precision, backend = ident.split("-", 1)
    for suffix in ("-threads1", "-minmax", "-mixed"):
        backend = backend.replace(suffix, "")
    return {"id": ident, "precision": precision, "backend": backend, "artifact": "fp32", "options": kw.pop("options", {}), "verdict": verdict,
            "metrics": {"top1_agreement": 1.0}, "timing": {"1": {"p50_ms": p50, "unsteady": kw.pop("unsteady", [])}}, "finished": 1.0, **kw}  # fmt: skip


def test_the_contenders_are_the_fastest_passing_within_the_span_and_ort_fp32():
    rows = [_row("fp32-ort-cpu", 10.0), _row("int8-ort-cpu", 3.0), _row("int8-openvino", 3.5, unsteady=["rounds disagree"]),
            _row("bf16-openvino", 3.8), _row("fp16-ort-cpu", 6.5), _row("int8-ort-cpu-minmax", 2.0, verdict="fail"),
            _row("int8-openvino-mixed", 3.1), _row("int8-ort-cpu-mixed", 3.2), _row("int8-openvino-minmax", 5.9),
            _row("fp32-openvino", 9.0)]  # fmt: skip
    got = [r["id"] for r in RO.contenders(rows, _req())]
    # within 2x of 3.0 ms (6.0): six pass, all run again (an unsteady one too), and ORT fp32 beside them
    assert got == ["int8-ort-cpu", "int8-openvino-mixed", "int8-ort-cpu-mixed", "int8-openvino", "bf16-openvino", "int8-openvino-minmax", "fp32-ort-cpu"]
    rows.append(_row("int8-ort-cpu-mixed-threads1", 3.3))
    assert [r["id"] for r in RO.contenders(rows, _req())][-2:] == ["bf16-openvino", "fp32-ort-cpu"]  # at most six, the fastest
    assert RO.contenders(rows, _req(objective="throughput")) == []
    assert [r["id"] for r in RO.contenders(rows, _req(require_backend="openvino"))] == ["int8-openvino-mixed", "int8-openvino", "bf16-openvino", "int8-openvino-minmax", "fp32-ort-cpu"]
    assert RO.contenders([_row("fp32-ort-cpu", 10.0), _row("int8-ort-cpu", 3.0, verdict="fail")], _req()) == []  # nothing to compare


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "net.onnx"
    onnx.save(convnet(), good)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not onnx")
    return good, bad


def test_the_run_off_times_them_again_interleaved_and_keeps_the_first_timing(files, monkeypatch):
    good, _ = files
    rows = [_row("fp32-ort-cpu", 10.0), _row("fp32-ort-cpu-threads1", 9.0, options={"threads": 1})]
    calls: list[Any] = []
    real_measure = RO.measure

    def spy(step: Any, **kw: Any) -> Any:
        calls.append(step)
        return real_measure(step, **kw)

    monkeypatch.setattr(RO, "measure", spy)
    saved: list[dict[str, Any]] = []
    req = _req()
    data = RO.run_off(req, rows, lambda r: good, None, saved.append)
    assert data is not None and saved == [data] and req.said and "run-off" in req.said[0]
    assert data["order"] == ["fp32-ort-cpu-threads1", "fp32-ort-cpu"] and set(data["rows"]) == set(data["order"]) and not data["dropped"]
    first, second = calls[0], calls[1]
    assert first is not second and len(calls) == 2 * RO.ROUNDS
    assert calls == [first, second, second, first] * (RO.ROUNDS // 2)  # every round both, the order rotated
    for r in rows:
        row = r["timing"]["1"]
        assert r["first_timing"]["p50_ms"] in (10.0, 9.0) and row["p50_ms"] < 5.0  # a 16 px convnet: well under a millisecond
        assert len(row["round_p50_ms"]) == RO.ROUNDS and row["iters"] == RO.ROUNDS * data["per_round"]
    assert len(RO.round_ratios(data, "fp32-ort-cpu-threads1")) == RO.ROUNDS and RO.round_ratios(data, "fp32-ort-cpu") == []

    def no_measure(*_a: Any) -> Any:
        raise AssertionError("measured again")

    again = [_row("fp32-ort-cpu", 10.0), _row("fp32-ort-cpu-threads1", 9.0, options={"threads": 1})]
    monkeypatch.setattr(RO, "_measure", no_measure)
    assert RO.run_off(req, again, lambda r: good, data, saved.append) is data  # the same contenders' same results: reused
    assert again[0]["timing"]["1"] == rows[0]["timing"]["1"] and again[0]["first_timing"]["p50_ms"] == 10.0
    newer = [_row("fp32-ort-cpu", 10.0), _row("fp32-ort-cpu-threads1", 9.0, finished=2.0)]  # a remade candidate
    with pytest.raises(AssertionError, match="measured again"):
        RO.run_off(req, newer, lambda r: good, data, saved.append)


def test_a_file_that_cannot_be_opened_again_is_not_chosen_and_without_ort_fp32_there_is_no_run_off(files):
    good, bad = files
    rows = [_row("fp32-ort-cpu", 10.0), _row("fp32-ort-cpu-threads1", 9.0, options={"threads": 1}), _row("fp16-ort-cpu", 8.5, artifact="broken")]
    saved: list[dict[str, Any]] = []
    data = RO.run_off(_req(), rows, lambda r: bad if r["artifact"] == "broken" else good, None, saved.append)
    assert data is not None and set(data["dropped"]) == {"fp16-ort-cpu"} and saved == []  # a failure is timed again next run
    assert rows[2]["verdict"] == "error" and rows[2]["reason"].startswith("the run-off could not time it again")
    assert rows[2]["timing"]["1"]["p50_ms"] == 8.5 and "first_timing" not in rows[2]
    lone = [_row("fp32-ort-cpu", 10.0, artifact="broken"), _row("fp32-ort-cpu-threads1", 9.0, options={"threads": 1}), _row("fp16-ort-cpu", 9.5)]
    assert RO.run_off(_req(), lone, lambda r: bad if r["artifact"] == "broken" else good, None, saved.append) is None
    assert saved == [] and all("first_timing" not in r and r["verdict"] == "pass" for r in lone)  # first timings stand


def test_a_runner_that_fails_in_the_run_off_is_not_chosen(files, monkeypatch):
    good, _ = files
    from deployinc.runners.ort import OrtRunner

    real = OrtRunner.bench_steps

    def failing(self: Any, feeds: Any) -> Any:
        steps = real(self, feeds)
        if self.threads == 1:  # the one-thread candidate's runtime errors mid-run
            def boom() -> None:
                raise RuntimeError("ORT: something native went wrong")

            steps.e2e = boom
        return steps

    monkeypatch.setattr(OrtRunner, "bench_steps", failing)
    rows = [_row("fp32-ort-cpu", 10.0), _row("fp32-ort-cpu-threads1", 9.0, options={"threads": 1}), _row("fp16-ort-cpu", 9.5)]
    data = RO.run_off(_req(threads=2), rows, lambda r: good, None, lambda d: None)
    assert data is not None and data["dropped"] == {"fp32-ort-cpu-threads1": "failed when timed again: ORT: something native went wrong"}
    assert set(data["rows"]) == set(data["order"]) == {"fp32-ort-cpu", "fp16-ort-cpu"}
    assert rows[1]["timing"]["1"]["p50_ms"] == 9.0 and "first_timing" not in rows[1] and rows[1]["verdict"] == "error"


def _result(rows: list[dict[str, Any]], chosen: str, data: dict[str, Any] | None) -> SimpleNamespace:
    req = _req()
    baseline = {"rows": {"torch": {"timing": {"1": {"p50_ms": 20.0}}}}}
    _speedups(rows, baseline, req)  # type: ignore[arg-type]
    pick = next(r for r in rows if r["id"] == chosen)
    return SimpleNamespace(request=req, results=rows, baseline=baseline, chosen=pick, runoff=data)


def test_speedups_and_the_report_use_the_run_off_only_between_its_rows():
    rows = [_row("fp32-ort-cpu", 10.0), _row("int8-openvino", 4.0), _row("fp16-ort-cpu", 9.0)]
    data = {"batch": 1, "rounds": 3, "per_round": 5, "order": ["int8-openvino", "fp32-ort-cpu"], "dropped": {},
            "rows": {"int8-openvino": {"p50_ms": 3.0, "unsteady": [], "round_p50_ms": [3.0, 3.2, 2.9]},
                     "fp32-ort-cpu": {"p50_ms": 8.0, "unsteady": ["p50 is 2.4 x min"], "round_p50_ms": [8.0, 8.0, 8.7]}}}  # fmt: skip
    RO.apply(rows, data)
    result = _result(rows, "int8-openvino", data)
    sp = {r["id"]: r["speedup"]["1"]["vs_ort_fp32"] for r in rows}
    assert sp["int8-openvino"] == pytest.approx(8.0 / 3.0)  # both from the run-off
    assert sp["fp16-ort-cpu"] == pytest.approx(10.0 / 9.0)  # left out: against ORT fp32's first timing, not the run-off's
    assert speedup_flags(result, rows[2], "1")["vs_ort_fp32"] == []  # and not flagged by the run-off's row of ORT fp32
    assert speedup_flags(result, rows[1], "1")["vs_ort_fp32"] == ["fp32-ort-cpu: p50 is 2.4 x min"]
    text = "\n".join(runoff_lines(result))
    assert "`int8-openvino`, `fp32-ort-cpu` were timed again" in text and "fp32-ort-cpu 10.00; int8-openvino 4.00" in text
    assert "ran 2.50-3.00x ORT CPU fp32 (median 2.67x)" in text
    notes = {r[0].split(" ")[0]: r[-1] for r in table_rows(result)}
    assert notes["int8-openvino"].startswith("run-off figures (first timing p50 4.00 ms)") and "run-off" not in notes["fp16-ort-cpu"]
    assert runoff_lines(_result([_row("fp32-ort-cpu", 10.0)], "fp32-ort-cpu", None)) == []
