"""The ort-openvino backend (ONNX Runtime's OpenVINO execution provider plugin), bf16 as a compute precision, and
the availability probe (deployinc.backends: each record's problem)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deployinc.backends import ALIASES, BACKENDS, GPU_BACKENDS, ONNX_BACKENDS, canonical, parse_backends
from deployinc.errors import BackendUnavailable, BadInputError
from deployinc.backends import backend_problem, bf16_native

from tests.conftest import invoke

#: Why the plugin cannot run here (not installed; on an AMD CPU it offers no device: it lists Intel hardware only).
OV_PROBLEM = backend_problem("ort-openvino")
HAVE_OV = OV_PROBLEM is None
needs_ov = pytest.mark.skipif(not HAVE_OV, reason=f"the OpenVINO plugin cannot run here: {OV_PROBLEM}")
needs_bf16 = pytest.mark.skipif(not (HAVE_OV and bf16_native()), reason=f"needs a CPU with AMX-BF16 or AVX512-BF16 and the OpenVINO plugin ({OV_PROBLEM or 'runs'})")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory):
    """inception_cifar (3x32x32, dynamic batch) exported with deployinc's provenance, once for this module."""
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("ov") / "inception_cifar.onnx"
    export_pipeline("inception_cifar", out=out, threads=2)
    return out


def _inputs(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)


# names -------------------------------------------------------------------------------------------------------------


def test_the_name_and_its_aliases():
    assert "ort-openvino" in BACKENDS and "ort-openvino" in ONNX_BACKENDS and "ort-openvino" not in GPU_BACKENDS
    assert canonical("openvino-ep") == canonical("ORT-OV") == canonical("ort-openvino") == "ort-openvino"
    assert ALIASES["ort-ov"] == "ort-openvino" and canonical("openvino") == "openvino"  # the name is the OpenVINO runtime's
    from deployinc.cli.bench import parse_bench_backends
    from deployinc.cli.main import backend_names, provider_names
    from deployinc.verify.backends import parse_providers

    assert parse_providers("cpu,openvino-ep") == ["ort-cpu", "ort-openvino"]
    assert parse_bench_backends("ort-ov,ort-openvino") == ["ort-openvino"]
    assert parse_backends("openvino-ep") == ["ort-openvino"]
    assert {"openvino-ep", "ort-ov", "ort-openvino"} <= set(provider_names()) and "ort-openvino" in backend_names()


