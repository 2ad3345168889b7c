"""``deployinc bench`` hardening: malformed baselines, exit codes, bounded time, the table at 80 columns, the file's
precision, the unsteady flag in JSON/CSV, ``--reference``, torch's stray log line, progress, ``--inputs``.

Tiny models (16 x 16 inputs, hand-made ONNX graphs), few iterations, no timing assertions.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployinc.bench.regression import compare, load_baseline
from deployinc.bench.report import FORMAT, BenchReport, BenchRow
from deployinc.bench.timing import summarize
from deployinc.errors import BadInputError

from tests.conftest import invoke

FAST = ["--warmup", "1", "--iters", "3", "--threads", "2"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# models ------------------------------------------------------------------------------------------------------------


def _graph_model(nodes, inits, inputs=None, opset=17, meta=None):
    inputs = inputs or [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    for k, v in (meta or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


def _head(src):
    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "w"), numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    nodes = [
        helper.make_node("GlobalAveragePool", [src], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], name="fc", transB=1),
    ]
    return nodes, inits


def _hang_model():
    """A Loop of 10**12 Identity steps before the head: one inference never ends."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x_in"], ["x_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    head, inits = _head("looped")
    inits += [numpy_helper.from_array(np.array(10**12, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")]
    return _graph_model([helper.make_node("Loop", ["trips", "cond", "input"], ["looped"], name="spin", body=body), *head], inits)


def _int8_model():
    """Q/DQ on the input, then the head: a quantized file (int8), with no deployinc metadata."""
    head, inits = _head("dq")
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]), *head]
    return _graph_model(nodes, inits)


@pytest.fixture(scope="module")
def models(tinynets_dir, tmp_path_factory) -> dict[str, Path]:
    """tinynets:build exported at 16 x 16 (with provenance), a copy without it, its fp16 conversion (deployinc
    convert), and hand-made graphs: a hanging Loop, a quantized one, a cyclic one, a custom op, an int64 input."""
    from click.testing import CliRunner

    from deployinc.export import export_pipeline

    d = tmp_path_factory.mktemp("bench-hardening")
    out: dict[str, Path] = {}
    out["tiny"] = d / "tiny.onnx"
    export_pipeline("tinynets:build", out=out["tiny"], exporter="torchscript", input_shape=(1, 3, 16, 16), num_classes=10,
                    dynamic_batch=True, threads=2, quick_check=False)  # fmt: skip
    m = onnx.load(str(out["tiny"]))
    del m.metadata_props[:]
    out["bare"] = d / "bare.onnx"
    onnx.save(m, str(out["bare"]))
    out["fp16"] = d / "tiny.fp16.onnx"
    r = invoke(CliRunner(), ["convert", str(out["tiny"]), "--precision", "fp16", "--out", str(out["fp16"])])
    assert r.exit_code == 0, r.output
    for name, model in (("hang", _hang_model()), ("int8", _int8_model())):
        out[name] = d / f"{name}.onnx"
        onnx.save(model, str(out[name]))
    head, inits = _head("r")
    cyclic = [helper.make_node("Add", ["input", "r"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["r"], name="relu"), *head]
    head2, inits2 = _head("c")
    custom = _graph_model([helper.make_node("Twist", ["input"], ["c"], name="twist", domain="acme"), *head2], inits2)
    custom.opset_import.append(helper.make_opsetid("acme", 1))
    head3, inits3 = _head("x")
    int_in = [helper.make_tensor_value_info("input", TensorProto.INT64, ["N", 3, 8, 8])]
    for name, model in (
        ("cyclic", _graph_model(cyclic, inits)),
        ("custom", custom),
        ("int64", _graph_model([helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT), *head3], inits3, inputs=int_in)),
    ):
        out[name] = d / f"{name}.onnx"
        out[name].write_bytes(model.SerializeToString())
    return out


def _clean_error(r, code: int, needle: str) -> None:
    out = r.stdout + r.stderr
    assert r.exit_code == code, out
    assert "Traceback" not in out and "internal error" not in out, out
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("hint: "), r.stderr


def _row(backend, p50, batch=1, precision="fp32", mode="e2e"):
    return BenchRow(backend, precision, batch, mode, "ok", device="cpu", stats=summarize([p50 / 1e3] * 3, batch))


def _report(rows, name="net"):
    r = BenchReport(model={"name": name, "input_chw": [3, 16, 16]}, config={"threads": 2}, environment={}, rows=rows, created="now")
    r.compute_speedups()
    return r


# 1. malformed baselines ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,field",
    [
        ({"results": [5, "x", None]}, "results[0]"),
        ({"environment": "a string"}, "'environment'"),
        ({"config": [1, 2]}, "'config'"),
        ({"results": [{"backend": "torch", "precision": "fp32", "batch": 1, "mode": "e2e", "status": "ok", "stats": {"p50": "fast"}}]}, "results[0].stats"),
        ({"results": [{"backend": "torch", "precision": "fp32", "batch": "one", "mode": "e2e", "status": "ok"}]}, "results[0].batch"),
    ],
)
def test_malformed_baseline_is_bad_input_naming_the_field(cli_runner, models, tmp_path, edit, field):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"format": FORMAT, "model": {"name": "x"}, "config": {}, "environment": {}, "results": [], **edit}))
    with pytest.raises(BadInputError, match=re.escape(field)):
        load_baseline(base)
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", *FAST, "--baseline", str(base)])
    _clean_error(r, 2, field)


