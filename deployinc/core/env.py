"""The environment a result was measured in: library versions, execution providers, thread counts, CPU and host.

Every report that carries numbers (``deployinc verify --json``, benchmark reports) embeds :func:`environment`, so a
result can be traced to the versions and threads that produced it. Nothing here raises: what cannot be read is
left out or recorded as ``None``. Nothing here imports torch or initialises CUDA; torch's thread counts are read only
when torch is already imported (the process that ran a torch backend has it).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import socket
import sys
from typing import Any

from .._version import __version__

#: Distributions whose versions shape a result.
DISTRIBUTIONS = (
    "deployinc",
    "torch",
    "torchvision",
    "timm",
    "onnx",
    "onnxscript",
    "onnxsim",
    "onnxslim",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-ep-openvino",
    "tensorrt",
    "numpy",
    "pillow",
    "click",
)

#: Environment variables that change how many threads runtimes use, or how they spin.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "KMP_BLOCKTIME",
    "GOMP_SPINCOUNT",
    "ORT_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)


def versions() -> dict[str, str]:
    """Installed versions of :data:`DISTRIBUTIONS` (those not installed are left out)."""
    out: dict[str, str] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - a broken dist-info must not break a report
            continue
    if "deployinc" not in out:
        out["deployinc"] = __version__
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: ONNX Runtime plugin execution providers (loaded at run time, so not in ``get_available_providers``):
#: distribution -> the provider it adds.
ORT_PLUGINS = {"onnxruntime-ep-openvino": "OpenVINOExecutionProvider"}
#: /proc/cpuinfo flags of native bf16 arithmetic (what OpenVINO computes bf16 with).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: /proc/cpuinfo flags of fast int8 dot products (what ONNX Runtime's quantized kernels use).
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (the ``flags`` line of ``/proc/cpuinfo``); empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def speed_flags() -> list[str]:
    """The CPU features that decide int8 and bf16 speed, in :data:`INT8_FLAGS` + :data:`BF16_FLAGS` order (empty
    where /proc/cpuinfo cannot be read)."""
    have = cpu_flags()
    return [f for f in INT8_FLAGS + BF16_FLAGS if f in have]


def usable_cpus() -> int | None:
    """CPUs this process may run on (affinity), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def ort_providers() -> dict[str, Any]:
    """Execution providers the installed ONNX Runtime *lists* (which, for CUDA and TensorRT, does not mean usable)."""
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - missing or broken native library
        return {"available": [], "error": f"{type(exc).__name__}: {exc}"[:200]}
    out: dict[str, Any] = {"version": ort.__version__, "available": list(ort.get_available_providers())}
    try:
        out["device"] = ort.get_device()
    except Exception:  # noqa: BLE001 - get_device is informative only; the record goes on without it
        pass
    out["plugins"] = ort_plugins(ort)
    return out


def ort_plugins(ort: Any) -> dict[str, Any]:
    """The plugin providers of :data:`ORT_PLUGINS`: installed version (None: not installed), and whether this
    process registered it (it then has EP devices). Registers nothing."""
    try:
        registered = {d.ep_name for d in ort.get_ep_devices()}
    except Exception:  # noqa: BLE001 - an onnxruntime without the plugin API
        registered = set()
    out: dict[str, Any] = {}
    for dist, ep in ORT_PLUGINS.items():
        try:
            version: str | None = md.version(dist)
        except Exception:  # noqa: BLE001 - not installed, or a broken dist-info
            version = None
        out[dist] = {"provider": ep, "version": version, "registered": ep in registered}
    return out


def gpu_problem() -> str | None:
    """Why no CUDA device can be used here, or None when the driver sees one (does not create a CUDA context)."""
    try:
        return cuda_driver_problem()
    except Exception as exc:  # noqa: BLE001 - a probe must answer, not raise: the failure becomes the reason
        return f"could not probe the CUDA driver: {type(exc).__name__}"


