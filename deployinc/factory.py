"""The one runner factory for ONNX backends: a name from :mod:`deployinc.backends` and a model give an inactive
runner. verify and bench (and deploy, through them) build every ONNX backend here, so a backend is made the same
way, with the same checks and options, by every command; how each one is made is its record's ``build``.

Torch runners stay with their stages, which decide which module a torch backend runs (the user's, the prepared
one, a copy).

    runner = onnx_runner("ort-cuda", "model.onnx", precision="fp16", threads=2)
    with runner:
        outputs = runner.infer({"input": x})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import backends as B
from .backends.onnxruntime import gpu_provider_problem
from .core.precisions import FP32, INT8

__all__ = ["onnx_runner", "gpu_provider_problem"]


def onnx_runner(
    backend: str,
    model: str | os.PathLike[str] | bytes,
    *,
    precision: str = FP32,
    threads: int | None = None,
    path: str | os.PathLike[str] | None = None,
    trt_batch: str | None = None,
    cuda_graph: bool = False,
    tf32: bool = False,
    name: str | None = None,
    float_precision: str | None = None,
) -> Any:
    """An inactive runner of an ONNX model on ``backend`` (one of :data:`deployinc.backends.ONNX_BACKENDS`).

    Args:
        backend: Canonical backend name (``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``ort-openvino``, ``trt-engine``...).
        model: The model to run: a path, or serialised bytes (an fp16 conversion made in memory).
        precision: fp32, fp16, bf16 or int8: OpenVINO's inference precision hint, TensorRT's build precision,
            and what the runner reports.
        threads: Intra-op threads (None: the runtime's default).
        path: The model's file, when ``model`` is bytes: TensorRT's engine cache is keyed on it, and a native
            engine is built from it.
        trt_batch: TensorRT's optimisation profile, ``"min,opt,max"`` or one batch size (None: the model's own
            static batch).
        cuda_graph: Capture a CUDA graph (ORT CUDA and TensorRT providers).
        tf32: Allow TF32 on the CUDA provider (off: fp32 means fp32).
        name: The runner's name in reports (default: ``backend``).
        float_precision: What an int8 file's float layers compute in, on a backend whose record lists it in
            ``float_precisions`` (None or fp32: fp32).

    Raises:
        BackendUnavailable: The backend cannot run here (the message says why).
    """
    rec = B.REGISTRY.get(backend)
    if rec is None or not rec.onnx or rec.build is None:
        raise ValueError(f"{backend!r} is not an ONNX backend ({', '.join(B.ONNX_BACKENDS)})")
    extra: dict[str, Any] = {}
    if float_precision not in (None, FP32):
        if precision != INT8 or float_precision not in rec.float_precisions:
            raise ValueError(f"{backend} cannot compute the float layers of a {precision} file in {float_precision}")
        extra["float_precision"] = float_precision
    file = Path(path) if path is not None else (Path(os.fspath(model)) if not isinstance(model, bytes) else None)
    return rec.build(model, file=file, precision=precision, threads=threads, trt_batch=trt_batch, cuda_graph=cuda_graph,
                     tf32=tf32, name=name or backend, **extra)  # fmt: skip