def test_baseline_rows_with_zero_or_nan_p50_are_left_out_with_a_note():
    cur = _report([_row("torch", 30.0), _row("ort-cpu", 10.0), _row("ort-cpu", 20.0, batch=8)])
    zero, nan = _row("torch", 30.0), _row("ort-cpu", 10.0)
    object.__setattr__(zero.stats, "p50", 0.0)
    object.__setattr__(nan.stats, "p50", float("nan"))
    base = _report([zero, nan, _row("ort-cpu", 20.0, batch=8)])
    result = compare(cur, base, 1.10)
    assert [c.label() for c in result.compared] == ["ort-cpu fp32 b8 e2e"]
    assert result.passed and all(math.isfinite(c.ratio) for c in result.compared)
    notes = " | ".join(result.notes)
    assert "torch fp32 b1 e2e: not compared" in notes and "p50 is 0.0 ms" in notes
    assert "ort-cpu fp32 b1 e2e: not compared" in notes and "nan" in notes
    assert "inf" not in " ".join(result.lines())
    # nothing usable at all: bad input naming why, not a regression of x inf
    with pytest.raises(BadInputError, match="no usable measurement"):
        compare(_report([_row("torch", 30.0)]), _report([zero]), 1.10)


# 2. exit codes ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what,needle", [("cyclic", "cycle"), ("custom", "acme"), ("int64", "int64")])
def test_graphs_no_runtime_would_run_are_bad_input(cli_runner, models, what, needle):
    r = invoke(cli_runner, ["bench", str(models[what]), *FAST, "--no-progress"])  # every backend, torch included
    _clean_error(r, 2, needle)


@pytest.mark.parametrize("value,needle", [("1e12", "1e12"), ("1000000000000", "--iters 1000000000000")])
def test_huge_iteration_counts_are_bad_input(cli_runner, models, value, needle):
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", "--iters", value])
    _clean_error(r, 2, needle)


def test_nothing_can_run_is_exit_2_as_in_verify(cli_runner, models):
    # an fp32 file at int8 on ORT needs a quantized model: skipped, here and on every machine
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", "--precision", "int8", *FAST])
    _clean_error(r, 2, "none of the requested backends can run here")
    assert "quantized model" in r.stderr


# 3. bounded time ---------------------------------------------------------------------------------------------------


