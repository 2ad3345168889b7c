"""The environment a result was measured in: library versions, execution providers, thread counts, CPU and host.

:func:`machine` is the one typed record of the machine (CPU model, usable CPUs, its int8/bf16 features, the GPU,
host, platform, versions) with :meth:`Machine.slug`, the file-name part of every ``docs/benchmarks/<kind>-<machine>``
page. Every report that carries numbers (``deployinc verify --json``, benchmark reports) embeds :func:`environment`
(the machine as JSON, plus providers and threads), so a result can be traced to the versions and threads that
produced it; bench's record (:mod:`deployinc.bench.environment`) extends it. Nothing here raises: what cannot be read
is left out or recorded as ``None``. Nothing here imports torch or initialises CUDA; torch's thread counts are read
only when torch is already imported (the process that ran a torch backend has it).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from . import hardware

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


#: The variables that cap oneDNN's instruction set (OpenVINO's CPU plugin runs on oneDNN and honours them; ONNX
#: Runtime's own CPU kernels ignore them).
ISA_CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
#: A cap -> the prefixes of the /proc/cpuinfo flags it hides. Caps below AVX2 (SSE41, AVX) count as AVX2: oneDNN's
#: int8 kernels there multiply u8 by s8 with PMADDUBSW too, so they saturate as AVX2's do.
ISA_CAP_HIDES = {
    "SSE41": ("avx512", "avx_vnni", "amx"),
    "AVX": ("avx512", "avx_vnni", "amx"),
    "AVX2": ("avx512", "avx_vnni", "amx"),
    "AVX2_VNNI": ("avx512", "amx"),
    "AVX2_VNNI_2": ("avx512", "amx"),
    "AVX512_CORE": ("avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx"),
    "AVX512_CORE_VNNI": ("avx512_bf16", "avx512_fp16", "avx_vnni", "amx"),
    "AVX512_CORE_BF16": ("avx512_fp16", "avx_vnni", "amx"),
    "AVX512_CORE_FP16": ("amx",),
    "AVX10_1_512": ("amx",),  # oneDNN's current name of AVX512_CORE_FP16
    "AVX512_CORE_AMX": ("amx_fp16",),
    "AVX10_1_512_AMX": ("amx_fp16",),
}


def isa_cap() -> str | None:
    """The oneDNN instruction-set cap in force (``ONEDNN_MAX_CPU_ISA=AVX2``), as ``NAME=VALUE``; None where none
    is set or it hides nothing this CPU has (``ALL``, ``DEFAULT``, the top AMX level, a value oneDNN does not know,
    ``AVX2`` on a CPU without AVX-512 or VNNI)."""
    for var in ISA_CAP_VARS:
        value = os.environ.get(var, "").strip().upper()
        if value:
            cap = f"{var}={value}"
            have = cpu_flags()
            return cap if value in ISA_CAP_HIDES and capped(have, cap) != have else None
    return None


def capped(flags: set[str], cap: str | None) -> set[str]:
    """``flags`` less those the cap (:func:`isa_cap`'s ``NAME=VALUE``) hides from oneDNN."""
    hides = ISA_CAP_HIDES.get((cap or "").partition("=")[2], ())
    return {f for f in flags if not f.startswith(hides)} if hides else set(flags)


def runtime_flags() -> set[str]:
    """The CPU's flags as the int8 and bf16 runtimes may use them: :func:`cpu_flags` less what an
    ``ONEDNN_MAX_CPU_ISA`` cap hides (deployinc then chooses for the capped path; ONNX Runtime, which ignores the
    cap, computes the same numbers with the recipe chosen for it)."""
    return capped(cpu_flags(), isa_cap())


def speed_flags() -> list[str]:
    """The CPU features that decide int8 and bf16 speed, in :data:`INT8_FLAGS` + :data:`BF16_FLAGS` order, as the
    runtimes may use them (:func:`runtime_flags`; empty where /proc/cpuinfo cannot be read)."""
    have = runtime_flags()
    return [f for f in INT8_FLAGS + BF16_FLAGS if f in have]


def features_text(flags: list[str] | tuple[str, ...], cap: str | None) -> str:
    """``avx512_vnni, avx512_bf16`` (or ``none``), with the cap that hid the rest, for a report's machine line."""
    text = ", ".join(flags) or "none"
    return f"{text} ({cap}: OpenVINO's oneDNN kernels capped there; ONNX Runtime ignores the cap)" if cap else text


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


@dataclass(frozen=True)
class Machine:
    """The machine a result was measured on.

    Attributes:
        cpu_model: ``/proc/cpuinfo``'s model name (or what :mod:`platform` knows).
        logical_cpus: CPUs the machine has; ``usable_cpus``: those this process may run on (affinity).
        int8_flags, bf16_flags: The CPU's fast-int8 and native-bf16 features (:data:`INT8_FLAGS`, :data:`BF16_FLAGS`)
            that the runtimes may use (:func:`runtime_flags`).
        isa_cap: The ``ONEDNN_MAX_CPU_ISA`` cap in force (:func:`isa_cap`), None without one.
        gpu: The first NVIDIA GPU's name (``nvidia-smi``) or a Jetson's board; None without one.
        host, platform, arch, python: Host name, :func:`platform.platform`, :func:`platform.machine`, Python version.
        versions: :func:`versions`.
    """

    cpu_model: str
    logical_cpus: int | None
    usable_cpus: int | None
    int8_flags: tuple[str, ...] = ()
    bf16_flags: tuple[str, ...] = ()
    isa_cap: str | None = None
    gpu: str | None = None
    host: str = ""
    platform: str = ""
    arch: str = ""
    python: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def speed_flags(self) -> list[str]:
        """The int8 then the bf16 features."""
        return [*self.int8_flags, *self.bf16_flags]

    @property
    def features(self) -> str:
        """The int8 and bf16 features for a report (:func:`features_text`)."""
        return features_text(self.speed_flags, self.isa_cap)

    def cpu_record(self) -> dict[str, Any]:
        """The ``cpu`` block of :func:`environment` (JSON readers rely on these keys)."""
        return {"model": self.cpu_model, "logical_cpus": self.logical_cpus, "usable_cpus": self.usable_cpus,
                "bf16_flags": sorted(self.bf16_flags), "int8_flags": sorted(self.int8_flags), "isa_cap": self.isa_cap}  # fmt: skip

    def slug(self, cpus: bool = True, accelerator: bool = False) -> str:
        """The machine as a file-name part, lower case: the CPU's maker and family (``amd-epyc``, ``intel-xeon``),
        then the usable CPUs (``amd-epyc-2cpu``) unless ``cpus`` is false; ``accelerator`` puts the GPU's name
        first, or ``cpu`` without one (``nvidia-h100-80gb-hbm3-amd-epyc-16cpu``, ``cpu-amd-epyc-2cpu``)."""
        words = re.sub(r"\(R\)|\(TM\)|\bCPU\b|\bProcessor\b|@.*", " ", self.cpu_model).lower().split()[:2] or ["cpu"]
        parts = ([self.gpu or "cpu"] if accelerator else []) + words + ([f"{self.usable_cpus or 1}cpu"] if cpus else [])
        return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:80]


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name as ``nvidia-smi`` gives it, or a Jetson's board; None without either."""
    board = (hardware.jetson() or {}).get("model")
    if board:
        return str(board)
    gpus = hardware.nvidia_gpus() or []
    return str(gpus[0].get("name")) if gpus and gpus[0].get("name") else None


