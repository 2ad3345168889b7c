"""Runners: one interface over every backend (eager torch, ONNX Runtime CPU/CUDA/TensorRT, TensorRT engines).

Backends by name (used by ``deployinc verify --providers`` and ``deployinc bench --backends``):

========================  ===========================================================
``torch``                 eager PyTorch as a user runs it (the reference)
``torch-fused``           eager PyTorch after deployinc's prepare passes (Conv+BN folded)
``torch-compile``         ``torch.compile`` of the prepared module
``ort-cpu``               ONNX Runtime, CPUExecutionProvider
``ort-cuda``              ONNX Runtime, CUDAExecutionProvider
``ort-trt``               ONNX Runtime, TensorrtExecutionProvider
``tensorrt``              a native TensorRT engine built from the ONNX file
========================  ===========================================================
"""

from __future__ import annotations

from .base import BaseRunner

TORCH_BACKENDS = ("torch", "torch-fused", "torch-compile")
ONNX_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "tensorrt")
BACKENDS = TORCH_BACKENDS + ONNX_BACKENDS
#: verify's --providers short names -> backend
PROVIDER_ALIASES = {"cpu": "ort-cpu", "cuda": "ort-cuda", "tensorrt": "ort-trt", "trt": "ort-trt"}

__all__ = ["BACKENDS", "ONNX_BACKENDS", "PROVIDER_ALIASES", "TORCH_BACKENDS", "BaseRunner", "parse_backends"]


def parse_backends(text: str, allowed: tuple[str, ...] = BACKENDS) -> list[str]:
    """Parse ``"torch,ort-cpu"`` (aliases accepted) into backend names, refusing unknown ones.

    Raises:
        BadInputError: A name is not a known backend (the known are listed in the hint).
    """
    from ..errors import BadInputError

    out = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        name = PROVIDER_ALIASES.get(raw, raw)
        if name not in allowed:
            raise BadInputError(f"unknown backend {raw!r}", hint=f"known: {', '.join(allowed)}")
        if name not in out:
            out.append(name)
    if not out:
        raise BadInputError("no backend given", hint=f"known: {', '.join(allowed)}")
    return out