def test_timeout_stops_a_measurement_that_never_ends(cli_runner, models, tmp_path):
    j = tmp_path / "r.json"
    t0 = time.perf_counter()
    r = invoke(cli_runner, ["bench", str(models["hang"]), "--backends", "ort-cpu", "--batch", "1,2", *FAST, "--timeout", "4", "--json", str(j)])
    took = time.perf_counter() - t0
    _clean_error(r, 1, "measurement(s) failed: ort-cpu")
    assert took < 60, took  # the subprocess and the 4 s, not 1e12 loop steps (and batch 2 is not tried)
    assert "ort-cpu fp32 batch 1: failed: timed out: ort-cpu fp32 b1 did not finish within 4 s" in r.stdout
    rows = json.loads(j.read_text())["results"]
    assert [(x["batch"], x["status"]) for x in rows] == [(1, "failed"), (2, "failed")]
    assert "not run: it timed out at batch 1" in rows[1]["reason"]


def test_max_time_alone_bounds_a_single_call(cli_runner, models, monkeypatch):
    import deployinc.bench.harness as H

    monkeypatch.setattr(H, "IMPLIED_TIMEOUT_MIN_S", 3.0)  # max(10 x 0.1 s, 3 s) instead of the 60 s floor
    r = invoke(cli_runner, ["bench", str(models["hang"]), "--backends", "ort-cpu", *FAST, "--max-time", "0.1"])
    _clean_error(r, 1, "measurement(s) failed: ort-cpu")
    assert "did not finish within 3 s" in r.stdout and "--max-time 0.1 implies" in r.stdout


def test_timeout_runs_ort_in_its_own_process_and_still_reports(cli_runner, models, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", "--warmup", "1", "--iters", "10", "--rounds", "2",
                            "--threads", "2", "--timeout", "120", "--json", str(j)])  # fmt: skip
    assert r.exit_code == 0, r.output
    (row,) = [x for x in json.loads(j.read_text())["results"] if x["status"] == "ok"]
    assert len(row["samples_ms"]) == 10 and len(row["stretch_p50_ms"]) == 2 and row["activate_s"] > 0
    assert any("own process" in n for n in row["notes"])


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_bad_timeout_is_bad_input(cli_runner, models, value):
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", *FAST, "--timeout", value])
    _clean_error(r, 2, "--timeout")


# 4. the table at 80 columns ----------------------------------------------------------------------------------------------


def _wide_report():
    rows = [_row("torch", 12345.678, batch=256), _row("torch-compile", 9876.543, batch=256), _row("ort-cpu", 7.891, batch=256)]
    rows[1].cuda_graph = True
    for r in rows:
        r.activate_s, r.first_call_s = 123.45, 6.78
    return _report(rows, name="resnet50")


def test_table_shows_every_number_whole_at_80_columns():
    from rich.console import Console

    rep = _wide_report()
    for width in (80, 100, 200):
        buf = io.StringIO()
        rep.render(Console(file=buf, width=width, force_terminal=False, color_system=None))
        text = buf.getvalue()
        assert "…" not in text, text
        assert max(len(line) for line in text.splitlines()) <= width, text
        for r in rep.ok_rows():
            assert f"{r.speedup:.2f}x" in text and f"{r.stats.p50:.2f}" in text and f"{r.stats.throughput:.1f}" in text, text
    assert f"{12345.678 / 7.891:.2f}x" in text  # the longest speedup, whole


