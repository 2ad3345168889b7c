"""The hardware a result ran on, beyond what :mod:`deployinc.core.env` reads from ``/proc/cpuinfo``: the NVIDIA GPUs
as ``nvidia-smi`` reports them, a Jetson's board and power mode, and the CPU details a benchmark needs (cgroup CPU
quota, frequency governor).

Everything here reads what is there and returns ``None`` (or leaves a key out) for what is not: no exception
leaves these functions, and nothing initialises CUDA. ``nvidia-smi`` and ``nvpmodel`` are run with a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

_SMI_FIELDS = (
    "name",
    "driver_version",
    "memory.total",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "clocks.max.mem",
    "clocks.applications.graphics",
    "power.limit",
    "persistence_mode",
    "pstate",
    "compute_cap",
)


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip()


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return None


def nvidia_gpus() -> list[dict[str, Any]] | None:
    """One dict per GPU from ``nvidia-smi`` (name, driver, memory, current/max SM and memory clocks in MHz, power
    limit, persistence mode, performance state, compute capability); None when nvidia-smi is missing or fails."""
    text = _run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits"])
    if text is None:
        # Older drivers do not know every field (compute_cap arrived in 510); ask again without it.
        text = _run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS[:-1])}", "--format=csv,noheader,nounits"])
        if text is None:
            return None
    gpus = []
    for line in text.splitlines():
        values = [v.strip() for v in line.split(",")]
        gpus.append({k: v for k, v in zip(_SMI_FIELDS, values) if v and v not in ("[N/A]", "N/A")})
    return gpus


def jetson() -> dict[str, Any] | None:
    """L4T release, board model, ``nvpmodel -q`` power mode and GPU/EMC frequencies on a Jetson; None elsewhere."""
    release = _read("/etc/nv_tegra_release")
    model = (_read("/proc/device-tree/model") or "").strip("\x00").strip() or None
    if release is None and not (model and "jetson" in model.lower()):
        return None
    out: dict[str, Any] = {"l4t": release.splitlines()[0] if release else None, "model": model}
    mode = _run(["nvpmodel", "-q"])
    if mode is not None:
        out["power_mode"] = " ".join(line.strip() for line in mode.splitlines() if line.strip())
    else:
        out["power_mode"] = None
        out["power_mode_note"] = "nvpmodel -q is not readable (run with sudo, or install nvpmodel)"
    for pattern in ("/sys/devices/platform/*gpu*/devfreq/*", "/sys/devices/*gpu*/devfreq/*", "/sys/class/devfreq/*gpu*"):
        for d in sorted(Path("/").glob(pattern.lstrip("/"))):
            cur, mx = _read(d / "cur_freq"), _read(d / "max_freq")
            if cur:
                out["gpu_freq_hz"] = int(cur) if cur.isdigit() else cur
                out["gpu_max_freq_hz"] = int(mx) if mx and mx.isdigit() else mx
                break
        if "gpu_freq_hz" in out:
            break
    emc = _read("/sys/kernel/debug/bpmp/debug/clk/emc/rate")
    if emc:
        out["emc_freq_hz"] = int(emc) if emc.isdigit() else emc
    return out


def cpu_details() -> dict[str, Any]:
    """CPU model, logical CPUs, the CPUs this process may use, a cgroup CPU quota, and the frequency governor."""
    out: dict[str, Any] = {"logical_cpus": os.cpu_count()}
    try:
        out["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        out["usable_cpus"] = os.cpu_count()
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            out["model"] = value.strip()
            break
    if "model" not in out:
        import platform

        out["model"] = platform.processor() or platform.machine()
    quota = _read("/sys/fs/cgroup/cpu.max")
    if quota and not quota.startswith("max"):
        q, _, period = quota.partition(" ")
        try:
            out["cgroup_cpu_quota"] = round(int(q) / int(period), 2)
        except ValueError:
            pass
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov:
        out["governor"] = gov
    return out
