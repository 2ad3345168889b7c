"""``deployinc.bench.harness`` as a library: the settings checks, the precision rules, the split of iterations into
rounds, and :func:`benchmark` on a tiny exported model (one thread, a few iterations, no timing assertions)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from deployinc.bench import harness as H
from deployinc.bench.harness import BenchSettings, benchmark, check_precisions, default_threads, resolve_precisions, torch_precision
from deployinc.core.limits import BATCH_MAX, MAX_TIME_S_MAX, THREADS_MAX
from deployinc.errors import BadInputError


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    """benchmark() sets torch's thread count and TF32 switches for the eager rows: put them back for other tests."""
    import torch

    saved = (torch.get_num_threads(), torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.set_num_threads(saved[0])
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[1], saved[2]


# settings ---------------------------------------------------------------------------------------------------------


def test_check_precisions_normalises_and_deduplicates():
    assert check_precisions(["FP16", " fp32 ", "fp16", "", "int8"]) == ["fp16", "fp32", "int8"]
    with pytest.raises(BadInputError, match="unknown precision 'fp8'") as info:
        check_precisions(["fp32", "fp8"])
    assert "fp32, fp16, bf16, int8" in info.value.hint
    with pytest.raises(BadInputError, match="no precision given"):
        check_precisions([" ", ""])


def _settings(**kw) -> BenchSettings:
    kw.setdefault("backends", ["torch", "ort-cpu"])
    kw.setdefault("batches", [1, 8])
    return BenchSettings(**kw)


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"iters": 0}, "--iters 0 must be a positive integer"),
        ({"warmup": 0}, "--warmup 0 must be a positive integer"),
        ({"backends": ["torch", "ort-gpu"]}, "unknown backend 'ort-gpu'"),
        ({"batches": []}, r"batch sizes \[\] must be positive integers"),
        ({"batches": [1, 0]}, "must be positive integers"),
        ({"batches": [2.0]}, "must be positive integers"),
        ({"batches": [BATCH_MAX + 1]}, "must be positive integers"),
        ({"precisions": ["fp32", "fp64"]}, "unknown precision 'fp64'"),
        ({"precisions": ["bf16"]}, "--precision bf16 asked of ort-cpu"),
        ({"threads": 0}, "--threads 0 must be from 1 to"),
        ({"threads": THREADS_MAX + 1}, f"--threads {THREADS_MAX + 1} must be from 1 to {THREADS_MAX}"),
        ({"rounds": 0}, r"--rounds 0 must be between 1 and --iters \(100\)"),
        ({"rounds": 4, "iters": 3}, r"--rounds 4 must be between 1 and --iters \(3\)"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"max_time_s": 0.0}, "--max-time 0.0 must be a positive, finite number"),
        ({"max_time_s": float("nan")}, "--max-time nan must be"),
        ({"max_time_s": MAX_TIME_S_MAX * 2}, "--max-time .* must be"),
        ({"timeout_s": 0}, "--timeout 0 must be a positive, finite number"),
        ({"timeout_s": True}, "--timeout True must be"),
        ({"timeout_s": "30"}, "--timeout 30 must be"),
        ({"timeout_s": float("inf")}, "--timeout inf must be"),
    ],
)
def test_validate_refuses_bad_settings(change, pattern):
    with pytest.raises(BadInputError, match=pattern):
        _settings(**change).validate()


def test_validate_accepts_the_edges_and_normalises_precisions():
    s = _settings(batches=[1, BATCH_MAX], threads=THREADS_MAX, rounds=100, iters=100, max_time_s=MAX_TIME_S_MAX, timeout_s=1, precisions=["FP32", "fp16"])
    s.validate()
    assert s.precisions == ["fp32", "fp16"]
    _settings(backends=["torch", "ort-openvino"], precisions=["fp32", "bf16"]).validate()  # bf16 where one backend computes in it


