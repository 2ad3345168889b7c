"""Runners: one interface over every backend (eager torch, ONNX Runtime CPU/CUDA/TensorRT/OpenVINO, TensorRT engines).

Backends by name (used by ``deployinc verify --providers`` and ``deployinc bench --backends``):

========================  ===========================================================
``torch``                 eager PyTorch as a user runs it (the reference)
``torch-fused``           eager PyTorch after deployinc's prepare passes (Conv+BN folded)
``torch-compile``         ``torch.compile`` of the prepared module
``ort-cpu``               ONNX Runtime, CPUExecutionProvider
``ort-cuda``              ONNX Runtime, CUDAExecutionProvider
``ort-trt``               ONNX Runtime, TensorrtExecutionProvider
``ort-openvino``          ONNX Runtime, OpenVINOExecutionProvider (a plugin: onnxruntime-ep-openvino)
``trt-engine``            a native TensorRT engine built from the ONNX file
========================  ===========================================================
"""

from __future__ import annotations

from .base import BaseRunner

from ..backends import ALIASES as PROVIDER_ALIASES
from ..backends import BACKENDS as _TABLE
from ..backends import ONNX_BACKENDS, TORCH_BACKENDS, names_text
from ..backends import parse_backends as parse
from ..errors import BadInputError

BACKENDS = tuple(_TABLE)

__all__ = ["BACKENDS", "ONNX_BACKENDS", "PROVIDER_ALIASES", "TORCH_BACKENDS", "BaseRunner", "parse_backends"]


def parse_backends(text: str, allowed: tuple[str, ...] = BACKENDS) -> list[str]:
    """Parse ``"torch,ort-cpu"`` (aliases accepted, see :mod:`deployinc.backends`) into backend names.

    Raises:
        BadInputError: A name is not a known backend, or not one of ``allowed``.
    """
    names = parse(text)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise BadInputError(f"backend {bad[0]!r} is not available here", hint=f"known: {names_text()}")
    return names
