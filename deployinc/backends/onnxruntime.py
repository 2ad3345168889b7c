"""ONNX Runtime and its execution providers: CPU (the reference ONNX backend), CUDA, TensorRT, and the OpenVINO
plugin provider (``onnxruntime-ep-openvino``, a library registered at run time; see
:mod:`deployinc.runners.openvino`). One runner class, :class:`~deployinc.runners.ort.OrtRunner`, runs them all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.env import cuda_driver_problem
from ..errors import BackendUnavailable
from ..runners import openvino as ov_plugin
from ._probe import gpu_problem, installed, ort_listed, tensorrt_problem
from ._record import Backend, register

#: The ONNX backend every other is checked against (verify's ONNX reference and proxy, deploy's plain candidate).
REFERENCE = "ort-cpu"
#: ONNX Runtime's name of each GPU provider (OrtRunner's short name -> execution provider).
_EP = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_GPU_HINT = "run on a machine with an NVIDIA GPU and matching CUDA/cuDNN (and TensorRT) libraries; onnxruntime-gpu provides both providers"


def gpu_provider_problem(provider: str) -> str | None:
    """Why ONNX Runtime's ``cuda`` or ``tensorrt`` provider cannot run here (not in this build, no usable driver),
    or None. Asked before computing TensorRT options, which need a GPU."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime is not importable: {exc}"
    ep = _EP[provider]
    if ep not in ort.get_available_providers():
        return f"{ep} is not in this onnxruntime build ({ort.__version__})"
    problem = cuda_driver_problem()
    return None if problem is None else f"{ep} cannot run: {problem}"


def _runner(provider: str) -> Any:
    """The builder of an OrtRunner on ``provider`` (``cpu``, ``cuda``, ``tensorrt``, ``openvino``)."""

    def build(model: Any, *, file: Path | None, precision: str, threads: int | None, trt_batch: str | None,
              cuda_graph: bool, tf32: bool, name: str) -> Any:  # fmt: skip
        from ..runners.ort import OrtRunner  # lazy: numpy and the runner stay out of `deployinc --help`
        from ..trt.ort_options import cuda_provider_options, tensorrt_provider_options  # lazy: onnx, out of --help

        options: dict[str, Any] = {}
        if provider in _EP:
            problem = gpu_provider_problem(provider)
            if problem is not None:
                raise BackendUnavailable(problem, hint=_GPU_HINT)
            if provider == "cuda":
                options = cuda_provider_options(cuda_graph=cuda_graph, tf32=tf32)
            elif file is not None:
                options = tensorrt_provider_options(file, precision=precision, batch=trt_batch, cuda_graph=cuda_graph)
            elif precision == "fp16":  # no file to key an engine cache on: the build precision alone
                options = {"trt_fp16_enable": "True"}
        src: Any = model if isinstance(model, bytes) else str(os.fspath(model))
        return OrtRunner(src, provider, threads=threads, precision=precision, provider_options=options, name=name)

    return build


def _usage(ep: str) -> Any:
    def usage(precision: str, threads: int | None, float_precision: str | None = None) -> list[str]:
        so = "so = ort.SessionOptions()" + (f"; so.intra_op_num_threads = {threads}" if threads else "")
        return ["import numpy as np, onnxruntime as ort", so, f'sess = ort.InferenceSession("model.onnx", sess_options=so, providers=["{ep}"])', *_ORT_RUN]

    return usage


_ORT_RUN = ["name = sess.get_inputs()[0].name", "logits = sess.run(None, {name: images})[0]  # images: N x C x H x W float32, normalised"]


def _openvino_usage(precision: str, threads: int | None, float_precision: str | None = None) -> list[str]:
    hint = "bf16" if precision == "bf16" else "f32"
    so = "so = ort.SessionOptions()" + (f"; so.intra_op_num_threads = {threads}" if threads else "")
    return [
        "import numpy as np, onnxruntime as ort",
        "import onnxruntime_ep_openvino as ov  # pip install onnxruntime-ep-openvino",
        'ort.register_execution_provider_library("openvino", ov.get_library_path())',
        so,
        'devices = [d for d in ort.get_ep_devices() if d.ep_name == ov.get_ep_name()]',
        f'so.add_provider_for_devices(devices, {{"load_config": \'{json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint}})}\'}})',
        'sess = ort.InferenceSession("model.onnx", sess_options=so)',
        *_ORT_RUN,
    ]  # fmt: skip


