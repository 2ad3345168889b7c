"""Native TensorRT: an engine built from the ONNX file by deployinc (:mod:`deployinc.trt`), run through
TensorRT's own runtime. ONNX Runtime's TensorRT provider is in :mod:`deployinc.backends.onnxruntime`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.env import cuda_driver_problem
from ..errors import BackendUnavailable
from ._probe import gpu_problem, installed, tensorrt_problem
from ._record import Backend, register
from .onnxruntime import _trt_accelerator, _usage


def _problem() -> str | None:
    problem = gpu_problem() or tensorrt_problem()
    if problem is None and not installed("tensorrt"):
        return "the tensorrt Python package is not installed (the native engine builds through it)"
    return problem


def _build(model: Any, *, file: Path | None, precision: str, threads: int | None, trt_batch: str | None,
           cuda_graph: bool, tf32: bool, name: str) -> Any:  # fmt: skip
    from ..trt.runner import TensorRTRunner  # lazy: numpy and TensorRT's runner stay out of `deployinc --help`

    problem = cuda_driver_problem()
    if problem is not None:
        raise BackendUnavailable(f"native TensorRT cannot run: {problem}")
    if file is None:
        raise BackendUnavailable("the native TensorRT runner builds from a file", hint="pass the model's path")
    runner = TensorRTRunner(file, precision=precision, batch=trt_batch)
    runner.name = name
    return runner


register(
    Backend(
        "trt-engine", "a native TensorRT engine built from the ONNX file", "tensorrt", _problem,
        aliases=("tensorrt-engine", "engine"), device="gpu", artifacts={"fp32": "fp32", "fp16": "fp32", "int8": "int8-trt"},
        from_fp32=("fp16", "int8"), fuses=True, builds_engine=True, needs_file=True, isolate=True, rank=3,
        tolerance="tensorrt", targets=("cuda", "tensorrt"), bench_default=True, check_target="tensorrt", triton=_trt_accelerator,
        build=_build, usage=_usage("CPUExecutionProvider"),
    ),
)  # fmt: skip
