"""Runners: one interface over every backend (eager torch, ONNX Runtime CPU/CUDA/TensorRT/OpenVINO, TensorRT engines).

:class:`BaseRunner` is the interface (``activate`` / ``infer`` / ``deactivate``); ``torch_runner.py`` runs eager
torch, ``ort.py`` ONNX Runtime on any provider, ``openvino.py`` registers the OpenVINO plugin provider. Which
backend name builds which runner, and what each backend can do, is in :mod:`deployinc.backends`, one record per
backend; nothing here names a backend.
"""

from __future__ import annotations

from .base import BaseRunner

__all__ = ["BaseRunner"]
