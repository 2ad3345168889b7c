"""`deployinc verify` through the CLI: passing files, skipped backends, the JSON report, and every bad input of issue 3.

Tiny models (the conftest's ``tinynets``) exported with deployinc's own pipeline, so their provenance metadata is
the real thing; the BatchNorm-statistics cache goes to a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import invoke

SHAPE = (1, 3, 32, 32)
_EXPORTS: dict[tuple, Path] = {}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "deployinc-cache"))


def export_model(tmp_root: Path, spec: str = "tinynets:build", exporter: str = "torchscript", **kw) -> Path:
    """Export ``spec`` with deployinc's pipeline once per session (cached by arguments)."""
    from deployinc.export import export_pipeline

    key = (str(tmp_root), spec, exporter, tuple(sorted(kw.items())))
    if key not in _EXPORTS:
        name = f"{spec.replace(':', '_').replace('/', '_')}-{exporter}-{len(_EXPORTS)}.onnx"
        out = tmp_root / name
        kw.setdefault("input_shape", SHAPE)
        export_pipeline(spec, out=out, exporter=exporter, threads=2, **kw)
        _EXPORTS[key] = out
    return _EXPORTS[key]


_DIR: list[Path] = []


@pytest.fixture
def exports_dir() -> Path:
    """One folder of exports for every test module that imports this fixture (removed at exit)."""
    if not _DIR:
        import atexit
        import shutil
        import tempfile

        _DIR.append(Path(tempfile.mkdtemp(prefix="deployinc-verify-tests-")))
        atexit.register(shutil.rmtree, _DIR[0], True)
    return _DIR[0]


@pytest.fixture
def tiny(exports_dir, tinynets_dir) -> Path:
    return export_model(exports_dir)


def no_traceback(r) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert [ln.split(":")[0] for ln in lines] == ["error", "hint"], r.stderr


# passing ----------------------------------------------------------------------------------------------------------


def test_verify_from_metadata_passes_at_batch_1_and_8(cli_runner, tiny, tmp_path):
    report = tmp_path / "report.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--json", str(report)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "ort-cpu" in r.stdout and "PASS" in r.stdout
    assert "rebuilt from the file's metadata" in r.stdout
    assert "fp32-cpu" in r.stdout and "max_rel<=" in r.stdout  # tolerance printed next to the verdict
    d = json.loads(report.read_text())
    assert d["verdict"] == "pass" and d["batches"] == [1, 8]
    be = d["backends"][0]
    assert be["backend"] == "ort-cpu" and be["status"] == "ran"
    assert [res["batch"] for res in be["results"]] == [1, 8]
    out = be["results"][1]["outputs"][0]
    for key in ("max_abs", "max_rel", "cosine", "top1", "top5", "nan", "inf", "tolerance", "failures"):
        assert key in out
    env = d["environment"]
    assert env["versions"]["onnxruntime-gpu" if "onnxruntime-gpu" in env["versions"] else "onnxruntime"]
    assert env["threads"]["ort_intra_op"] >= 1 and "torch_intra_op" in env["threads"]
    assert "CPUExecutionProvider" in env["ort_providers"]["available"]
    assert d["inputs"]["source"] == "natural"


def test_dynamo_export_verifies(cli_runner, exports_dir, tinynets_dir):
    path = export_model(exports_dir, exporter="dynamo")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(path), "--localize"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "no layer exceeds its budget" in r.stdout


def test_json_is_not_overwritten_without_force(cli_runner, tiny, tmp_path):
    report = tmp_path / "r.json"
    report.write_text("keep")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--json", str(report)])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert report.read_text() == "keep"
    no_traceback(r)
    assert invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--json", str(report), "--force"]).exit_code == 0
    assert json.loads(report.read_text())["verdict"] == "pass"


def test_unavailable_backends_are_skipped_with_a_reason(cli_runner, tiny, tmp_path):
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--providers", "cpu,cuda,tensorrt", "--json", str(report)])
    d = json.loads(report.read_text())
    skipped = [b["backend"] for b in d["backends"] if b["status"] == "skipped"]
    # named backends that could not run never end in a plain PASS: exit 3 and verdict "incomplete"
    assert r.exit_code == (3 if skipped else 0), r.stdout + r.stderr
    assert d["verdict"] == ("incomplete" if skipped else "pass") and d["skipped"] == skipped
    if skipped:
        assert "INCOMPLETE" in r.stdout and "--allow-skip" in r.stderr
        again = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--providers", "cpu,cuda,tensorrt", "--allow-skip"])
        assert again.exit_code == 0, again.stdout + again.stderr
    by = {b["backend"]: b for b in d["backends"]}
    assert set(by) == {"ort-cpu", "ort-cuda", "ort-trt"}
    for name in ("ort-cuda", "ort-trt"):
        if by[name]["status"] == "skipped":  # no GPU here: never silently dropped, never a crash
            assert by[name]["reason"] and name in r.stdout and "skipped" in r.stdout
        else:
            assert by[name]["status"] == "ran"