def test_cli_table_at_80_columns_in_process(models, monkeypatch, tmp_path):
    import logging

    from click.testing import CliRunner

    import deployinc.isolate
    from deployinc.cli.main import cli

    def no_subprocess(*a, **k):  # the default path stays in this process
        raise AssertionError("call_isolated was used without --timeout or --max-time")

    monkeypatch.setattr(deployinc.isolate, "call_isolated", no_subprocess)
    j = tmp_path / "r.json"
    r = CliRunner().invoke(  # rich takes its width from COLUMNS (click 8.5 has no terminal_width)
        cli,
        ["bench", "--trust-model-code", str(models["tiny"]), "--backends", "torch,torch-fused,ort-cpu", *FAST, "--json", str(j)],
        env={"TTY_COMPATIBLE": "1", "COLUMNS": "80", "NO_COLOR": "1"},
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    out = ANSI.sub("", r.stdout)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) <= 80, out
    assert "…" not in out, out
    for x in json.loads(j.read_text())["results"]:
        if x["status"] == "ok":
            assert f"{x['speedup']:.2f}x" in out and f"{x['stats']['p50']:.2f}" in out, out
    assert "eta " in ANSI.sub("", r.stderr)  # the rich progress bar shows an ETA (item 9)
    # 8: torch's "No CUDA runtime is found" warning is filtered wherever eager torch runs
    assert any(type(f).__name__ == "_NoCudaRuntimeFilter" for f in logging.getLogger("torch.utils.cpp_extension").filters)


# 5. the file's precision ------------------------------------------------------------------------------------------------


def test_fp16_file_is_benched_at_fp16_against_eager_fp32(cli_runner, models, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(models["fp16"]), "--backends", "torch,ort-cpu", *FAST, "--json", str(j)])
    assert r.exit_code == 0, r.output
    data = json.loads(j.read_text())
    ok = {(x["backend"], x["precision"]) for x in data["results"] if x["status"] == "ok"}
    assert ok == {("torch", "fp32"), ("ort-cpu", "fp16")}, data["results"]
    ort = next(x for x in data["results"] if x["backend"] == "ort-cpu")
    assert ort["speedup_vs"] == "torch fp32 b1 e2e" and ort["speedup"] > 0
    assert data["config"]["precisions"] == ["fp16"] and "the file's" in data["config"]["precision_source"]
    assert "skipped" not in r.output


def test_int8_file_is_benched_at_int8(cli_runner, models, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", str(models["int8"]), "--backends", "ort-cpu", *FAST, "--json", str(j)])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(j.read_text())["results"]
    assert (row["backend"], row["precision"], row["status"]) == ("ort-cpu", "int8", "ok")


def test_explicit_precision_a_file_cannot_run_is_bad_input(cli_runner, models):
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(models["fp16"]), "--backends", "ort-cpu", "--precision", "fp32", *FAST])
    _clean_error(r, 2, "computes in fp16")
    assert "drop --precision" in r.stderr


# 6. unsteady in JSON and CSV ------------------------------------------------------------------------------------------


def test_unsteady_flag_and_reason_in_json_and_csv():
    steady, shifted = _row("torch", 45.0), _row("ort-cpu", 16.0)
    steady.stretch_p50_ms, shifted.stretch_p50_ms = [45.0, 46.0, 44.5], [14.7, 14.8, 18.1]
    rep = _report([steady, shifted, BenchRow("ort-cuda", "fp32", None, None, "skipped", reason="no GPU")])
    rows = json.loads(rep.to_json())["results"]
    assert [x["unsteady"] for x in rows] == [False, True, False]
    assert rows[0]["unsteady_reason"] is None and "14.7-18.1 ms" in rows[1]["unsteady_reason"] and "23% apart" in rows[1]["unsteady_reason"]
    import csv

    table = list(csv.DictReader(io.StringIO(rep.to_csv())))
    assert [t["unsteady"] for t in table] == ["0", "1", ""]
    assert "23% apart" in table[1]["unsteady_reason"] and table[0]["unsteady_reason"] == ""
    back = BenchReport.from_dict(json.loads(rep.to_json()))  # derived keys are not read back as fields
    assert back.rows[1].unsteady() is not None


# 7. --reference ---------------------------------------------------------------------------------------------------------


