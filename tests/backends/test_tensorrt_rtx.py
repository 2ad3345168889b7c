"""The ort-trt-rtx backend (TensorRT for RTX through ONNX Runtime's plugin provider, deployinc/backends/
tensorrt_rtx.py), as far as a machine without an NVIDIA GPU or the 146 MB wheel allows: its record, its probe's
reasons, the factory's refusal, and the plugin registration against a stand-in of the wheel's module."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

import deployinc.backends as B
from deployinc.backends import tensorrt_rtx as RTX
from deployinc.errors import BackendUnavailable
from deployinc.factory import onnx_runner


def test_the_name_its_aliases_and_what_it_can_do():
    rec = B.get("trt-rtx")
    assert rec.name == "ort-trt-rtx" == B.canonical("TensorRT-RTX") == B.canonical("nv-tensorrt-rtx")
    assert rec.device == "gpu" and "ort-trt-rtx" in B.GPU_BACKENDS and "ort-trt-rtx" in B.ISOLATED_BACKENDS
    assert rec.onnx and rec.fuses and rec.tolerance == "tensorrt" and B.check_target("trt-rtx") == "tensorrt"
    assert {p: rec.artifact(p) for p in ("fp32", "fp16", "bf16", "int8")} == {"fp32": "fp32", "fp16": "fp16", "bf16": None, "int8": None}
    assert not any("ort-trt-rtx" in B.targets(t) for t in ("cpu", "cuda", "tensorrt"))  # deploy tries it only when named
    assert "ort-trt-rtx" not in B.BENCH_DEFAULT.split(",")
    assert any("register_execution_provider_library" in ln for ln in rec.usage("fp16", None))  # type: ignore[misc]


def test_the_probe_says_plainly_why_it_cannot_run(monkeypatch):
    real = importlib.util.find_spec
    missing = lambda name, *a: None if name == RTX.MODULE else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", missing)
    monkeypatch.setattr(RTX, "gpu_problem", lambda: "no NVIDIA GPU (made up)")
    assert B.backend_problem("trt-rtx") == f"{RTX.DISTRIBUTION} is not installed; no NVIDIA GPU (made up)"
    monkeypatch.setattr(RTX, "gpu_problem", lambda: None)
    assert B.backend_problem("trt-rtx") == f"{RTX.DISTRIBUTION} is not installed"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == RTX.MODULE else real(name, *a))
    assert B.backend_problem("trt-rtx") is None
    monkeypatch.setattr(RTX, "gpu_problem", lambda: "no NVIDIA GPU (made up)")
    assert B.backend_problem("trt-rtx") == "no NVIDIA GPU (made up)"


def test_without_a_gpu_the_factory_refuses_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(RTX, "gpu_problem", lambda: "no NVIDIA GPU (made up)")
    with pytest.raises(BackendUnavailable, match="TensorRT-RTX cannot run: no NVIDIA GPU") as e:
        onnx_runner("ort-trt-rtx", tmp_path / "m.onnx")
    assert RTX.DISTRIBUTION in (e.value.hint or "")


def test_a_missing_wheel_is_backend_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, RTX.MODULE, None)
    with pytest.raises(BackendUnavailable, match=f"{RTX.DISTRIBUTION} is not installed"):
        RTX.plugin()


class _Device:
    def __init__(self, ep_name: str):
        self.ep_name = ep_name


def _fake(monkeypatch, offers: bool):
    """A stand-in of the wheel's module and an onnxruntime that registers it as the real ones do."""
    plugin = types.ModuleType(RTX.MODULE)
    plugin.get_ep_name = lambda: RTX.EP_NAME  # type: ignore[attr-defined]
    plugin.get_library_path = lambda: "/opt/x/libonnxruntime_providers_nv_tensorrt_rtx.so"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, RTX.MODULE, plugin)
    calls: list[tuple[str, str]] = []
    registered: list[_Device] = []

    def register(name: str, path: str) -> None:
        if calls:
            raise RuntimeError(f"library {name} already registered")
        calls.append((name, path))
        registered.extend([_Device(name)] if offers else [])

    ort = types.SimpleNamespace(__version__="1.23.0", register_execution_provider_library=register,
                                get_ep_devices=lambda: [_Device("CPUExecutionProvider"), *registered])  # fmt: skip
    return ort, calls


def test_the_plugin_is_registered_once_and_its_device_found(monkeypatch):
    ort, calls = _fake(monkeypatch, offers=True)
    first = RTX.devices(ort)
    again = RTX.devices(ort)
    assert [d.ep_name for d in first] == [RTX.EP_NAME] == [d.ep_name for d in again]
    assert calls == [(RTX.EP_NAME, "/opt/x/libonnxruntime_providers_nv_tensorrt_rtx.so")]


def test_a_plugin_with_no_device_says_so(monkeypatch):
    ort, _ = _fake(monkeypatch, offers=False)
    with pytest.raises(BackendUnavailable, match="offers no device here"):
        RTX.devices(ort)
    old = types.SimpleNamespace(__version__="1.20.0", get_ep_devices=lambda: [])
    with pytest.raises(BackendUnavailable, match="cannot load plugin execution providers"):
        RTX.devices(old)