def test_only_unavailable_backends_is_an_error(cli_runner, tiny):
    from deployinc.runners.ort import cuda_driver_problem

    if cuda_driver_problem() is None:
        pytest.skip("a CUDA device is usable here")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--providers", "cuda"])
    assert r.exit_code == 2 and "none of the requested backends can run here" in r.stderr
    no_traceback(r)


def test_images_from_a_data_folder(cli_runner, tiny, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--data", str(tmp_path), "--json", str(report)])
    assert r.exit_code == 0, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["inputs"]["source"] == "data" and d["inputs"]["used"] == 3 and len(d["inputs"]["skipped"]) == 1
    assert d["inputs"]["samples_run"] >= 8  # three images fill a batch of 8


def test_noise_only_on_request(cli_runner, tiny, tmp_path):
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--inputs", "uniform", "--batch", "2", "--json", str(report)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert json.loads(report.read_text())["inputs"]["source"] == "uniform"


def test_tolerance_flags_override_and_are_printed(cli_runner, tiny):
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--max-rel", "1e-12", "--no-localize"])
    assert r.exit_code == 1
    assert "+flags" in r.stdout and "max_rel<=1e-12" in r.stdout
    assert "max_rel" in r.stderr and "> 1e-12" in r.stderr  # the failing metric is named
    no_traceback(r)


def test_reference_spec_and_weights_for_a_file_without_metadata(cli_runner, exports_dir, tinynets_dir, tmp_path):
    import importlib

    import torch

    net = importlib.import_module("tinynets").build()
    for m in net.modules():  # "trained" statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(net.state_dict(), ckpt)
    path = export_model(exports_dir, weights=str(ckpt))
    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(bare, str(plain))
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(plain), "--reference", "tinynets:build", "--weights", str(ckpt)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "from --reference" in r.stdout
    # Other weights: parity fails, exit 1.
    torch.manual_seed(5)
    torch.save(importlib.import_module("tinynets").build().state_dict(), tmp_path / "other.pt")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(plain), "--reference", "tinynets:build", "--weights", str(tmp_path / "other.pt"), "--no-localize"])
    assert r.exit_code == 1 and "parity failed" in r.stderr


def test_against_another_onnx_file(cli_runner, exports_dir, tinynets_dir):
    a = export_model(exports_dir, exporter="torchscript")
    b = export_model(exports_dir, exporter="dynamo")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(b), "--against", str(a)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "ONNX Runtime CPU (fp32 reference)" in r.stdout


def test_against_needs_no_torch(exports_dir, tinynets_dir):
    a = export_model(exports_dir)
    code = (
        "import sys\nfrom deployinc.verify.core import verify\n"
        f"r = verify({str(a)!r}, against={str(a)!r})\nprint('PASSED', r.passed, 'TORCH', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "PASSED True TORCH False" in out


def test_static_batch_runs_at_its_size(cli_runner, exports_dir, tinynets_dir, tmp_path):
    path = export_model(exports_dir, dynamic_batch=False)
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(path), "--json", str(report), "--localize"])
    assert r.exit_code == 0, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["batches"] == [1] and d["localization"]["samples"] == 1
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(path), "--batch", "1,8"])
    assert r.exit_code == 2 and "static batch" in r.stderr and "[1, 3, 32, 32]" in r.stderr
    no_traceback(r)


# bad input ---------------------------------------------------------------------------------------------------------


def test_file_without_metadata_names_both_ways_forward(cli_runner, tiny, tmp_path):
    m = onnx.load(str(tiny))
    del m.metadata_props[:]
    p = tmp_path / "bare.onnx"
    onnx.save(m, str(p))
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(p)])
    assert r.exit_code == 2
    assert "no deployinc provenance metadata" in r.stderr
    assert "--reference" in r.stderr and "--against" in r.stderr
    no_traceback(r)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "missing", "directory"])
def test_not_an_onnx_file(cli_runner, tiny, tmp_path, kind):
    p = tmp_path / "m.onnx"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a model\n" * 20)
    elif kind == "truncated":
        data = tiny.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "directory":
        p.mkdir()
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(p)])
    assert r.exit_code == 2, r.stdout + r.stderr
    assert str(p.name) in r.stderr
    no_traceback(r)


@pytest.mark.parametrize("content", ["nothing", "unreadable", "missing"])
def test_data_folder_without_readable_images(cli_runner, tiny, tmp_path, content):
    d = tmp_path / "imgs"
    if content != "missing":
        d.mkdir()
    if content == "unreadable":
        (d / "a.jpg").write_bytes(b"garbage")
        (d / "b.png").write_bytes(b"")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--data", str(d)])
    assert r.exit_code == 2
    assert "imgs" in r.stderr
    no_traceback(r)