def _openvino_problem() -> str | None:
    """The plugin package, its library, and an onnxruntime that loads plugins; the device is the plugin's to
    find (a registered plugin with no CPU device is answered from its devices)."""
    if not installed("onnxruntime"):
        return "onnxruntime is not installed"
    if not installed("onnxruntime_ep_openvino"):
        return f"{ov_plugin.DISTRIBUTION} is not installed"
    try:
        import onnxruntime as ort
        import onnxruntime_ep_openvino as ov

        library = ov.get_library_path()
    except Exception as exc:  # noqa: BLE001 - FileNotFoundError for a missing library, a broken package
        return f"{ov_plugin.DISTRIBUTION} is broken: {str(exc).strip()[:120] or type(exc).__name__}"
    if not hasattr(ort, "register_execution_provider_library"):
        return f"onnxruntime {ort.__version__} cannot load plugin execution providers (1.22 or newer can)"
    if not os.path.isfile(library):
        return f"{ov_plugin.DISTRIBUTION} is broken: its library {library} is missing"
    # The devices are listed only once the library is registered (loading it, no session): the plugin lists Intel
    # hardware only, so on an AMD CPU it offers none, and that is the answer, not a session failing later.
    try:
        ov_plugin.cpu_device(ort)
    except BackendUnavailable as exc:
        return exc.message
    return None


def _trt_accelerator(precision: str) -> dict[str, str]:
    """Triton's ``tensorrt`` accelerator of the ONNX Runtime backend at ``precision``."""
    return {
        "name": "tensorrt",
        "precision_mode": {"fp32": "FP32", "fp16": "FP16", "int8": "INT8", "bf16": "BF16"}[precision],
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/tmp/triton_trt_cache",
    }


register(
    Backend(
        REFERENCE, "ONNX Runtime, CPU execution provider", "onnxruntime", lambda: ort_listed("CPUExecutionProvider"),
        aliases=("cpu",), artifacts={"fp32": "fp32", "fp16": "fp16", "int8": "int8-cpu"}, rank=0, targets=("cpu",),
        bench_default=True, search=("threads",), check_target="ort-cpu", build=_runner("cpu"), usage=_usage("CPUExecutionProvider"),
    ),
    Backend(
        "ort-cuda", "ONNX Runtime, CUDA execution provider", "onnxruntime",
        lambda: ort_listed("CUDAExecutionProvider") or gpu_problem(), aliases=("cuda",), device="gpu",
        artifacts={"fp32": "fp32", "fp16": "fp16"}, isolate=True, rank=1, tolerance="cuda", targets=("cuda",),
        cuda_graph=True, bench_default=True, search=("cuda_graph",), check_target="ort-cuda", build=_runner("cuda"),
        usage=_usage("CUDAExecutionProvider"),
    ),
    Backend(
        "ort-trt", "ONNX Runtime, TensorRT execution provider", "onnxruntime",
        lambda: ort_listed("TensorrtExecutionProvider") or gpu_problem() or tensorrt_problem(),
        aliases=("tensorrt", "trt", "ort-tensorrt"), device="gpu", artifacts={"fp32": "fp32", "fp16": "fp32", "int8": "int8-trt"},
        from_fp32=("fp16", "int8"), fuses=True, builds_engine=True, isolate=True, rank=2, tolerance="tensorrt",
        targets=("cuda", "tensorrt"), cuda_graph=True, bench_default=True, check_target="tensorrt", triton=_trt_accelerator,
        build=_runner("tensorrt"), usage=_usage("TensorrtExecutionProvider"),
    ),
    Backend(
        "ort-openvino", "ONNX Runtime, OpenVINO execution provider plugin (onnxruntime-ep-openvino)", "onnxruntime",
        _openvino_problem, aliases=("openvino-ep", "ort-ov"), artifacts={"fp32": "fp32", "bf16": "fp32", "int8": "int8-cpu"},
        from_fp32=("bf16",), int8_float_output=True, rank=1, targets=("cpu",), check_target="ort-openvino",
        triton=lambda _p: {"name": "openvino"}, build=_runner("openvino"), usage=_openvino_usage,
    ),
)  # fmt: skip