def test_measurement_timeout():
    assert _settings().measurement_timeout() is None  # no bound: everything in this process
    assert _settings(timeout_s=5.0, max_time_s=100.0).measurement_timeout() == 5.0  # --timeout wins
    assert _settings(max_time_s=2.0).measurement_timeout() == 60.0  # max(10 x 2, 60)
    assert _settings(max_time_s=12.0).measurement_timeout() == 120.0  # max(10 x 12, 60)


def test_per_round_splits_the_iterations():
    assert H._per_round(_settings(iters=7, rounds=3)) == [3, 2, 2]
    assert H._per_round(_settings(iters=6, rounds=3)) == [2, 2, 2]
    assert H._per_round(_settings(iters=5, rounds=1)) == [5]
    assert H._per_round(_settings(iters=5, rounds=5)) == [1] * 5
    assert sum(H._per_round(_settings(iters=101, rounds=7))) == 101


def test_default_threads_is_the_affinity_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert default_threads() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_threads() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_threads() == 1


# precisions -------------------------------------------------------------------------------------------------------


def _file(precision: str, why: str = "detected") -> SimpleNamespace:
    return SimpleNamespace(file_precision=precision, file_precision_why=why, path=Path("/m/net.onnx"))


def test_resolve_precisions():
    assert resolve_precisions(_file("fp32", "float32 weights"), _settings()) == (["fp32"], "the file's (fp32: float32 weights)")
    assert resolve_precisions(_file("int8", "Q/DQ nodes"), _settings()) == (["int8"], "the file's (int8: Q/DQ nodes)")
    assert resolve_precisions(_file("fp32"), _settings(precisions=["fp16", "fp32"])) == (["fp16", "fp32"], "--precision")
    # an fp16 file: its ONNX backends run it at fp16 only...
    with pytest.raises(BadInputError, match=r"--precision fp32, but net.onnx computes in fp16 \(float16 weights\)") as info:
        resolve_precisions(_file("fp16", "float16 weights"), _settings(precisions=["fp32"]))
    assert "drop --precision" in info.value.hint
    # ... and the eager rows alone may run at another
    assert resolve_precisions(_file("fp16"), _settings(backends=["torch"], precisions=["fp32"])) == (["fp32"], "--precision")
    assert resolve_precisions(_file("fp16"), _settings(precisions=["fp16"])) == (["fp16"], "--precision")


def test_torch_precision():
    assert torch_precision("fp32", from_file=True) == "fp32"
    assert torch_precision("fp16", from_file=False) == "fp16"  # asked for: the eager rows run at it too
    assert torch_precision("fp16", from_file=True) == "fp32"  # the file's own: compared with the model as the user runs it
    assert torch_precision("int8", from_file=False) == "fp32"
    assert torch_precision("bf16", from_file=False) == "fp32"


# benchmark --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tinynets_dir, tmp_path_factory) -> dict[str, Path]:
    """tinynets:build exported at 16 x 16 with a dynamic batch (with provenance), and a copy without it."""
    import onnx

    from deployinc.export import export_pipeline

    d = tmp_path_factory.mktemp("harness")
    out = {"tiny": d / "tiny.onnx", "bare": d / "bare.onnx"}
    export_pipeline("tinynets:build", out=out["tiny"], exporter="torchscript", input_shape=(1, 3, 16, 16), num_classes=10, dynamic_batch=True,
                    threads=1, quick_check=False)  # fmt: skip
    m = onnx.load(str(out["tiny"]))
    del m.metadata_props[:]
    onnx.save(m, str(out["bare"]))
    return out


def _open(path: Path, **kw):
    from deployinc.bench.subject import open_onnx

    return open_onnx(path, **kw)


