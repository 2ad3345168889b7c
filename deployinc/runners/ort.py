"""ONNX Runtime runner for the CPU, CUDA and TensorRT execution providers, and the OpenVINO plugin provider.

Provider availability lies: onnxruntime-gpu lists the CUDA and TensorRT providers on machines with no GPU or
no CUDA libraries, and a session asked for them logs an error and quietly runs on the CPU. This runner checks
``session.get_providers()`` after creating the session and raises :class:`BackendUnavailable` when the provider
it was asked for is not the one running, so a fallback is reported as skipped, never as a CUDA result.

OpenVINO (``provider="openvino"``, backend ``ort-openvino``) is a plugin library, registered with ONNX Runtime
once per process and added to the session as an EP device (see :mod:`deployinc.runners.openvino`); the runner's
``precision`` becomes OpenVINO's inference precision hint (fp32 -> f32, bf16 -> bf16).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.env import cuda_driver_problem
from ..errors import BackendUnavailable, BadInputError, OnnxFileError
from ..lazy import require
from . import openvino
from .base import BaseRunner
from .steps import TimedSteps
from ..core.precisions import FP32

#: short name -> ORT execution provider.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
#: short name -> backend name in reports.
BACKEND_NAMES = {"cpu": "ort-cpu", "cuda": "ort-cuda", "tensorrt": "ort-trt", "openvino": "ort-openvino"}


#: ORT element type strings -> numpy dtypes, for buffers allocated on the device.
_ORT_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def run_error(exc: BaseException, session: Any, feeds: dict[str, np.ndarray], backend: str) -> Exception:
    """The deployinc error for an exception ``session.run`` raised: a shape/dtype the model does not accept
    (expected vs actual), or a model that loads but cannot run."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "invalid dimensions" in text or "Unexpected input data type" in text or "Invalid rank" in text:
        expected = ", ".join(f"{i.name}: {i.type} {list(i.shape)}" for i in session.get_inputs())
        actual = ", ".join(f"{k}: {v.dtype} {list(v.shape)}" for k, v in feeds.items())
        return BadInputError(
            f"the model does not accept this input: expected {expected}, got {actual}",
            hint="use --batch / --input-shape values the model was exported for (static models take one batch size)",
        )
    return OnnxFileError(
        f"ONNX Runtime ({backend}) failed to run the model: {text[:300]}",
        hint="the graph is inconsistent (corrupt or edited file?); run deployinc check on it, or export it again",
    )


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
        provider: ``cpu``, ``cuda``, ``tensorrt`` or ``openvino``.
        threads: Intra-op threads (CPU; OpenVINO's own thread count too); ``None`` lets ORT choose (recorded as such).
        precision: What the model computes in, for reports (the model decides, not the runner), except on
            OpenVINO, where it is the inference precision asked for (``fp32``: f32; ``bf16``: bf16; fp16 and int8
            files: f32, as they carry their own types).
        provider_options: Options of the execution provider (for CUDA, ``use_tf32`` defaults to ``0``; for
            OpenVINO, a ``load_config`` replaces the one made from ``precision`` and ``threads``).
        optimization: ORT graph optimisation level (none, basic, extended, all).
        name: Backend name in reports (default ``ort-<provider>``).
        log_level: ORT session log severity (0 verbose ... 4 fatal).

    Benchmarks use :meth:`bench_steps`: on the CPU the bare ``session.run`` with its arguments bound, on a GPU
    ``run_with_iobinding`` with inputs and outputs on the device (and CUDA graph replay when the session was
    created with ``enable_cuda_graph`` / ``trt_cuda_graph_enable``).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        provider: str = "cpu",
        threads: int | None = None,
        precision: str = FP32,
        provider_options: dict[str, Any] | None = None,
        optimization: str = "all",
        name: str | None = None,
        log_level: int = 3,
    ):
        super().__init__()
        if provider not in PROVIDERS:
            raise BadInputError(f"unknown ONNX Runtime provider {provider!r}", hint=f"use one of {', '.join(PROVIDERS)}")
        self.model = model
        self.provider = provider
        self.threads = threads
        self.precision = precision
        self.provider_options = dict(provider_options or {})
        if provider == "cuda":
            # fp32 means fp32: the CUDA provider computes fp32 convolutions and matmuls in TF32 unless told not to
            # (an error near 1e-4 relative); ask for it with use_tf32=1.
            self.provider_options.setdefault("use_tf32", "0")
        self.optimization = optimization
        self.name = name or BACKEND_NAMES[provider]
        self.device = "cpu" if provider in ("cpu", "openvino") else "cuda"
        self.log_level = log_level
        self.session: Any = None

    def _activate(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backends")
        ep = PROVIDERS[self.provider]
        if self.provider == "openvino":
            self._activate_openvino(ort)
            return
        if ep not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{ep} is not in this onnxruntime build ({ort.__version__})",
                hint="install onnxruntime-gpu for CUDA and TensorRT",
            )
        if self.provider != "cpu":
            problem = cuda_driver_problem()
            if problem is not None:
                raise BackendUnavailable(
                    f"{ep} cannot run: {problem}",
                    hint="run on a machine with an NVIDIA GPU and matching CUDA/cuDNN (and TensorRT) libraries",
                )
        providers: list[Any] = [(ep, self.provider_options)] if self.provider_options else [ep]
        if self.provider == "tensorrt":
            providers.append("CUDAExecutionProvider")  # for nodes TensorRT does not take
        if ep != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        so = session_options(self.threads, self.optimization, log_level=self.log_level)
        src = str(self.model) if isinstance(self.model, (str, Path)) else self.model
        try:
            sess = ort.InferenceSession(src, sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types (Fail, InvalidGraph...)
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__

            if self.provider == "cpu":
                raise OnnxFileError(f"ONNX Runtime cannot load the model: {msg}", hint="run deployinc check on it") from exc
            raise BackendUnavailable(f"{ep} could not create a session: {msg}") from exc
        active = sess.get_providers()
        if ep not in active:
            raise BackendUnavailable(
                f"{ep} fell back to {', '.join(active)} (no usable GPU or CUDA libraries here)",
                hint="run on a machine with an NVIDIA GPU and matching CUDA/cuDNN (and TensorRT) libraries",
            )
        self._started(sess, ep, ort.__version__)

    def _started(self, sess: Any, ep: str, version: str, **extra: Any) -> None:
        self.session = sess
        self.details = {
            "provider": ep,
            "providers_active": sess.get_providers(),
            "threads": self.threads,
            "onnxruntime": version,
            "optimization": self.optimization,
            **extra,
        }

    def _activate_openvino(self, ort: Any) -> None:
        """A session on the OpenVINO plugin's CPU device, at the inference precision the runner's precision asks."""
        ep = PROVIDERS["openvino"]
        so = session_options(self.threads, self.optimization, log_level=self.log_level)
        added = openvino.add_to(so, ort, self.precision, self.threads, self.provider_options)
        sess = self.plugin_session(ort, so, ep, "run deployinc check on the model; try --providers ort-cpu", openvino.INSTALL_HINT)
        self._started(sess, ep, ort.__version__, **added)

    def plugin_session(self, ort: Any, so: Any, ep: str, check_hint: str, install_hint: str) -> Any:
        """A session of this runner's model with options ``so`` (a plugin's device already added), refused with the
        reason unless plugin provider ``ep`` took it.

        Raises:
            BackendUnavailable: The session cannot be made, or runs on another provider.
        """
        src = str(self.model) if isinstance(self.model, (str, Path)) else self.model
        try:
            sess = ort.InferenceSession(src, sess_options=so)
        except Exception as exc:  # noqa: BLE001 - ORT raises EPFail / Fail / InvalidGraph
            msg = " | ".join(ln.strip() for ln in str(exc).strip().splitlines()[:3])[:300] or type(exc).__name__
            raise BackendUnavailable(f"{ep} could not create a session: {msg}", hint=check_hint) from exc
        active = sess.get_providers()
        if ep not in active:
            raise BackendUnavailable(f"{ep} is not among the session's providers ({', '.join(active)}): the plugin did not take it", hint=install_hint)
        return sess

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT raises Fail / InvalidArgument / RuntimeException
            raise run_error(exc, self.session, feeds, self.name) from exc
        return dict(zip(self.output_names(), outs))

    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def input_specs(self) -> list[tuple[str, list[Any], str]]:
        """(name, shape with symbolic dims as strings, ORT type) per input."""
        return [(i.name, list(i.shape), i.type) for i in self.session.get_inputs()]

    # benchmarking -------------------------------------------------------------------------------------------------
    @property
    def cuda_graph(self) -> bool:
        """Whether the session was configured to capture and replay a CUDA graph."""
        o = {k: str(v).lower() for k, v in self.provider_options.items()}
        return o.get("enable_cuda_graph") in ("1", "true") or o.get("trt_cuda_graph_enable") in ("1", "true")

    def raw_run(self, feeds: dict[str, np.ndarray]) -> Any:
        """``session.run`` with ``feeds`` bound: the call a user makes, with no wrapper around it."""
        if self.session is None:
            raise RuntimeError(f"runner {self.name} used before activate()")
        return functools.partial(self.session.run, None, feeds)

    def bench_steps(self, feeds: dict[str, np.ndarray], device_id: int = 0) -> Any:
        """Callables for the benchmark harness (:class:`~deployinc.runners.steps.TimedSteps`).

        CPU: ``e2e`` is :meth:`raw_run`. CUDA and TensorRT providers: inputs are copied once into device buffers
        (OrtValues) and outputs go to preallocated device buffers, bound through IO binding, so ``compute`` is
        ``run_with_iobinding`` alone with no host copy hidden in it; ``e2e`` adds the host-to-device copy of the
        inputs (``OrtValue.update_inplace``, which keeps the buffer's address, as CUDA graph replay needs) and the
        device-to-host copy of the outputs. With a CUDA graph, ORT captures it on the first ``run_with_iobinding``
        (a warm-up run) and replays it afterwards; shapes are then fixed, so a new batch size needs a new session.
        """
        if self.session is None:
            raise RuntimeError(f"runner {self.name} used before activate()")
        if self.device == "cpu":
            return TimedSteps(e2e=self.raw_run(feeds), notes=["session.run on host arrays"])
        ort = require("onnxruntime")
        sess = self.session
        names = [i.name for i in sess.get_inputs()]
        missing = [n for n in names if n not in feeds]
        if missing:
            raise BadInputError(f"no input data for {missing}", hint=f"the model's inputs are {names}")
        batch = int(next(iter(feeds.values())).shape[0])
        in_vals = {n: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[n]), "cuda", device_id) for n in names}
        out_vals = []
        for o in sess.get_outputs():
            shape = []
            for i, d in enumerate(o.shape):
                if isinstance(d, int) and d > 0:
                    shape.append(d)
                elif i == 0:
                    shape.append(batch)
                else:
                    raise BackendUnavailable(
                        f"output {o.name!r} has a symbolic dimension {d!r} besides the batch; "
                        "IO binding to preallocated device buffers needs its size",
                        hint="export with static output shapes",
                    )
            dtype = _ORT_NUMPY_TYPES.get(o.type)
            if dtype is None:
                raise BackendUnavailable(f"output {o.name!r} has type {o.type}, which deployinc cannot preallocate")
            out_vals.append(ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", device_id))
        binding = sess.io_binding()
        for n in names:
            binding.bind_ortvalue_input(n, in_vals[n])
        for o, v in zip(sess.get_outputs(), out_vals):
            binding.bind_ortvalue_output(o.name, v)
        compute = functools.partial(sess.run_with_iobinding, binding)
        host = {n: np.ascontiguousarray(feeds[n]) for n in names}

        def e2e() -> list[np.ndarray]:
            for n in names:
                in_vals[n].update_inplace(host[n])  # host -> device, same device address
            sess.run_with_iobinding(binding)
            return [v.numpy() for v in out_vals]  # device -> host

        def close() -> None:
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            in_vals.clear()
            out_vals.clear()

        notes = ["IO binding: inputs and outputs preallocated on the device"]
        if self.cuda_graph:
            notes.append("CUDA graph: captured on the first run (a warm-up run), replayed after")
        # ORT synchronises the provider's stream at the end of every run; synchronize_outputs makes sure of it.
        return TimedSteps(e2e=e2e, compute=compute, sync=binding.synchronize_outputs, notes=notes, close=close)

    def _deactivate(self) -> None:
        self.session = None
