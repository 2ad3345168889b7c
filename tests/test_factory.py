"""The one runner factory (deployinc.factory): every ONNX backend is made there, so verify and bench build the same
runner for the same name; a backend that cannot run here is BackendUnavailable with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

import deployinc.backends.onnxruntime as ORT
import deployinc.backends.tensorrt as TRT
import deployinc.factory as F
from deployinc.bench.harness import BenchSettings, _Builder
from deployinc.bench.subject import open_onnx
from deployinc.errors import BackendUnavailable
from deployinc.runners.ort import OrtRunner
from deployinc.verify.backends import make_onnx_runner


@pytest.fixture
def relu(tmp_path) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 4, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "relu.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_cpu_runner_and_names(relu):
    r = F.onnx_runner("ort-cpu", relu, precision="fp32", threads=1)
    assert isinstance(r, OrtRunner) and r.provider == "cpu" and r.name == "ort-cpu" and r.provider_options == {}
    assert F.onnx_runner("ort-cpu", relu.read_bytes(), name="mine").name == "mine"
    with pytest.raises(ValueError, match="not an ONNX backend"):
        F.onnx_runner("torch", relu)


def test_gpu_backends_are_unavailable_here_with_the_reason(relu, monkeypatch):
    monkeypatch.setattr(TRT, "cuda_driver_problem", lambda: "no NVIDIA driver here (made up)")
    with pytest.raises(BackendUnavailable, match="native TensorRT cannot run: no NVIDIA driver here"):
        F.onnx_runner("trt-engine", relu)
    problem = F.gpu_provider_problem("cuda")
    assert problem is not None and ("CUDAExecutionProvider" in problem)
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        F.onnx_runner("ort-cuda", relu)


def test_trt_engine_needs_a_file(relu, monkeypatch):
    monkeypatch.setattr(TRT, "cuda_driver_problem", lambda: None)
    with pytest.raises(BackendUnavailable, match="builds from a file"):
        F.onnx_runner("trt-engine", relu.read_bytes())


def test_verify_and_bench_build_the_same_runner_for_a_name(relu, monkeypatch):
    monkeypatch.setattr(ORT, "gpu_provider_problem", lambda provider: None)  # as on a GPU machine
    s = BenchSettings(backends=["ort-cpu"], batches=[1], threads=1, cuda_graph=False, tf32=False)
    bench = _Builder(open_onnx(relu), s, lambda _m: None)
    for name in ("ort-cpu", "ort-cuda", "ort-openvino"):
        v = make_onnx_runner(name, relu, precision="fp32", threads=1, batches=[1], static_batch=False, onnx_path=relu)
        b = bench.build(name, "fp32", 1)
        assert (type(v), v.provider, v.name, v.precision, v.provider_options) == (type(b), b.provider, b.name, b.precision, b.provider_options), name
    cuda = make_onnx_runner("ort-cuda", relu, precision="fp32", threads=1, batches=[1], static_batch=False)
    assert cuda.provider_options.get("use_tf32") == "0", "fp32 on the CUDA provider means fp32"
    graphs = _Builder(open_onnx(relu), BenchSettings(backends=["ort-cuda"], batches=[1], cuda_graph=True), lambda _m: None).build("ort-cuda", "fp32", 1)
    assert graphs.provider_options.get("enable_cuda_graph") == "1"