def machine(gpu: bool = True) -> Machine:
    """This machine's record; ``gpu=False`` skips asking ``nvidia-smi`` (``gpu`` is then None)."""
    flags = runtime_flags()
    return Machine(
        cpu_model=cpu_model(), logical_cpus=os.cpu_count(), usable_cpus=usable_cpus(),
        int8_flags=tuple(f for f in INT8_FLAGS if f in flags), bf16_flags=tuple(f for f in BF16_FLAGS if f in flags), isa_cap=isa_cap(),
        gpu=gpu_name() if gpu else None, host=socket.gethostname(), platform=platform.platform(), arch=platform.machine(),
        python=platform.python_version(), versions=versions(),
    )  # fmt: skip


def machine_slug(cpus: bool = True, accelerator: bool = False) -> str:
    """:meth:`Machine.slug` of this machine (asks ``nvidia-smi`` only for ``accelerator``)."""
    return machine(gpu=accelerator).slug(cpus, accelerator)


def environment(ort_threads: int | None = None) -> dict[str, Any]:
    """The environment record: versions, providers, thread counts, CPU, host, platform and Python.

    Args:
        ort_threads: The intra-op thread count given to ONNX Runtime sessions, to record with the rest.

    Returns:
        A JSON-serialisable dict: :func:`machine` as the keys ``versions``, ``python``, ``platform``, ``machine``
        (the architecture), ``host``, ``cpu`` (model, logical and usable CPUs, native bf16 and int8 flags) and ``gpu``
        (its name, or None); ``ort_providers`` (the listed providers, the ORT build, and the plugin providers:
        installed, registered), ``gpu_problem`` (``None`` when a CUDA device is usable, else why not), and ``threads``.
    """
    m = machine()
    env: dict[str, Any] = {
        "versions": m.versions,
        "python": m.python,
        "platform": m.platform,
        "machine": m.arch,
        "host": m.host,
        "cpu": m.cpu_record(),
        "gpu": m.gpu,
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
