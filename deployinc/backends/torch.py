"""Eager PyTorch backends: the user's module as they run it, on the GPU, after deployinc's prepare passes, and
compiled. They run a torch module, not an ONNX file: the stage that owns the module (verify's reference, bench's
subject) builds their runner from ``options`` (``prepared``: Conv+BN folded; ``compile``: ``torch.compile``)."""

from __future__ import annotations

import importlib.metadata as md

from ._probe import gpu_problem, installed
from ._record import Backend, register


def _torch_problem() -> str | None:
    return None if installed("torch") else "torch is not installed"


def _torch_cuda_problem() -> str | None:
    problem = _torch_problem() or gpu_problem()
    if problem is not None:
        return problem
    try:  # the version string tells a CPU-only wheel (2.x+cpu) without importing torch
        version = md.version("torch")
    except Exception:  # noqa: BLE001 - a broken install's metadata: no wheel hint, the import check decides
        return None
    return "torch is a CPU-only build (" + version + ")" if version.endswith("+cpu") else None


_EAGER = dict(family="torch", onnx=False)
#: The eager reference every speed-up is measured against.
BASELINE = "torch"

register(
    Backend("torch", "eager PyTorch as the user runs it", problem=_torch_problem, cuda_graph=True, bench_default=True, **_EAGER),  # type: ignore[arg-type]
    Backend("torch-cuda", "eager PyTorch on the GPU", problem=_torch_cuda_problem, device="gpu", tolerance="cuda",
            isolate=False, **_EAGER),  # type: ignore[arg-type]  # fmt: skip
    Backend("torch-fused", "eager PyTorch after deployinc's prepare passes (Conv+BN folded)", problem=_torch_problem,
            cuda_graph=True, bench_default=True, options={"prepared": True}, **_EAGER),  # type: ignore[arg-type]  # fmt: skip
    Backend("torch-compile", "torch.compile of the prepared module", problem=_torch_problem,
            bench_default=True, options={"prepared": True, "compile": True}, **_EAGER),  # type: ignore[arg-type]  # fmt: skip
)