def test_reference_gives_a_foreign_file_its_torch_rows(cli_runner, models, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--reference", "tinynets:build", "--backends", "torch,torch-fused,ort-cpu", *FAST, "--json", str(j)])
    assert r.exit_code == 0, r.output
    data = json.loads(j.read_text())
    assert {x["backend"] for x in data["results"] if x["status"] == "ok"} == {"torch", "torch-fused", "ort-cpu"}
    assert data["model"]["reference"]["spec"] == "tinynets:build"


def test_no_provenance_hint_is_generic(cli_runner, models, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "torch,ort-cpu", *FAST, "--json", str(j)])
    assert r.exit_code == 0, r.output
    torch_row = next(x for x in json.loads(j.read_text())["results"] if x["backend"] == "torch")
    assert "--reference package.module:function or a model name" in torch_row["reason"] and "--weights" in torch_row["reason"]
    assert "bench googlenet" not in r.output


# 8. torch's stray log line, and skip lines once --------------------------------------------------------------------------


def test_cpp_extension_warning_is_filtered(tmp_path):
    """torch.compile's inductor imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" where a
    CUDA toolkit is found (CUDA_HOME, an nvcc on the PATH) but no GPU: bench drops that one message."""
    env = {**__import__("os").environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}  # a toolkit, no GPU
    run = lambda code: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)  # noqa: E731
    imp = "import torch.utils.cpp_extension as c; print('home', c.CUDA_HOME)"
    control = run("import torch; " + imp)
    assert "No CUDA runtime is found" in control.stderr, control.stderr  # the warning this test is about
    out = run("from deployinc.bench.harness import quiet_torch_logs; import torch; quiet_torch_logs(); " + imp)
    assert out.returncode == 0, out.stderr
    assert "home" in out.stdout and "No CUDA runtime" not in out.stderr, out.stderr


def test_skip_lines_appear_once_after_the_table(cli_runner, models):
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(models["tiny"]), "--backends", "torch,ort-cpu", "--precision", "int8", *FAST])
    assert r.exit_code == 0, r.output  # eager torch at fp32 (it has no int8 path), ORT skipped
    assert r.output.count("needs a quantized model") == 1, r.output
    assert r.stdout.index("needs a quantized model") > r.stdout.index("vs eager")


# 9. progress ------------------------------------------------------------------------------------------------------------


def test_progress_lines_with_eta_when_piped(cli_runner, models):
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", "--batch", "1,2", *FAST])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("progress: ")]
    assert lines and lines[-1].startswith("progress: 2/2 ") and "eta 0:00:00" in lines[-1], r.stderr
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", *FAST, "--no-progress"])
    assert "progress:" not in r.stderr


# 10. --inputs -------------------------------------------------------------------------------------------------------------


def test_inputs_file_is_what_is_benched(cli_runner, models, tmp_path):
    from deployinc.bench.subject import open_onnx

    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    f = tmp_path / "in.npz"
    np.savez(f, input=x)
    m = open_onnx(models["bare"])
    m.use_inputs(f)
    np.testing.assert_array_equal(m.inputs(2), x[:2])
    np.testing.assert_array_equal(m.inputs(5), np.concatenate([x, x[:2]]))
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", "--batch", "2", *FAST, "--inputs", str(f), "--json", str(j)])
    assert r.exit_code == 0, r.output
    assert str(f) in json.loads(j.read_text())["config"]["inputs"]


def test_inputs_of_another_size_are_bad_input(cli_runner, models, tmp_path):
    f = tmp_path / "in.npz"
    np.savez(f, input=np.zeros((2, 3, 32, 32), np.float32))
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", *FAST, "--inputs", str(f)])
    _clean_error(r, 2, "shape [2, 3, 32, 32]")
    np.savez(f, other=np.zeros((2, 3, 16, 16), np.float32))
    r = invoke(cli_runner, ["bench", str(models["bare"]), "--backends", "ort-cpu", *FAST, "--inputs", str(f)])
    _clean_error(r, 2, "no 'input' array")
