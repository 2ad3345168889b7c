"""Native TensorRT runner: an engine built (or taken from the cache) by :mod:`deployinc.trt.engine`, run with tensors
bound by name.

``activate()`` needs ``tensorrt`` and a CUDA GPU; without them it raises
:class:`~deployinc.errors.BackendUnavailable` with the reason, so callers report *skipped*. The engine build (or cache
load) happens in ``activate()``; its time is in ``details["engine_build_seconds"]`` (None for a cache hit), apart
from ``activate_seconds`` and from the steady-state ``last_infer_seconds``.

Inference: host arrays are copied into torch CUDA tensors of the engine's dtypes, every input and output is bound
with ``IExecutionContext.set_tensor_address``, input shapes are set with ``set_input_shape`` (checked against the
optimisation profile first), and ``execute_async_v3`` runs on torch's current stream, which is synchronised before
the outputs are copied back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, BadInputError
from ..lazy import require
from ..runners.base import BaseRunner
from .engine import build_or_load, deserialize, io_tensors
from ..core.precisions import FP32


def _torch_dtype(trt: Any, torch: Any, dt: Any) -> Any:
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
             "INT8": torch.int8, "BOOL": torch.bool, "UINT8": torch.uint8, "BF16": torch.bfloat16}
    for name, tdt in table.items():
        if hasattr(trt.DataType, name) and dt == getattr(trt.DataType, name):
            return tdt
    raise BadInputError(f"engine tensor type {dt} has no torch equivalent", hint="use float32/float16 model inputs")


class TensorRTRunner(BaseRunner):
    """Runs an ONNX model as a native TensorRT engine.

    Args:
        model: Path of the ONNX file (the engine is built from it, or found in the cache by its key).
        precision: ``fp32``, ``fp16`` or ``int8`` (int8 needs a QDQ model).
        batch: Batch range for the optimisation profile (``"1,8,32"``); None: the model's static batch, or 1.
        builder_optimization_level: 0-5 (TensorRT's default 3).
        workspace_bytes: Builder workspace limit.
        cache_dir: Engine cache root (default: the deployinc cache folder).
        timing_cache: Use and update the timing cache.
        allow_tf32: Keep TF32 on for fp32 builds.
        fp16_fallback: With int8 on weakly typed TensorRT, allow fp16 for float layers.
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(
        self,
        model: str | os.PathLike[str],
        precision: str = FP32,
        batch: str | int | None = None,
        builder_optimization_level: int = 3,
        workspace_bytes: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timing_cache: bool = True,
        allow_tf32: bool = False,
        fp16_fallback: bool = True,
    ):
        super().__init__()
        self.model = Path(model)
        self.precision = precision
        self.batch = batch
        self.builder_optimization_level = builder_optimization_level
        self.workspace_bytes = workspace_bytes
        self.cache_dir = cache_dir
        self.timing_cache = timing_cache
        self.allow_tf32 = allow_tf32
        self.fp16_fallback = fp16_fallback
        self._trt: Any = None
        self._torch: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._profiles: dict[str, Any] = {}

    def _activate(self) -> None:
        trt = require("tensorrt", "the native TensorRT runner")
        torch = require("torch", "the native TensorRT runner")
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA GPU is visible; TensorRT needs one", hint="run on a machine with an NVIDIA GPU")

        built = build_or_load(
            self.model,
            precision=self.precision,
            batch=self.batch,
            builder_optimization_level=self.builder_optimization_level,
            workspace_bytes=self.workspace_bytes,
            cache_dir=self.cache_dir,
            timing_cache=self.timing_cache,
            allow_tf32=self.allow_tf32,
            fp16_fallback=self.fp16_fallback,
        )
        self._trt, self._torch = trt, torch
        self._engine = built.engine if built.engine is not None else deserialize(trt, built.data)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailable("TensorRT could not create an execution context (out of GPU memory?)")
        self._inputs, self._outputs = io_tensors(trt, self._engine)
        self._profiles = {p.name: p for p in built.profiles}
        self.details.update(
            {
                "tensorrt_version": str(trt.__version__),
                "engine_from_cache": built.from_cache,
                "engine_build_seconds": built.build_seconds,
                "engine_path": str(built.engine_path),
                "cache_key": built.key.digest(),
                "compute_capability": built.key.compute_capability,
                "typing": "strong" if built.plan.strongly_typed else "weak",
                "builder_flags": list(built.plan.set_flags),
                "profiles": {p.name: p.to_dict() for p in built.profiles},
                "warnings": list(built.warnings),
            }
        )

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        p = self._profiles.get(name)
        if p is None:
            return
        if len(shape) != len(p.min) or any(s < lo or s > hi for s, lo, hi in zip(shape, p.min, p.max)):
            raise BadInputError(
                f"input {name!r} of shape {shape} is outside the engine's profile (min {p.min}, max {p.max})",
                hint="build with a wider --batch range",
            )

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, torch, ctx, engine = self._trt, self._torch, self._context, self._engine
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise BadInputError(f"missing input(s) {missing}", hint=f"the engine takes {self._inputs}")
        keep: list[Any] = []  # device tensors must outlive the launch
        for name in self._inputs:
            arr = np.ascontiguousarray(feeds[name])
            self._check_shape(name, tuple(arr.shape))
            dt = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            t = torch.from_numpy(arr).to(device="cuda", dtype=dt).contiguous()
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise BadInputError(f"TensorRT refused shape {tuple(t.shape)} for input {name!r}")
            ctx.set_tensor_address(name, t.data_ptr())
            keep.append(t)
        outs = {}
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            dt = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            t = torch.empty(shape, dtype=dt, device="cuda")
            ctx.set_tensor_address(name, t.data_ptr())
            outs[name] = t
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT's log)")
        stream.synchronize()
        del keep
        return {name: t.cpu().numpy() for name, t in outs.items()}

    def synchronize(self) -> None:
        if self._torch is not None:
            self._torch.cuda.synchronize()

    def input_names(self) -> list[str]:
        return list(self._inputs) if self._inputs else super().input_names()

    def output_names(self) -> list[str]:
        return list(self._outputs) if self._outputs else super().output_names()

    def _deactivate(self) -> None:
        self._context = None
        self._engine = None