def thread_counts(ort_threads: int | None = None) -> dict[str, Any]:
    """Thread settings in force: torch's (when torch is imported), ORT's as requested, and the env variables."""
    out: dict[str, Any] = {"usable_cpus": usable_cpus(), "ort_intra_op": ort_threads}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            out["torch_intra_op"] = torch.get_num_threads()
            out["torch_inter_op"] = torch.get_num_interop_threads()
        except Exception:  # noqa: BLE001 - thread counts are informative only; the record goes on without them
            pass
    out["env"] = {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ}
    return out


def environment(ort_threads: int | None = None) -> dict[str, Any]:
    """The environment record: versions, providers, thread counts, CPU, host, platform and Python.

    Args:
        ort_threads: The intra-op thread count given to ONNX Runtime sessions, to record with the rest.

    Returns:
        A JSON-serialisable dict with the keys ``versions``, ``python``, ``platform``, ``machine``, ``host``,
        ``cpu`` (model, logical and usable CPUs, native bf16 and int8 flags), ``ort_providers`` (the listed providers, the
        ORT build, and the plugin providers: installed, registered),
        ``gpu`` (``None`` when usable, else why not), and ``threads``.
    """
    flags = cpu_flags()
    env: dict[str, Any] = {
        "versions": versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "cpu": {
            "model": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
            "bf16_flags": sorted(flags & set(BF16_FLAGS)), "int8_flags": sorted(flags & set(INT8_FLAGS)),
        },
        "ort_providers": ort_providers(),
        "gpu_problem": gpu_problem(),
        "threads": thread_counts(ort_threads),
    }
    return env


def cuda_driver_problem() -> str | None:
    """Why no CUDA device can be used here, or None when the driver loads and sees at least one device.

    Asked before creating a CUDA or TensorRT session: without it, onnxruntime-gpu logs a page of errors about
    libraries it cannot load and quietly falls back to the CPU. This loads the driver library (``libcuda``) and
    counts devices through the driver API; it does not create a context.
    """
    import ctypes

    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    lib = None
    for n in names:
        try:
            lib = ctypes.CDLL(n)
            break
        except OSError:
            continue
    if lib is None:
        return f"no NVIDIA driver here ({names[0]} cannot be loaded)"
    try:
        if lib.cuInit(0) != 0:
            return "the NVIDIA driver is installed but cuInit failed (no usable GPU, or a driver/kernel mismatch)"
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return "the NVIDIA driver sees no CUDA device (check CUDA_VISIBLE_DEVICES)"
    except AttributeError:
        return f"{names[0]} is not a CUDA driver library"
    return None


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here, or None when it can: an NVIDIA driver that sees a GPU
    (:func:`cuda_driver_problem`), and TensorRT itself (the ``tensorrt`` Python package, or
    ONNX Runtime's TensorRT execution provider with TensorRT's ``libnvinfer`` loadable). Creates no CUDA context."""
    import ctypes
    import importlib.util

    try:
        problem = cuda_driver_problem()
    except Exception as exc:  # noqa: BLE001 - a probe must not fail the command
        problem = f"the CUDA driver could not be probed ({type(exc).__name__})"
    if problem is not None:
        return problem
    try:
        if importlib.util.find_spec("tensorrt") is not None:
            return None
    except (ImportError, ValueError):
        pass
    try:
        import onnxruntime as ort

        listed = "TensorrtExecutionProvider" in ort.get_available_providers()
    except Exception:  # noqa: BLE001 - an onnxruntime that cannot list providers lists none
        listed = False
    if listed:
        for lib in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll"):
            try:
                ctypes.CDLL(lib)
                return None
            except OSError:
                continue
        return "ONNX Runtime lists its TensorRT provider, but TensorRT's libnvinfer cannot be loaded"
    return "TensorRT is not installed (no tensorrt package, no ONNX Runtime TensorRT provider)"
