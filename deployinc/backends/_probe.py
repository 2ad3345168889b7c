"""Cheap answers to "can this backend run here?" shared by the family modules: what is installed and what the
machine has. They load no model, create no session and no CUDA context, and do not import torch (the NVIDIA
driver is asked through :func:`deployinc.core.env.cuda_driver_problem`, TensorRT through
:func:`deployinc.core.env.tensorrt_problem`). A probe is a plan, not a promise: a backend it passes can still be
skipped when it runs (a session the provider refuses), with the reason, as everywhere else.
"""

from __future__ import annotations

import importlib.util

from ..core import env


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found on the path; not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gpu_problem() -> str | None:
    """Why no NVIDIA GPU can be used here, or None."""
    try:
        problem = env.cuda_driver_problem()
    except Exception as exc:  # noqa: BLE001 - a probe must not fail the caller
        problem = f"the CUDA driver could not be probed ({type(exc).__name__})"
    return None if problem is None else f"no NVIDIA GPU ({problem})"


def ort_listed(ep: str) -> str | None:
    """Why ``ep`` is not in the installed onnxruntime's build (None when it is listed)."""
    if not installed("onnxruntime"):
        return "onnxruntime is not installed"
    try:
        import onnxruntime as ort

        listed = ep in ort.get_available_providers()
        version = ort.__version__
    except Exception as exc:  # noqa: BLE001 - a broken native library
        return f"onnxruntime cannot be imported ({type(exc).__name__})"
    return None if listed else f"{ep} is not in this onnxruntime build ({version}; onnxruntime-gpu has it)"


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here, or None."""
    try:
        return env.tensorrt_problem()
    except Exception as exc:  # noqa: BLE001 - a probe must answer, not raise: the failure becomes the reason
        return f"TensorRT could not be probed ({type(exc).__name__})"


def bf16_native() -> bool:
    """Whether the CPU has native bf16 arithmetic: AMX-BF16 or AVX512-BF16 (``/proc/cpuinfo`` flags ``amx_bf16``,
    ``avx512_bf16``) that an ``ONEDNN_MAX_CPU_ISA`` cap leaves OpenVINO (:func:`~deployinc.core.env.runtime_flags`);
    False where they cannot be read."""
    return bool(env.runtime_flags() & set(env.BF16_FLAGS))