def test_check_target_accepts_the_backend_names(cli_runner, tmp_path):
    from deployinc.backends import check_target
    from deployinc.trt.check import check_model, resolve_target

    assert resolve_target(check_target("ort-ov")) == resolve_target(check_target("ort-openvino")) == "ort-openvino"
    assert check_target("openvino") == "openvino"  # the runtime itself is asked (backends/openvino.check), not a table
    assert resolve_target(check_target("cpu")) == "ort-cpu"
    import onnx.helper as h

    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    model = h.make_model(h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g", [x], [y]), opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    report = check_model(model, "ort-openvino")
    assert report.compatible and any("OpenVINO" in n for n in report.notes)
    p = tmp_path / "relu.onnx"
    onnx.save(model, p)
    assert invoke(cli_runner, ["check", str(p), "--target", "ort-openvino"]).exit_code == 0


# the availability probe ---------------------------------------------------------------------------------------------


def test_backend_problem_answers_for_every_name():
    for name in BACKENDS:
        got = backend_problem(name)
        assert got is None or (isinstance(got, str) and got and "\n" not in got), (name, got)
    assert backend_problem("ort-cpu") is None
    assert backend_problem("openvino-ep") == backend_problem("ort-openvino")
    assert (backend_problem("ort-openvino") is None) == HAVE_OV
    with pytest.raises(BadInputError, match="unknown backend"):
        backend_problem("vulkan")


def test_backend_problem_names_a_missing_plugin(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime_ep_openvino" else real(name, *a))
    assert backend_problem("ort-openvino") == "onnxruntime-ep-openvino is not installed"


def test_backend_problem_is_cheap():
    """No torch, no session: the probe imports onnxruntime at most."""
    code = (
        "import sys\n"
        "from deployinc.backends import backend_problem, bf16_native\n"
        "from deployinc.backends import BACKENDS\n"
        "print([backend_problem(b) for b in BACKENDS], bf16_native())\n"
        "print('HEAVY', sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_bf16_native_reads_the_cpu_flags(monkeypatch):
    from deployinc.core import env

    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    assert bf16_native()
    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert bf16_native()
    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert not bf16_native()
    monkeypatch.setattr(env, "cpu_flags", lambda: set())
    assert not bf16_native()


# the runner ---------------------------------------------------------------------------------------------------------


def test_a_missing_plugin_is_backend_unavailable(monkeypatch, small_onnx):
    from deployinc.runners.ort import OrtRunner
    from deployinc.verify.backends import open_backend

    monkeypatch.setitem(sys.modules, "onnxruntime_ep_openvino", None)  # import fails as for a package not installed
    with pytest.raises(BackendUnavailable, match="onnxruntime-ep-openvino is not installed") as e:
        OrtRunner(str(small_onnx), "openvino").activate()
    assert e.value.hint == "pip install 'deployinc[openvino-ep]'"
    o = open_backend("ort-openvino", onnx_path=small_onnx, onnx_bytes=None, reference=None, precision="fp32", threads=1,
                     batches=[1], static_batch=False)  # fmt: skip
    assert o.skipped and "not installed" in o.reason and "deployinc[openvino-ep]" in o.hint


@needs_ov
def test_registering_twice_is_harmless():
    import onnxruntime as ort

    from deployinc.runners import openvino

    first = openvino.register(ort)
    assert first and openvino.register(ort)
    assert openvino.cpu_device(ort).ep_name == openvino.EP_NAME


@needs_ov
def test_runner_fp32_matches_ort_cpu(small_onnx):
    from deployinc.runners.ort import OrtRunner

    x = _inputs()
    with OrtRunner(str(small_onnx), "cpu", threads=2) as cpu:
        name = cpu.input_names()[0]
        ref = next(iter(cpu.infer({name: x}).values()))
    with OrtRunner(str(small_onnx), "openvino", threads=2, precision="fp32") as ov:
        got = next(iter(ov.infer({name: x}).values()))
        one = next(iter(ov.infer({name: x[:1]}).values()))  # a dynamic batch
        d = ov.describe()
    assert d["backend"] == "ort-openvino" and d["device"] == "cpu" and d["providers_active"][0] == "OpenVINOExecutionProvider"
    assert d["openvino_load_config"] == {"CPU": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}}
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4
    assert one.shape == (1, ref.shape[1])


@needs_bf16
def test_runner_bf16_computes_in_bf16(small_onnx):
    from deployinc.runners.ort import OrtRunner

    x = _inputs()
    with OrtRunner(str(small_onnx), "cpu", threads=2) as cpu:
        name = cpu.input_names()[0]
        ref = next(iter(cpu.infer({name: x}).values()))
    with OrtRunner(str(small_onnx), "openvino", threads=2, precision="bf16") as ov:
        got = next(iter(ov.infer({name: x}).values()))
        assert ov.describe()["openvino_load_config"]["CPU"]["INFERENCE_PRECISION_HINT"] == "bf16"
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert 1e-4 < rel < 5e-2, rel  # bf16's error (an 8-bit mantissa), not fp32's, and not a broken run


@needs_ov
def test_bf16_is_refused_where_the_cpu_cannot_compute_it(monkeypatch, small_onnx):
    from deployinc.runners import openvino
    from deployinc.runners.ort import OrtRunner

    monkeypatch.setattr(openvino, "capabilities", lambda device: ["WINOGRAD", "FP32", "FP16", "INT8"])
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        OrtRunner(str(small_onnx), "openvino", precision="bf16").activate()


# verify -------------------------------------------------------------------------------------------------------------


@needs_ov
def test_verify_fp32_on_openvino(cli_runner, small_onnx, tmp_path):
    out = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", str(small_onnx), "--providers", "ort-openvino", "--batch", "1,4", "--samples", "8", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    text = json.dumps(rep)
    assert "OpenVINOExecutionProvider" in text and '"INFERENCE_PRECISION_HINT": "f32"' in text
    assert "fp32-cpu" in r.stdout


@needs_bf16
def test_verify_bf16_passes_with_the_bf16_preset(cli_runner, small_onnx):
    r = invoke(cli_runner, ["verify", str(small_onnx), "--providers", "ort-openvino", "--precision", "bf16", "--batch", "1,4", "--samples", "16"])
    assert r.exit_code == 0, r.output
    assert "[bf16:" in r.stdout and "PASS" in r.stdout


@needs_bf16
def test_verify_bf16_still_fails_a_planted_fault(cli_runner, small_onnx, tmp_path):
    """The first conv's weights x1.1 (a ~20% error at the logits, cosine ~0.96): bf16's looser budget must not hide it."""
    m = onnx.load(str(small_onnx))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    w = next(i for i in m.graph.initializer if i.name == conv.input[1])
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.1), w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, bad)
    r = invoke(cli_runner, ["verify", str(bad), "--providers", "ort-openvino", "--precision", "bf16", "--batch", "4", "--samples", "16", "--no-localize"])
    assert r.exit_code == 1, r.output
    assert "parity failed" in r.stderr


