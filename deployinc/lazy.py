"""Lazy imports of heavy or optional dependencies.

``deployinc --help`` must not import torch, and a missing optional backend (TensorRT, timm, matplotlib) must be a
clear message rather than an ImportError. Every import of such a module goes through :func:`require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import BackendUnavailable

#: Module name -> how to install it.
INSTALL_HINTS = {
    "tensorrt": "TensorRT's Python bindings need its runtime libraries: install TensorRT for your CUDA version "
    "(pip install tensorrt-cu13, or JetPack on a Jetson)",
    "timm": "pip install 'deployinc[timm]'",
    "onnxslim": "pip install 'deployinc[slim]'",
    "matplotlib": "pip install 'deployinc[plot]'",
    "rich": "pip install 'deployinc[rich]'",
    "onnxsim": "pip install onnxsim",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu on Linux/Windows x86_64)",
    "onnxruntime_ep_openvino": "pip install 'deployinc[openvino-ep]'",
}


def require(name: str, purpose: str | None = None) -> ModuleType:
    """Import ``name`` or raise :class:`BackendUnavailable` with an install hint.

    Args:
        name: Importable module name.
        purpose: What the module is needed for, used in the message.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # also OSError-like failures of native libs surface as ImportError
        top = name.split(".")[0]
        what = f" (needed for {purpose})" if purpose else ""
        raise BackendUnavailable(
            f"{name} is not importable{what}: {exc}", hint=INSTALL_HINTS.get(top, f"pip install {top}")
        ) from exc


def available(name: str) -> bool:
    """Whether ``name`` can be imported, without raising."""
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False
    return True
