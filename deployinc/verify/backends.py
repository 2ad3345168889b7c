"""The backends ``deployinc verify`` runs, by name, behind the runner interface.

A backend that cannot run here (no GPU, provider or library missing, a provider that quietly fell back to the
CPU) is *skipped* with its reason: :func:`open_backend` returns the reason instead of a runner, never raises for
it, and never hands back a runner that runs somewhere other than asked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import backends as B
from ..backends import ALIASES, BACKENDS, FUSING_BACKENDS, ONNX_BACKENDS, names_text, parse_backends  # noqa: F401 - the one table
from ..errors import BackendUnavailable
from ..prepare import prepare
from ..factory import onnx_runner
from ..runners.torch_runner import TorchRunner
from ..core.precisions import FP16, FP32


def available_names() -> str:
    """The accepted names with what each runs, for hints."""
    return names_text()


def parse_providers(text: str | None) -> list[str]:
    """``"cpu,cuda,tensorrt"`` -> backend names (the table in :mod:`deployinc.backends`), refusing unknown ones.

    Raises:
        BadInputError: An unknown name (the known ones are listed) or none.
    """
    return parse_backends(text, option="--providers", default="cpu")


def family(backend: str) -> str:
    """``cpu``, ``cuda`` or ``tensorrt``: which tolerance preset a backend gets (its record's ``tolerance``)."""
    return B.get(backend).tolerance


@dataclass
class Opened:
    """A backend that is ready (``runner``) or skipped (``reason``/``hint``)."""

    name: str
    runner: Any = None
    reason: str | None = None
    hint: str | None = None
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.runner is None


def trt_batch_range(batches: list[int], static: bool) -> str | None:
    """The TensorRT optimisation profile (``min,opt,max``) that covers every batch size verify runs: the smallest
    to the largest, tuned for the largest; None for a static batch (the model's own)."""
    if static:
        return None
    return f"{min(batches)},{max(batches)},{max(batches)}"


def make_onnx_runner(
    name: str,
    model: Path | bytes,
    *,
    precision: str,
    threads: int | None,
    batches: list[int],
    static_batch: bool,
    onnx_path: Path | None = None,
    float_precision: str | None = None,
) -> Any:
    """An (inactive) runner of an ONNX model on an ONNX backend, from the one factory
    (:func:`deployinc.factory.onnx_runner`): TensorRT's profile covers every batch size verify runs, and the CUDA
    provider computes fp32 in fp32 (no TF32).

    Raises:
        BackendUnavailable: The backend cannot run here.
    """
    return onnx_runner(name, model, precision=precision, threads=threads, path=onnx_path,
                       trt_batch=trt_batch_range(batches, static_batch), tf32=False, float_precision=float_precision)  # fmt: skip


def open_backend(
    name: str,
    *,
    onnx_path: Path,
    onnx_bytes: bytes | None,
    reference: Any,
    precision: str,
    threads: int | None,
    batches: list[int],
    static_batch: bool,
    float_precision: str | None = None,
) -> Opened:
    """Create and activate one backend; a backend that cannot run here comes back skipped with the reason."""
    import time

    t0 = time.perf_counter()
    try:
        rec = B.get(name)
        if rec.onnx:
            runner = make_onnx_runner(
                name,
                onnx_bytes if (onnx_bytes is not None and not rec.needs_file) else onnx_path,
                precision=precision,
                threads=threads,
                batches=batches,
                static_batch=static_batch,
                onnx_path=onnx_path,
                float_precision=float_precision,
            )
        elif rec.device == "gpu":
            if reference is None or reference.module is None:
                raise BackendUnavailable(f"{name} needs a torch reference", hint=f"drop --against, or drop {name}")

            runner = TorchRunner(reference.module, device="cuda", precision=FP16 if precision == FP16 else FP32, name=name)
            # The reference module stays on the CPU: the CUDA runner gets its own copy.
            runner.module = copy.deepcopy(reference.module)
        elif not rec.options.get("prepared"):
            if reference is None or reference.module is None:
                raise BackendUnavailable(f"{name} needs a torch reference", hint=f"drop --against, or drop {name}")

            runner = TorchRunner(copy.deepcopy(reference.module), device="cpu", threads=threads, name=name)
        else:
            if reference is None or reference.module is None:
                raise BackendUnavailable(f"{name} needs a torch reference", hint=f"drop --against, or drop {name}")
            info = reference.info
            chw = tuple(info.input_size) if info is not None else (3, 224, 224)
            prepared, _ = prepare(
                reference.module,
                (1, *chw),
                aux_heads=tuple(info.aux_heads) if info is not None else (),
                mean=tuple(info.mean) if info is not None else None,
                std=tuple(info.std) if info is not None else None,
            )
            compiled = bool(rec.options.get("compile"))
            example = np.zeros((1, *chw), np.float32) if compiled else None
            runner = TorchRunner(prepared, device="cpu", threads=threads, name=name, compile=compiled, example=example)
        runner.activate()
    except BackendUnavailable as exc:
        return Opened(name=name, reason=exc.message, hint=exc.hint, seconds=time.perf_counter() - t0)
    return Opened(name=name, runner=runner, seconds=time.perf_counter() - t0)


def run_isolated_outputs(
    name: str,
    onnx_path: str,
    x: Any,
    batches: list[int],
    *,
    precision: str,
    threads: int | None,
    static_batch: bool,
    input_elem_type: int,
    float_precision: str | None = None,
) -> dict[str, Any]:
    """Run one ONNX backend over ``x`` at every batch size; meant for a subprocess (:func:`deployinc.isolate.call_isolated`).

    Returns ``{"describe": ..., "activate_seconds": ..., "outputs": {batch: {output: array}}, "seconds": {batch: s}}``.

    Raises:
        BackendUnavailable: The backend cannot run here (re-raised in the parent, reported as skipped).
    """
    import time

    import numpy as np

    runner = make_onnx_runner(
        name, Path(onnx_path), precision=precision, threads=threads, batches=batches, static_batch=static_batch,
        onnx_path=Path(onnx_path), float_precision=float_precision,
    )
    runner.activate()
    try:
        in_name = runner.input_names()[0]
        dtype = {10: np.float16, 11: np.float64}.get(input_elem_type, np.float32)
        outs: dict[int, dict[str, Any]] = {}
        secs: dict[int, float] = {}
        for b in batches:
            n = (x.shape[0] // b) * b
            t = time.perf_counter()
            parts: dict[str, list[Any]] = {}
            for i in range(0, n, b):
                got = runner.infer({in_name: np.ascontiguousarray(x[i : i + b].astype(dtype))})
                for k, v in got.items():
                    parts.setdefault(k, []).append(np.asarray(v))
            outs[b] = {k: np.concatenate(v) for k, v in parts.items()}
            secs[b] = time.perf_counter() - t
        return {"describe": runner.describe(), "activate_seconds": runner.activate_seconds, "outputs": outs, "seconds": secs}
    finally:
        runner.deactivate()