def test_verify_refuses_bf16_on_another_backend(cli_runner, small_onnx):
    for providers in ("ort-cpu", "ort-openvino,cpu", "torch"):
        r = invoke(cli_runner, ["verify", str(small_onnx), "--providers", providers, "--precision", "bf16"])
        assert r.exit_code == 2, (providers, r.output)
        assert "cannot compute in bf16" in r.stderr and "hint: bf16 runs on ort-openvino" in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_bf16_preset():
    from deployinc.core.metrics import PRECISIONS, preset

    assert "bf16" in PRECISIONS
    tol = preset("bf16", "ort-openvino")
    assert tol.name == "bf16" and tol.min_top1 is not None and tol.min_cosine is not None
    fp16 = preset("fp16")
    assert tol.min_cosine <= fp16.min_cosine  # bf16 has 3 mantissa bits fewer than fp16


# bench --------------------------------------------------------------------------------------------------------------


@needs_bf16
def test_bench_rows_for_openvino(cli_runner, small_onnx, tmp_path):
    out = tmp_path / "b.json"
    r = invoke(cli_runner, ["bench", str(small_onnx), "--backends", "ort-cpu,ort-openvino", "--precisions", "fp32,bf16", "--iters", "3",
                            "--warmup", "1", "--threads", "2", "--no-progress", "--json", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["results"]
    got = {(x["backend"], x["precision"], x["status"]) for x in rows}
    assert {("ort-openvino", "fp32", "ok"), ("ort-openvino", "bf16", "ok"), ("ort-cpu", "fp32", "ok")} <= got, got
    skip = next(x for x in rows if x["backend"] == "ort-cpu" and x["precision"] == "bf16")
    assert skip["status"] == "skipped" and "bf16 runs on ort-openvino" in skip["reason"]


def test_bench_refuses_bf16_without_openvino(cli_runner, small_onnx):
    r = invoke(cli_runner, ["bench", str(small_onnx), "--backends", "torch,ort-cpu", "--precision", "bf16", "--iters", "2"])
    assert r.exit_code == 2, r.output
    assert "cannot compute in bf16" in r.stderr and "hint: bf16 runs on ort-openvino" in r.stderr
