"""ONNX Runtime runner for the CPU, CUDA and TensorRT execution providers.

Provider availability lies: onnxruntime-gpu lists the CUDA and TensorRT providers on machines with no GPU or
no CUDA libraries, and a session asked for them logs an error and quietly runs on the CPU. This runner checks
``session.get_providers()`` after creating the session and raises :class:`BackendUnavailable` when the provider
it was asked for is not the one running, so a fallback is reported as skipped, never as a CUDA result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from ..lazy import require
from .base import BaseRunner

#: short name -> ORT execution provider.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def session_options(threads: int | None, optimization: str = "all", log_level: int = 3) -> Any:
    """ORT SessionOptions with an explicit thread count (recorded by callers) and full graph optimisation."""
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    levels = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so.graph_optimization_level = levels[optimization]
    so.log_severity_level = log_level
    return so


class OrtRunner(BaseRunner):
    """Runs an ONNX model with one ONNX Runtime execution provider.

    Args:
        model: Path of a checked ONNX file, or serialized model bytes.
        provider: ``cpu``, ``cuda`` or ``tensorrt``.
        threads: Intra-op threads (CPU); ``None`` lets ORT choose (recorded as such).
        precision: What the model computes in, for reports (the model decides, not the runner).
        provider_options: Options of the execution provider.
        optimization: ORT graph optimisation level (none, basic, extended, all).
        name: Backend name in reports (default ``ort-<provider>``).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        provider: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
        provider_options: dict[str, Any] | None = None,
        optimization: str = "all",
        name: str | None = None,
    ):
        super().__init__()
        if provider not in PROVIDERS:
            from ..errors import BadInputError

            raise BadInputError(f"unknown ONNX Runtime provider {provider!r}", hint=f"use one of {', '.join(PROVIDERS)}")
        self.model = model
        self.provider = provider
        self.threads = threads
        self.precision = precision
        self.provider_options = dict(provider_options or {})
        self.optimization = optimization
        self.name = name or {"cpu": "ort-cpu", "cuda": "ort-cuda", "tensorrt": "ort-trt"}[provider]
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.session: Any = None

    def _activate(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backends")
        ep = PROVIDERS[self.provider]
        if ep not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{ep} is not in this onnxruntime build ({ort.__version__})",
                hint="install onnxruntime-gpu for CUDA and TensorRT",
            )
        providers: list[Any] = [(ep, self.provider_options)] if self.provider_options else [ep]
        if self.provider == "tensorrt":
            providers.append("CUDAExecutionProvider")  # for nodes TensorRT does not take
        if ep != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        so = session_options(self.threads, self.optimization)
        src = str(self.model) if isinstance(self.model, (str, Path)) else self.model
        try:
            sess = ort.InferenceSession(src, sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types (Fail, InvalidGraph...)
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            from ..errors import OnnxFileError

            if self.provider == "cpu":
                raise OnnxFileError(f"ONNX Runtime cannot load the model: {msg}", hint="run deployinc check on it") from exc
            raise BackendUnavailable(f"{ep} could not create a session: {msg}") from exc
        active = sess.get_providers()
        if ep not in active:
            raise BackendUnavailable(
                f"{ep} fell back to {', '.join(active)} (no usable GPU or CUDA libraries here)",
                hint="run on a machine with an NVIDIA GPU and matching CUDA/cuDNN (and TensorRT) libraries",
            )
        self.session = sess
        self.details = {
            "provider": ep,
            "providers_active": active,
            "threads": self.threads,
            "onnxruntime": ort.__version__,
            "optimization": self.optimization,
        }

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, feeds)
        return dict(zip(self.output_names(), outs))

    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def input_specs(self) -> list[tuple[str, list[Any], str]]:
        """(name, shape with symbolic dims as strings, ORT type) per input."""
        return [(i.name, list(i.shape), i.type) for i in self.session.get_inputs()]

    def _deactivate(self) -> None:
        self.session = None
