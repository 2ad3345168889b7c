"""Runners behind one interface: ORT CPU runs; CUDA/TensorRT and torch-on-CUDA are unavailable here with a reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deployinc.errors import BackendUnavailable, BadInputError
from deployinc.backends import parse_backends
from deployinc.runners.ort import OrtRunner, cuda_driver_problem
from deployinc.runners.torch_runner import TorchRunner
from deployinc.verify.backends import open_backend, parse_providers

NO_GPU = cuda_driver_problem() is not None


def _relu_model() -> bytes:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_ort_cpu_runs_and_describes_itself():
    r = OrtRunner(_relu_model(), "cpu", threads=1)
    with pytest.raises(RuntimeError, match="before activate"):
        r.infer({"input": np.zeros((1, 3), np.float32)})
    with r:
        out = r.infer({"input": np.array([[-1.0, 0.0, 2.0]], np.float32)})
        assert np.array_equal(out["logits"], [[0.0, 0.0, 2.0]])
        assert r.input_names() == ["input"] and r.output_names() == ["logits"]
        d = r.describe()
        assert d["backend"] == "ort-cpu" and d["threads"] == 1 and d["providers_active"] == ["CPUExecutionProvider"]
        assert r.last_infer_seconds is not None and r.activate_seconds is not None
    assert not r.is_active


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is usable here")
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_providers_are_unavailable_not_a_cpu_fallback(provider):
    with pytest.raises(BackendUnavailable) as e:
        OrtRunner(_relu_model(), provider).activate()
    assert "cannot run" in e.value.message or "not in this onnxruntime" in e.value.message


def test_unknown_ort_provider():
    with pytest.raises(BadInputError, match="provider"):
        OrtRunner(_relu_model(), "rocm")


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is usable here")
def test_torch_cuda_and_int8_are_unavailable():
    import torch

    with pytest.raises(BackendUnavailable, match="CUDA"):
        TorchRunner(torch.nn.ReLU(), device="cuda").activate()
    with pytest.raises(BackendUnavailable, match="int8"):
        TorchRunner(torch.nn.ReLU(), precision="int8").activate()


def test_torch_runner_first_output():
    import torch

    class Two(torch.nn.Module):
        def forward(self, x):
            return x * 2, x

    with TorchRunner(Two(), threads=1) as r:
        out = r.infer({"input": np.ones((1, 2), np.float32)})
    assert np.array_equal(out["logits"], [[2.0, 2.0]])


def test_backend_names():
    assert parse_backends("torch,cpu,trt") == ["torch", "ort-cpu", "ort-trt"]
    with pytest.raises(BadInputError, match="unknown backend"):
        parse_backends("cpu,npu")
    assert parse_providers("cpu,cuda,tensorrt,trt") == ["ort-cpu", "ort-cuda", "ort-trt"]
    assert parse_providers("trt-engine,torch-cuda") == ["trt-engine", "torch-cuda"]
    with pytest.raises(BadInputError, match="unknown backend 'vulkan' in --providers") as e:
        parse_providers("vulkan")
    assert "cpu=ort-cpu" in e.value.hint and "tensorrt=ort-trt" in e.value.hint and "trt-engine" in e.value.hint


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is usable here")
def test_open_backend_reports_skips(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(_relu_model())
    for name in ("ort-cuda", "ort-trt", "trt-engine"):
        o = open_backend(name, onnx_path=p, onnx_bytes=None, reference=None, precision="fp32", threads=1,
                         batches=[1, 8], static_batch=False)
        assert o.skipped and o.reason, name
    o = open_backend("ort-cpu", onnx_path=p, onnx_bytes=None, reference=None, precision="fp32", threads=1,
                     batches=[1, 8], static_batch=False)
    assert not o.skipped
    o.runner.deactivate()
    assert onnx.load(str(p)).graph.node[0].op_type == "Relu"


def test_isolated_backend_runner_function(tmp_path):
    """What the subprocess runs for a GPU backend, exercised here on the CPU provider."""
    from deployinc.verify.backends import run_isolated_outputs

    p = tmp_path / "m.onnx"
    p.write_bytes(_relu_model())
    x = np.arange(-8, 16, dtype=np.float32).reshape(8, 3)
    got = run_isolated_outputs("ort-cpu", str(p), x, [1, 4], precision="fp32", threads=1, static_batch=False,
                               input_elem_type=1)
    assert set(got["outputs"]) == {1, 4}
    assert np.array_equal(got["outputs"][4]["logits"], np.maximum(x, 0))


def test_a_crashing_gpu_backend_fails_the_run_without_ending_it(cli_runner, monkeypatch, tmp_path, tinynets_dir):
    from deployinc import isolate
    from deployinc.errors import BackendCrashed
    from deployinc.core import env as env_mod

    from tests.conftest import invoke
    from tests.verify.test_verify import SHAPE, export_model

    path = export_model(tmp_path, input_shape=SHAPE)
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(env_mod, "cuda_driver_problem", lambda: None)

    def crash(*a, **k):
        raise BackendCrashed(f"{k.get('label')} crashed (SIGSEGV) in its isolated process", hint="try another backend")

    monkeypatch.setattr(isolate, "call_isolated", crash)
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(path), "--providers", "cpu,cuda"])
    assert r.exit_code == 1, r.stdout + r.stderr
    assert "ort-cuda" in r.stdout and "crashed" in r.stdout and "ort-cpu" in r.stdout
    assert "ort-cuda crashed" in r.stderr
