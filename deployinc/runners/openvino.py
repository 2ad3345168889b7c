"""The OpenVINO execution provider plugin (``onnxruntime-ep-openvino``) behind the ``ort-openvino`` backend.

The plugin is a shared library that ONNX Runtime loads at run time (``register_execution_provider_library``, once
per process: registering it twice raises). It then offers *EP devices*; a session uses one through
``SessionOptions.add_provider_for_devices``. The provider's ``precision`` option is ignored by the plugin, so the
precision goes to OpenVINO itself, in ``load_config`` (``{"CPU": {"INFERENCE_PRECISION_HINT": ...}}``), with the
thread count (``INFERENCE_NUM_THREADS``: the plugin does not read the session's intra-op count).

fp32 means fp32: without a hint, OpenVINO computes in bf16 on CPUs with AMX or AVX512-BF16 (an error near 1e-2
relative), so an fp32 runner always asks for ``f32``. ``bf16`` asks for ``bf16``, and is refused on a CPU whose
OpenVINO device does not list BF16 among its capabilities (OpenVINO would compute in f32 there and call it bf16).
fp16 and int8 files carry their own types and run at the ``f32`` hint.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..errors import BackendUnavailable
from ..core.precisions import BF16, FP16, FP32, INT8

EP_NAME = "OpenVINOExecutionProvider"
DISTRIBUTION = "onnxruntime-ep-openvino"
INSTALL_HINT = "pip install 'deployinc[openvino-ep]'"
#: The runner's precision -> OpenVINO's INFERENCE_PRECISION_HINT.
PRECISION_HINTS = {FP32: "f32", BF16: BF16, FP16: "f32", INT8: "f32"}
#: The name deployinc registers the library under (any name does; a second registration under it raises).
REGISTRATION_NAME = "openvino"

_lock = threading.Lock()
_failed: list[str] = []  # why registration failed in this process (it is not tried again)


def plugin() -> Any:
    """The ``onnxruntime_ep_openvino`` module.

    Raises:
        BackendUnavailable: It is not installed, or cannot be imported.
    """
    try:
        import onnxruntime_ep_openvino as ov
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"{DISTRIBUTION} is not installed (the OpenVINO execution provider plugin)", hint=INSTALL_HINT) from exc
    except ImportError as exc:
        raise BackendUnavailable(f"{DISTRIBUTION} cannot be imported: {str(exc)[:200]}", hint=INSTALL_HINT) from exc
    return ov


def _ep_name(ov: Any) -> str:
    try:
        return str(ov.get_ep_name())
    except Exception:  # noqa: BLE001 - an older or odd package: the documented name
        return EP_NAME


def _devices(ort: Any, name: str) -> list[Any]:
    try:
        return [d for d in ort.get_ep_devices() if d.ep_name == name]
    except Exception:  # noqa: BLE001 - an onnxruntime without the plugin API
        return []


def register(ort: Any) -> list[Any]:
    """Register the plugin library with ``ort`` once per process (unless something else in this process has) and
    return its EP devices.

    Raises:
        BackendUnavailable: The package is missing, or the library cannot be registered.
    """
    ov = plugin()
    name = _ep_name(ov)
    with _lock:
        found = _devices(ort, name)
        if found:
            return found
        if _failed:
            raise BackendUnavailable(_failed[0], hint=INSTALL_HINT)
        if not hasattr(ort, "register_execution_provider_library"):
            _failed.append(f"onnxruntime {ort.__version__} cannot load plugin execution providers (1.22 or newer can)")
            raise BackendUnavailable(_failed[0], hint=f"pip install -U onnxruntime; {INSTALL_HINT}")
        try:
            ort.register_execution_provider_library(REGISTRATION_NAME, ov.get_library_path())
        except Exception as exc:  # noqa: BLE001 - ORT raises Fail; a missing library FileNotFoundError
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if "already registered" not in text:
                _failed.append(f"the OpenVINO plugin library cannot be registered with onnxruntime {ort.__version__}: {text}")
                raise BackendUnavailable(_failed[0], hint=INSTALL_HINT) from exc
        return _devices(ort, name)


def cpu_device(ort: Any) -> Any:
    """The plugin's CPU device (not its ``AUTO`` meta-device).

    Raises:
        BackendUnavailable: The plugin cannot be registered, or offers no CPU device.
    """
    devices = register(ort)
    cpu = [d for d in devices if _is_cpu(ort, d) and "ov_meta_device" not in _metadata(d)]
    if not cpu:
        offered = ", ".join(sorted({str(_metadata(d).get("ov_device", "?")) for d in devices})) or "none"
        raise BackendUnavailable(f"the OpenVINO plugin offers no CPU device here (devices: {offered})", hint=INSTALL_HINT)
    return cpu[0]


def _is_cpu(ort: Any, device: Any) -> bool:
    try:
        return bool(device.device.type == ort.OrtHardwareDeviceType.CPU)
    except Exception:  # noqa: BLE001 - an older onnxruntime's device object: fall back to the plugin's metadata
        return str(_metadata(device).get("ov_device", "")).upper() == "CPU"


def _metadata(device: Any) -> dict[str, Any]:
    try:
        return dict(device.ep_metadata)
    except Exception:  # noqa: BLE001 - metadata is informative only; a device without it is still listed
        return {}


def capabilities(device: Any) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of a device (``BF16 WINOGRAD FP32 FP16 INT8 ...``)."""
    return str(_metadata(device).get("OPTIMIZATION_CAPABILITIES", "")).split()


def load_config(precision: str, threads: int | None) -> dict[str, Any]:
    """OpenVINO's CPU properties for a runner's precision and thread count."""
    cpu: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS.get(precision, "f32")}
    if threads:
        cpu["INFERENCE_NUM_THREADS"] = int(threads)
    return {"CPU": cpu}


def add_to(so: Any, ort: Any, precision: str, threads: int | None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add the OpenVINO CPU device to session options ``so``; returns what was set, for the runner's details.

    ``options`` are further provider options (a ``load_config`` there replaces deployinc's).

    Raises:
        BackendUnavailable: No plugin or CPU device here, or bf16 asked of a CPU OpenVINO cannot compute bf16 on.
    """
    device = cpu_device(ort)
    caps = capabilities(device)
    if precision == BF16 and "BF16" not in caps:
        raise BackendUnavailable(
            f"this CPU has no native bf16 (OpenVINO's capabilities: {' '.join(caps) or 'none'}): "
            "OpenVINO would compute in f32",
            hint="bf16 needs AMX-BF16 or AVX512-BF16 (Xeon Sapphire Rapids or newer, Zen 4 or newer); run fp32 here",
        )
    config = load_config(precision, threads)
    opts = {k: str(v) for k, v in (options or {}).items()}
    opts.setdefault("load_config", json.dumps(config))
    so.add_provider_for_devices([device], opts)
    meta = _metadata(device)
    return {
        "openvino_plugin": meta.get("version"),
        "openvino_device": meta.get("FULL_DEVICE_NAME") or meta.get("ov_device"),
        "openvino_capabilities": caps,
        "openvino_load_config": json.loads(opts["load_config"]) if opts["load_config"].startswith("{") else opts["load_config"],
    }
