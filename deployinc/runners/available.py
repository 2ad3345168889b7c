"""Cheap answers to "can this backend run here?", for planning before anything runs (``deployinc deploy``).

:func:`backend_problem` answers for every name of :mod:`deployinc.backends` from what is installed and what the
machine has: it loads no model, creates no session and no CUDA context, and does not import torch (the NVIDIA
driver is asked through :func:`deployinc.core.env.cuda_driver_problem`, TensorRT through
:func:`deployinc.core.env.tensorrt_problem`). It is a plan, not a promise: a backend it passes can still be
skipped when it runs (a session the provider refuses), with the reason, as everywhere else.

:func:`bf16_native` says whether the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), which is where
``ort-openvino`` at bf16 is worth trying; elsewhere OpenVINO would emulate it or compute in f32.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os

from ..backends import BACKENDS, canonical, names_text
from ..core import env
from ..errors import BackendUnavailable, BadInputError
from . import openvino
from .openvino import DISTRIBUTION


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _torch_problem() -> str | None:
    return None if _installed("torch") else "torch is not installed"


def _gpu_problem() -> str | None:
    try:
        problem = env.cuda_driver_problem()
    except Exception as exc:  # noqa: BLE001 - a probe must not fail the caller
        problem = f"the CUDA driver could not be probed ({type(exc).__name__})"
    return None if problem is None else f"no NVIDIA GPU ({problem})"


def _torch_cuda_problem() -> str | None:
    problem = _torch_problem() or _gpu_problem()
    if problem is not None:
        return problem
    try:  # the version string tells a CPU-only wheel (2.x+cpu) without importing torch
        version = md.version("torch")
    except Exception:  # noqa: BLE001 - a broken install's metadata: no wheel hint, the import check decides
        return None
    return "torch is a CPU-only build (" + version + ")" if version.endswith("+cpu") else None


def _ort_listed(ep: str) -> str | None:
    """Why ``ep`` is not in the installed onnxruntime's build (None when it is listed)."""
    if not _installed("onnxruntime"):
        return "onnxruntime is not installed"
    try:
        import onnxruntime as ort

        listed = ep in ort.get_available_providers()
        version = ort.__version__
    except Exception as exc:  # noqa: BLE001 - a broken native library
        return f"onnxruntime cannot be imported ({type(exc).__name__})"
    return None if listed else f"{ep} is not in this onnxruntime build ({version}; onnxruntime-gpu has it)"


def _tensorrt_problem() -> str | None:
    try:
        return env.tensorrt_problem()
    except Exception as exc:  # noqa: BLE001 - a probe must answer, not raise: the failure becomes the reason
        return f"TensorRT could not be probed ({type(exc).__name__})"


def _openvino_problem() -> str | None:
    """The plugin package, its library, and an onnxruntime that loads plugins; the device is the plugin's to
    find (a registered plugin with no CPU device is answered from its devices)."""
    if not _installed("onnxruntime"):
        return "onnxruntime is not installed"
    if not _installed("onnxruntime_ep_openvino"):
        return f"{DISTRIBUTION} is not installed"
    try:
        import onnxruntime as ort
        import onnxruntime_ep_openvino as ov

        library = ov.get_library_path()
    except Exception as exc:  # noqa: BLE001 - FileNotFoundError for a missing library, a broken package
        return f"{DISTRIBUTION} is broken: {str(exc).strip()[:120] or type(exc).__name__}"
    if not hasattr(ort, "register_execution_provider_library"):
        return f"onnxruntime {ort.__version__} cannot load plugin execution providers (1.22 or newer can)"
    if not os.path.isfile(library):
        return f"{DISTRIBUTION} is broken: its library {library} is missing"
    # The devices are listed only once the library is registered (loading it, no session): the plugin lists Intel
    # hardware only, so on an AMD CPU it offers none, and that is the answer, not a session failing later.
    try:
        openvino.cpu_device(ort)
    except BackendUnavailable as exc:
        return exc.message
    return None


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` (a name or alias of :mod:`deployinc.backends`) cannot run here, or None when it can.

    Raises:
        BadInputError: ``name`` names no backend.
    """
    backend = canonical(name)
    if backend is None:
        raise BadInputError(f"unknown backend {name!r}", hint=f"known: {names_text()}")
    if backend in ("torch", "torch-fused", "torch-compile"):
        return _torch_problem()
    if backend == "torch-cuda":
        return _torch_cuda_problem()
    if backend == "ort-cpu":
        return _ort_listed("CPUExecutionProvider")
    if backend == "ort-openvino":
        return _openvino_problem()
    if backend == "ort-cuda":
        return _ort_listed("CUDAExecutionProvider") or _gpu_problem()
    if backend == "ort-trt":
        return _ort_listed("TensorrtExecutionProvider") or _gpu_problem() or _tensorrt_problem()
    if backend == "trt-engine":
        problem = _gpu_problem() or _tensorrt_problem()
        if problem is None and not _installed("tensorrt"):
            return "the tensorrt Python package is not installed (the native engine builds through it)"
        return problem
    raise AssertionError(f"backend {backend!r} of {sorted(BACKENDS)} has no probe")  # pragma: no cover


def bf16_native() -> bool:
    """Whether the CPU has native bf16 arithmetic: AMX-BF16 or AVX512-BF16 (``/proc/cpuinfo`` flags ``amx_bf16``,
    ``avx512_bf16``); False where they cannot be read."""
    return bool(env.cpu_flags() & set(env.BF16_FLAGS))