def test_benchmark_rows_backends_and_speedups(tiny):
    s = BenchSettings(backends=["torch", "torch-fused", "ort-cpu"], batches=[1, 2], warmup=1, iters=10, rounds=2, threads=1)
    seen: list[tuple[str, int]] = []
    report = benchmark(_open(tiny["tiny"], trust_code=True), s, progress=lambda d, n: seen.append((d, n)))
    rows = {(r.backend, r.batch): r for r in report.rows}
    assert sorted(rows) == sorted((b, n) for b in ("torch", "torch-fused", "ort-cpu") for n in (1, 2))
    for (backend, batch), r in rows.items():
        assert (r.status, r.precision, r.mode, r.device) == ("ok", "fp32", "e2e", "cpu"), (backend, batch)
        assert len(r.samples_ms) == 10 and all(v > 0 for v in r.samples_ms)  # iters samples, over both rounds
        assert len(r.stretch_p50_ms) == 2  # one p50 per round (5 samples each)
        assert r.stats.p50 > 0 and r.stats.throughput == pytest.approx(batch * 1e3 / r.stats.mean, rel=1e-6)
        # speedup over eager torch at the same batch size: the ratio of p50s, and exactly 1 for torch itself
        base = rows[("torch", batch)]
        assert r.speedup_vs == f"torch fp32 b{batch} e2e"
        assert r.speedup == pytest.approx(base.stats.p50 / r.stats.p50)
        assert "CPU: no host-device copies; compute = end to end" in r.notes
    assert rows[("torch", 1)].speedup == 1.0
    # a runner is built once and reused: its activation is on the first batch size's row only
    for backend in ("torch", "torch-fused", "ort-cpu"):
        assert rows[(backend, 1)].activate_s is not None and rows[(backend, 2)].activate_s is None
    cfg = report.config
    assert (cfg["backends"], cfg["batches"], cfg["precisions"], cfg["iters"], cfg["rounds"], cfg["threads"]) == (
        ["torch", "torch-fused", "ort-cpu"], [1, 2], ["fp32"], 10, 2, 1)
    assert cfg["precision_source"].startswith("the file's (fp32")
    assert cfg["isolated_timeout_s"] is None and "load_average" in cfg
    assert report.model["input_chw"] == [3, 16, 16] and report.model["file_precision"] == "fp32"
    assert report.environment  # recorded
    # progress: every cell advances once per round (2 batch sizes x 3 backends x 2 rounds)
    assert sum(n for _, n in seen) == 12


def test_benchmark_skips_what_cannot_run_with_one_row_and_a_reason(tiny):
    s = BenchSettings(backends=["torch", "ort-cpu"], batches=[1, 2], precisions=["fp32", "int8"], warmup=1, iters=2, threads=1)
    report = benchmark(_open(tiny["bare"]), s)
    by = [(r.backend, r.precision, r.batch, r.status) for r in report.rows]
    # no provenance: the torch rows cannot be rebuilt, skipped once (batch None) for every batch size
    assert ("torch", "fp32", None, "skipped") in by
    assert ("ort-cpu", "fp32", 1, "ok") in by and ("ort-cpu", "fp32", 2, "ok") in by
    # an fp32 file at int8 on ONNX Runtime: skipped once, with what to do; eager torch is not measured again at fp32
    assert ("ort-cpu", "int8", None, "skipped") in by
    assert len(report.rows) == 4, by
    torch_skip = next(r for r in report.rows if r.backend == "torch")
    assert "carries no deployinc provenance" in torch_skip.reason and "--reference" in torch_skip.reason
    int8_skip = next(r for r in report.rows if r.precision == "int8")
    assert "int8 needs a quantized model" in int8_skip.reason and "deployinc quantize" in int8_skip.reason
    # nothing to compare with: no speedups
    assert all(r.speedup is None for r in report.ok_rows())
    assert report.config["precision_source"] == "--precision"


def test_benchmark_torch_rows_from_given_modules(tiny):
    """``BenchModel.modules`` provides the eager module: a foreign file still gets its torch rows."""
    import importlib

    import torch

    m = _open(tiny["bare"])
    torch.manual_seed(0)
    m.modules = {"torch": importlib.import_module("tinynets").build().eval()}
    report = benchmark(m, BenchSettings(backends=["torch", "ort-cpu"], batches=[3], warmup=1, iters=2, threads=1, keep_samples=False))
    assert [(r.backend, r.batch, r.status) for r in report.rows] == [("torch", 3, "ok"), ("ort-cpu", 3, "ok")]
    ort = report.rows[1]
    assert ort.samples_ms is None  # keep_samples=False
    assert ort.speedup_vs == "torch fp32 b3 e2e" and math.isfinite(ort.speedup) and ort.speedup > 0


