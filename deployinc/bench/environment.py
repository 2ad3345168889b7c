"""The environment record every benchmark report carries.

It is :func:`deployinc.core.env.environment` (the machine: versions, CPU and its int8/bf16 features, GPU, host;
providers and threads) extended with what a benchmark needs besides: the CPU details of
:func:`deployinc.core.hardware.cpu_details` (cgroup quota, governor), the GPUs as ``nvidia-smi`` reports them
(clocks, driver, power limit), the CUDA/cuDNN/TensorRT versions, a Jetson's power mode, and the thread settings in
force for torch and ONNX Runtime.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from typing import Any

from ..core import hardware
from ..core.env import environment
from ..core.precisions import BF16, INT8


def _base(threads: int | None) -> dict[str, Any]:
    try:
        base = dict(environment(ort_threads=threads))
    except Exception as exc:  # noqa: BLE001 - a report without the shared record beats no report
        return {"source": f"deployinc.core.env.environment failed: {type(exc).__name__}: {exc}"}
    base.setdefault("source", "deployinc.core.env.environment")
    return base


def thread_settings(threads: int | None) -> dict[str, Any]:
    """Threads given to each runtime (the environment variables that change threading are the shared record's)."""
    out: dict[str, Any] = {
        "requested": threads,
        "ort_intra_op": threads,
        "ort_inter_op": 1 if threads else None,
        "ort_execution_mode": "sequential",
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
        try:
            out["torch_parallel"] = next(
                (ln.strip() for ln in torch.__config__.parallel_info().splitlines() if "OpenMP" in ln or "TBB" in ln), None
            )
        except Exception:  # noqa: BLE001 - torch's parallel_info is informative only
            pass
    return out


def cuda_versions() -> dict[str, Any]:
    """CUDA and cuDNN versions torch was built with and sees, and the TensorRT version if installed.

    Imports torch (a benchmark imports it anyway) but does not initialise CUDA beyond ``is_available``.
    """

    out: dict[str, Any] = {}
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
        if out["cuda_available"]:
            out["cudnn"] = torch.backends.cudnn.version()
            out["gpu_torch"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken torch install must not break the report
        pass
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs", "onnxruntime-gpu", "onnxruntime"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def bench_environment(threads: int | None) -> dict[str, Any]:
    """The full record for a report (see the module docstring)."""
    env = _base(threads)
    env["cpu_bench"] = hardware.cpu_details()
    env["threads"] = {**(env.get("threads") or {}), **thread_settings(threads)}
    env["gpus"] = hardware.nvidia_gpus()
    env["cuda"] = cuda_versions()
    env["jetson"] = hardware.jetson()
    return env


def _features(cpu: dict[str, Any]) -> str:
    """``; int8: ..., bf16: ...`` from the shared record's CPU flags (empty when it has none of them)."""
    parts = [f"{kind} {', '.join(cpu[key])}" for kind, key in ((INT8, "int8_flags"), (BF16, "bf16_flags")) if cpu.get(key)]
    return f"; {'; '.join(parts)}" if parts else ""


def environment_lines(env: dict[str, Any]) -> list[str]:
    """A few human lines for Markdown and screen reports."""
    cpu = env.get("cpu_bench", {})
    th = env.get("threads", {})
    v = env.get("versions", {})
    lines = [
        f"CPU: {cpu.get('model', '?')}, {cpu.get('usable_cpus', '?')} usable of {cpu.get('logical_cpus', '?')} logical CPUs"
        + (f", cgroup quota {cpu['cgroup_cpu_quota']} CPUs" if cpu.get("cgroup_cpu_quota") else "")
        + (f", governor {cpu['governor']}" if cpu.get("governor") else "")
        + _features(env.get("cpu") or {}),
        f"Threads: torch intra-op {th.get('torch_intra_op', '?')}, ORT intra-op {th.get('ort_intra_op', '?')} "
        f"(inter-op {th.get('ort_inter_op', '?')}, sequential)"
        + (f"; env {th['env']}" if th.get("env") else ""),
    ]
    gpus = env.get("gpus")
    if gpus:
        for i, g in enumerate(gpus):
            lines.append(
                f"GPU {i}: {g.get('name', '?')}, driver {g.get('driver_version', '?')}, "
                f"SM clock {g.get('clocks.sm', '?')}/{g.get('clocks.max.sm', '?')} MHz, "
                f"memory clock {g.get('clocks.mem', '?')}/{g.get('clocks.max.mem', '?')} MHz, "
                f"power limit {g.get('power.limit', '?')} W, {g.get('pstate', '')}"
            )
    else:
        lines.append(f"GPU: none ({env.get('gpu_problem') or 'nvidia-smi not found'})")
    cuda = env.get("cuda", {})
    if cuda.get("torch_cuda") or cuda.get("cudnn"):
        lines.append(f"CUDA (torch build): {cuda.get('torch_cuda')}, cuDNN {cuda.get('cudnn')}")
    j = env.get("jetson")
    if j:
        lines.append(f"Jetson: {j.get('model')}, {j.get('l4t')}, power mode: {j.get('power_mode') or j.get('power_mode_note')}")
    vers = ", ".join(f"{k} {v[:40]}" for k, v in v.items()) if isinstance(v, dict) else str(v)
    lines.append(f"Versions: {vers}")
    lines.append(f"Platform: {env.get('platform', '?')}, Python {env.get('python', '?')}")
    return lines
