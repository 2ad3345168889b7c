"""``deployinc bench`` end to end on a tiny model: reports, skips with reasons, bad input, the regression gate.

Few iterations and no timing assertions: speed is measured by scripts/, not tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke

FAST = ["--warmup", "1", "--iters", "3", "--threads", "2"]


@pytest.fixture(scope="module")
def tiny_onnx(tinynets_dir, tmp_path_factory) -> dict[str, Path]:
    """A dynamic-batch and a static-batch export of tinynets:build (32x32), and a copy without provenance."""
    import onnx

    from deployinc.export import export_pipeline

    d = tmp_path_factory.mktemp("bench")
    out = {}
    for key, dyn in (("dynamic", True), ("static", False)):
        p = d / f"tiny-{key}.onnx"
        export_pipeline("tinynets:build", out=p, exporter="torchscript", input_shape=(1, 3, 32, 32), num_classes=10,
                        dynamic_batch=dyn, threads=2, quick_check=False)
        out[key] = p
    m = onnx.load(str(out["dynamic"]))
    del m.metadata_props[:]
    bare = d / "bare.onnx"
    onnx.save(m, str(bare))
    out["bare"] = bare
    return out


def test_bench_all_backends_reports_and_skips(cli_runner, tiny_onnx, tmp_path):
    j, c, md, png = (tmp_path / f"r.{e}" for e in ("json", "csv", "md", "png"))
    args = ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "torch,torch-fused,ort-cpu,ort-cuda,ort-trt,trt-engine",
            "--batch", "1,2", "--rounds", "2", *FAST, "--json", str(j), "--csv", str(c), "--md", str(md)]  # fmt: skip
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(png)]
    except ImportError:
        png = None
    r = invoke(cli_runner, args)
    assert r.exit_code == 0, r.output
    assert "vs eager" in r.stdout
    data = json.loads(j.read_text())
    ok = {(x["backend"], x["batch"], x["mode"]) for x in data["results"] if x["status"] == "ok"}
    for b in ("torch", "torch-fused", "ort-cpu"):
        assert {(b, 1, "e2e"), (b, 2, "e2e")} <= ok
    row = next(x for x in data["results"] if x["backend"] == "ort-cpu" and x["batch"] == 2)
    assert len(row["samples_ms"]) == 3 and row["stats"]["iters"] == 3
    assert row["speedup"] > 0 and row["speedup_vs"] == "torch fp32 b2 e2e"
    row1 = next(x for x in data["results"] if x["backend"] == "ort-cpu" and x["batch"] == 1)
    # session creation is paid once (batch 1 built it); the first call is timed at every batch size
    assert row1["activate_s"] > 0 and row["activate_s"] is None and row["first_call_s"] > 0
    assert data["config"]["threads"] == 2 and data["environment"]["threads"]["torch_intra_op"] == 2
    env = data["environment"]
    assert env["cpu_bench"]["model"] and "versions" in env
    # Without a GPU the GPU backends are skipped, each with its reason, never run on the CPU under their name.
    import torch

    if not torch.cuda.is_available():
        skipped = {x["backend"]: x["reason"] for x in data["results"] if x["status"] == "skipped"}
        assert {"ort-cuda", "ort-trt", "trt-engine"} <= set(skipped), skipped
        assert all(reason for reason in skipped.values())
        assert "ort-cuda" in r.stdout and "skipped" in r.stdout
    assert c.read_text().count("\n") == len(data["results"]) + 1
    assert "| ort-cpu | fp32 | 2 | e2e |" in md.read_text()
    if png is not None:
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_each_row_records_the_p50_of_each_round(cli_runner, tiny_onnx, tmp_path):
    j = tmp_path / "r.json"
    args = ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "ort-cpu", "--warmup", "1", "--iters", "10", "--rounds", "2",
            "--threads", "2", "--json", str(j), "--machine-probes"]  # fmt: skip
    r = invoke(cli_runner, args)
    assert r.exit_code == 0, r.output
    (row,) = [x for x in json.loads(j.read_text())["results"] if x["status"] == "ok"]
    samples = row["samples_ms"]
    assert len(samples) == 10
    # stretches follow the samples in time order: round 1 is the first five, round 2 the last five
    assert row["stretch_p50_ms"] == pytest.approx([float(np.median(samples[:5])), float(np.median(samples[5:]))], rel=1e-5)
    # with two threads the CPUs' round trip is probed before and after the run (this machine has two CPUs)
    # (a probe that cannot finish on a heavily loaded machine records None, never a wrong number or a failed run)
    link = json.loads(j.read_text())["config"]["cpu_round_trip_ns"]
    assert set(link) == {"before", "after"}
    assert all(v is None or v > 0 for v in link.values())
    # without --machine-probes a user's benchmark forks nothing and samples no other process
    r = invoke(cli_runner, [a for a in args if a != "--machine-probes"] + ["--force"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(j.read_text())["config"]
    assert "cpu_round_trip_ns" not in cfg and "other_cpu_use" not in cfg


def test_bench_without_provenance_skips_torch_with_reason(cli_runner, tiny_onnx, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["bare"]), "--backends", "torch,ort-cpu", *FAST, "--json", str(j)])
    assert r.exit_code == 0, r.output
    data = json.loads(j.read_text())
    torch_row = next(x for x in data["results"] if x["backend"] == "torch")
    assert torch_row["status"] == "skipped" and "provenance" in torch_row["reason"]
    assert any(x["backend"] == "ort-cpu" and x["status"] == "ok" for x in data["results"])


def _one_line_error(r, needle: str) -> None:
    assert r.exit_code == 2, r.output
    err = r.stderr.strip().splitlines()
    assert err[0].startswith("error: ") and needle in err[0], err
    assert err[-1].startswith("hint: ")
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "extra,needle,hint",
    [
        (["--backends", "torch,ort-gpu"], "unknown backend 'ort-gpu'", "known: torch, torch-cuda, torch-fused"),
        (["--iters", "0"], "--iters 0", ""),
        (["--warmup", "0"], "--warmup 0", ""),
        (["--warmup", "-2"], "--warmup -2", ""),
        (["--batch", "0"], "--batch", ""),
        (["--precision", "fp8"], "unknown precision 'fp8'", "fp32"),
        (["--threads", "0"], "--threads 0", ""),
        (["--max-slowdown", "1.2"], "--max-slowdown needs --baseline", ""),
    ],
)
def test_bad_input_exit_2(cli_runner, tiny_onnx, extra, needle, hint):
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "ort-cpu", *FAST, *extra])
    _one_line_error(r, needle)
    assert hint in r.stderr


def test_static_model_rejects_other_batch(cli_runner, tiny_onnx):
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["static"]), "--backends", "ort-cpu", "--batch", "1,8", *FAST])
    _one_line_error(r, "batch size 8")
    assert "--batch 1" in r.stderr


def test_missing_model_file(cli_runner, tmp_path):
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tmp_path / "nope.onnx"), *FAST])
    _one_line_error(r, "does not exist")


def test_no_overwrite_without_force(cli_runner, tiny_onnx, tmp_path):
    j = tmp_path / "r.json"
    j.write_text("keep")
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "ort-cpu", *FAST, "--json", str(j)])
    _one_line_error(r, "exists")
    assert j.read_text() == "keep"


def test_baseline_gate(cli_runner, tiny_onnx, tmp_path):
    base = tmp_path / "base.json"
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "torch,ort-cpu", *FAST, "--json", str(base)])
    assert r.exit_code == 0, r.output
    data = json.loads(base.read_text())

    # A baseline far slower than anything: no regression, exit 0.
    slow = tmp_path / "slow.json"
    for x in data["results"]:
        if x["status"] == "ok":
            x["stats"]["p50"] = 1e6
    slow.write_text(json.dumps(data))
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "torch,ort-cpu", *FAST, "--baseline", str(slow)])
    assert r.exit_code == 0, r.output
    assert "no regression" in r.stdout

    # A baseline impossibly fast for ort-cpu only: exit 1 naming ort-cpu and not torch.
    fast = tmp_path / "fast.json"
    for x in data["results"]:
        if x["status"] == "ok" and x["backend"] == "ort-cpu":
            x["stats"]["p50"] = 1e-9
    fast.write_text(json.dumps(data))
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "torch,ort-cpu", *FAST, "--baseline", str(fast), "--max-slowdown", "1.10"])
    assert r.exit_code == 1, r.output
    err = r.stderr.strip().splitlines()
    assert err[-2].startswith("error: slower than baseline") and "ort-cpu" in err[-2] and "torch," not in err[-2]

    # A baseline of another model: exit 2 before anything runs.
    other = tmp_path / "other.json"
    data["model"]["name"] = "resnet50"
    other.write_text(json.dumps(data))
    r = invoke(cli_runner, ["bench", "--trust-model-code", str(tiny_onnx["dynamic"]), "--backends", "ort-cpu", *FAST, "--baseline", str(other)])
    _one_line_error(r, "is a report on resnet50")


def test_cli_module_does_not_import_torch():
    code = "import sys; import deployinc.cli.bench; from deployinc.cli.main import cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bench_by_name_exports_to_a_temporary_folder(cli_runner, tinynets_dir, tmp_path):
    j = tmp_path / "r.json"
    r = invoke(cli_runner, ["bench", "--trust-model-code", "tinynets:build", "--backends", "ort-cpu", *FAST, "--json", str(j)])
    assert r.exit_code == 0, r.output
    data = json.loads(j.read_text())
    assert data["model"]["exported_from"] == "tinynets:build" and data["model"]["path"] is None
    assert any(x["backend"] == "ort-cpu" and x["status"] == "ok" for x in data["results"])