def test_benchmark_refuses_bad_input_before_running(tiny):
    m = _open(tiny["tiny"], trust_code=True)
    with pytest.raises(BadInputError, match="--iters 0"):
        benchmark(m, BenchSettings(backends=["ort-cpu"], batches=[1], iters=0))
    fp16_like = _open(tiny["tiny"], trust_code=True)
    fp16_like.file_precision, fp16_like.file_precision_why = "fp16", "float16 weights"
    with pytest.raises(BadInputError, match="computes in fp16"):
        benchmark(fp16_like, BenchSettings(backends=["ort-cpu"], batches=[1], precisions=["fp32"], warmup=1, iters=1, threads=1))


# unsteady timings -------------------------------------------------------------------------------------------------


def test_a_load_average_over_the_cores_flags_every_row_of_the_run(tiny, monkeypatch):
    """The load reading is replaced (the real one lags a minute behind a load): each row records the larger of the
    readings before and after its measurement and the core count, and is flagged with them, speedups included."""
    readings = iter([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [50.5, 9.0, 3.0]])  # the report's, then around the cells
    monkeypatch.setattr(H, "_loadavg", lambda: next(readings, [2.0, 2.0, 2.0]))
    s = BenchSettings(backends=["torch", "ort-cpu"], batches=[1], warmup=1, iters=3, threads=1)
    report = benchmark(_open(tiny["tiny"], trust_code=True), s)
    cores = os.cpu_count()
    for r in report.ok_rows():
        assert (r.load_average, r.cpus) == (50.5, cores)
        assert f"load average 50.50 on {cores} cores" in r.unsteady_reason()
    ort = report.find("ort-cpu", "fp32", 1, "e2e")
    assert report.speedup_unsteady(ort) == ["ort-cpu fp32 b1 e2e", "torch fp32 b1 e2e"]
    assert "x!" in report.render()


def _fake_run(p50: float, minimum: float, load: float | None = None):
    from deployinc.bench.report import BenchReport, BenchRow
    from deployinc.bench.timing import summarize

    row = BenchRow("ort-cpu", "fp32", 1, "e2e", "ok", stats=summarize([minimum / 1e3] + [p50 / 1e3] * 4, 1), load_average=load, cpus=2)
    return BenchReport(model={"name": "m"}, config={}, environment={}, rows=[row])


def test_benchmark_steady_measures_an_unsteady_run_again_once(monkeypatch):
    runs = iter([_fake_run(30.0, 5.0), _fake_run(10.0, 9.0)])
    calls = []
    monkeypatch.setattr(H, "benchmark", lambda *a, **k: calls.append(1) or next(runs))
    report = H.benchmark_steady(None, None)
    assert len(calls) == 2 and report.rows[0].stats.p50 == pytest.approx(10.0)  # the steady re-measurement kept
    assert "ort-cpu fp32 b1 e2e" in report.config["remeasured"] and not report.rows[0].unsteady_reasons()
    # still unsteady: measured again once only, kept and marked
    runs = iter([_fake_run(30.0, 5.0), _fake_run(40.0, 6.0), _fake_run(10.0, 9.0)])
    calls.clear()
    report = H.benchmark_steady(None, None)
    assert len(calls) == 2 and report.rows[0].unsteady_reasons() and "measured again once: still unsteady" in report.rows[0].notes
    # a steady run, and a run unsteady by its load average alone (a minute's average: measuring again cannot help),
    # are not measured again
    for first in (_fake_run(10.0, 9.0), _fake_run(10.0, 9.0, load=5.0)):
        runs = iter([first])
        calls.clear()
        assert H.benchmark_steady(None, None) is first and len(calls) == 1 and "remeasured" not in first.config
