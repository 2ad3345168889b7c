"""The one runner factory for ONNX backends: a name from :mod:`deployinc.backends` and a model give an inactive
runner. verify and bench (and deploy, through them) build every ONNX Runtime provider and every native TensorRT
engine here, so a backend is made the same way, with the same checks and options, by every command.

It sits above ``runners/`` (torch and ONNX Runtime) and ``trt/`` (TensorRT), which it composes; torch runners stay
with their stages, which decide which module a torch backend runs (the user's, the prepared one, a copy).

    runner = onnx_runner("ort-cuda", "model.onnx", precision="fp16", threads=2)
    with runner:
        outputs = runner.infer({"input": x})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .backends import ONNX_BACKENDS
from .errors import BackendUnavailable
from .runners.ort import OrtRunner, cuda_driver_problem
from .trt.ort_options import cuda_provider_options, tensorrt_provider_options
from .trt.runner import TensorRTRunner

__all__ = ["ORT_PROVIDER", "onnx_runner", "gpu_provider_problem"]

#: Backend name -> OrtRunner's provider name.
ORT_PROVIDER = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt", "ort-openvino": "openvino"}
_EP = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


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


def onnx_runner(
    backend: str,
    model: str | os.PathLike[str] | bytes,
    *,
    precision: str = "fp32",
    threads: int | None = None,
    path: str | os.PathLike[str] | None = None,
    trt_batch: str | None = None,
    cuda_graph: bool = False,
    tf32: bool = False,
    name: str | None = None,
) -> Any:
    """An inactive runner of an ONNX model on ``backend`` (one of :data:`deployinc.backends.ONNX_BACKENDS`).

    Args:
        backend: Canonical backend name (``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``ort-openvino``, ``trt-engine``).
        model: The model to run: a path, or serialised bytes (an fp16 conversion made in memory).
        precision: fp32, fp16, bf16 or int8: OpenVINO's inference precision hint, TensorRT's build precision,
            and what the runner reports.
        threads: ONNX Runtime intra-op threads (None: its default).
        path: The model's file, when ``model`` is bytes: TensorRT's engine cache is keyed on it, and a native
            engine is built from it.
        trt_batch: TensorRT's optimisation profile, ``"min,opt,max"`` or one batch size (None: the model's own
            static batch).
        cuda_graph: Capture a CUDA graph (ORT CUDA and TensorRT providers).
        tf32: Allow TF32 on the CUDA provider (off: fp32 means fp32).
        name: The runner's name in reports (default: ``backend``).

    Raises:
        BackendUnavailable: The backend cannot run here (the message says why).
    """
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"{backend!r} is not an ONNX backend ({', '.join(ONNX_BACKENDS)})")
    file = Path(path) if path is not None else (Path(os.fspath(model)) if not isinstance(model, bytes) else None)
    if backend == "trt-engine":
        problem = cuda_driver_problem()
        if problem is not None:
            raise BackendUnavailable(f"native TensorRT cannot run: {problem}")
        if file is None:
            raise BackendUnavailable("the native TensorRT runner builds from a file", hint="pass the model's path")
        runner = TensorRTRunner(file, precision=precision, batch=trt_batch)
        runner.name = name or backend
        return runner
    provider = ORT_PROVIDER[backend]
    options: dict[str, Any] = {}
    if provider in _EP:
        problem = gpu_provider_problem(provider)
        if problem is not None:
            raise BackendUnavailable(problem, hint="run on a machine with an NVIDIA GPU and matching CUDA/cuDNN (and TensorRT) libraries; "
                                     "onnxruntime-gpu provides both providers")  # fmt: skip
        if provider == "cuda":
            options = cuda_provider_options(cuda_graph=cuda_graph, tf32=tf32)
        elif file is not None:
            options = tensorrt_provider_options(file, precision=precision, batch=trt_batch, cuda_graph=cuda_graph)
        elif precision == "fp16":  # no file to key an engine cache on: the build precision alone
            options = {"trt_fp16_enable": "True"}
    src: Any = model if isinstance(model, bytes) else str(model)
    return OrtRunner(src, provider, threads=threads, precision=precision, provider_options=options, name=name or backend)