def test_input_shape_the_model_does_not_accept(cli_runner, tiny):
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--input-shape", "1,3,64,64"])
    assert r.exit_code == 2
    assert "[1, 3, 64, 64]" in r.stderr and "[batch, 3, 32, 32]" in r.stderr  # actual and expected
    no_traceback(r)


@pytest.mark.parametrize(
    ("array", "expect"),
    [
        (np.zeros((2, 3, 32, 32), np.int64), ["int64", "float32"]),
        (np.zeros((2, 3, 16, 16), np.float32), ["[2, 3, 16, 16]", "[batch, 3, 32, 32]"]),
        (np.zeros((32, 32), np.float32), ["[32, 32]", "[batch, 3, 32, 32]"]),
    ],
)
def test_input_array_the_model_does_not_accept(cli_runner, tiny, tmp_path, array, expect):
    f = tmp_path / "x.npy"
    np.save(f, array)
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--inputs", str(f)])
    assert r.exit_code == 2, r.stdout + r.stderr
    for e in expect:
        assert e in r.stderr
    no_traceback(r)


def test_unknown_provider_lists_the_available_ones(cli_runner, tiny):
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--providers", "cpu,gpu"])
    assert r.exit_code == 2
    assert "unknown backend 'gpu' in --providers (did you mean 'cuda'?)" in r.stderr
    for name in ("cpu", "cuda", "tensorrt"):
        assert name in r.stderr.split("hint:")[1]
    no_traceback(r)


@pytest.mark.parametrize(
    "args",
    [
        ["--batch", "0"],
        ["--batch", "a,b"],
        ["--samples", "0"],
        ["--inputs", "pink"],
        ["--mean", "0.5,x"],
        ["--std", "0,0,0"],
        ["--against", "nope.onnx", "--reference", "tinynets:build"],
    ],
)
def test_bad_flags(cli_runner, tiny, args):
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), *args])
    assert r.exit_code == 2, r.stdout + r.stderr
    no_traceback(r)


def test_non_finite_outputs_are_counted_and_the_json_stays_strict(cli_runner, tiny, tmp_path):
    from onnx import numpy_helper

    m = onnx.load(str(tiny))
    t = next(t for t in m.graph.initializer if t.name == "pw.weight")
    a = numpy_helper.to_array(t).copy()
    a[0] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    bad = tmp_path / "nan.onnx"
    onnx.save(m, str(bad))
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(bad), "--json", str(report)])
    assert r.exit_code == 1
    assert "NaN" in r.stderr

    def refuse(c):
        raise ValueError(c)

    d = json.loads(report.read_text(), parse_constant=refuse)  # no bare NaN/Infinity in the file
    out = d["backends"][0]["results"][0]["outputs"][0]
    assert out["nan"] > 0 and out["max_abs"] == "inf"
    assert d["localization"]["first"]["module"] == "pw"


# a reference whose output depends on the batch (issue 22) ------------------------------------------------------------


BATCH_STATS_NET = """
from torch import nn


def batch_stats():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, track_running_stats=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
"""


def test_a_batch_dependent_reference_is_named_not_called_a_parity_failure(cli_runner, tmp_path, monkeypatch):
    """BatchNorm with track_running_stats=False normalises with each batch's statistics even in eval mode: the file
    computes the same, but the reference (run at batch 8) cannot match batch 1. verify says why (exit 2), not FAIL."""
    import torch

    (tmp_path / "batchstats22.py").write_text(BATCH_STATS_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import batchstats22

    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    torch.save(batchstats22.batch_stats().state_dict(), ckpt)
    out = tmp_path / "m.onnx"
    r = invoke(cli_runner, ["export", "batchstats22:batch_stats", "--weights", str(ckpt), "--input-shape", "1,3,16,16", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    assert "warning: BatchNorm 1 has no running statistics (track_running_stats=False)" in r.stderr
    r = invoke(cli_runner, ["verify", str(out), "--reference", "batchstats22:batch_stats", "--weights", str(ckpt), "--batch", "1,8"])
    assert r.exit_code == 2, r.stdout + r.stderr
    no_traceback(r)
    assert "error: batch-dependent reference" in r.stderr and "image 0 alone vs in a batch of 8" in r.stderr
    assert "FAIL" not in r.stdout
    # at one batch size the comparison is meaningful, and passes
    r = invoke(cli_runner, ["verify", str(out), "--reference", "batchstats22:batch_stats", "--weights", str(ckpt), "--batch", "8"])
    assert r.exit_code == 0, r.stdout + r.stderr
