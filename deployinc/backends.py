"""The one table of backend names: ``verify --providers``, ``bench --backends`` and every other command that
names a backend read it, so a name means the same thing everywhere.

========================  ===================================================================================
``torch``                 eager PyTorch as the user runs it (verify: on the CPU; bench: on ``--device``)
``torch-cuda``            eager PyTorch on the GPU
``torch-fused``           eager PyTorch after deployinc's prepare passes (Conv+BN folded)
``torch-compile``         ``torch.compile`` of the prepared module
``ort-cpu``               ONNX Runtime, CPUExecutionProvider              (alias ``cpu``)
``ort-cuda``              ONNX Runtime, CUDAExecutionProvider             (alias ``cuda``)
``ort-trt``               ONNX Runtime, TensorrtExecutionProvider         (aliases ``tensorrt``, ``trt``)
``ort-openvino``          ONNX Runtime, OpenVINOExecutionProvider plugin  (aliases ``openvino``, ``ov``)
                          (``pip install 'deployinc[openvino]'``; on the CPU; fp32, and bf16 as a compute precision)
``trt-engine``            a native TensorRT engine built from the ONNX file (alias ``tensorrt-engine``)
========================  ===================================================================================
"""

from __future__ import annotations

import difflib

from .errors import BadInputError

#: Canonical names -> what each runs, in the order they are listed.
BACKENDS: dict[str, str] = {
    "torch": "eager PyTorch as the user runs it",
    "torch-cuda": "eager PyTorch on the GPU",
    "torch-fused": "eager PyTorch after deployinc's prepare passes (Conv+BN folded)",
    "torch-compile": "torch.compile of the prepared module",
    "ort-cpu": "ONNX Runtime, CPU execution provider",
    "ort-cuda": "ONNX Runtime, CUDA execution provider",
    "ort-trt": "ONNX Runtime, TensorRT execution provider",
    "ort-openvino": "ONNX Runtime, OpenVINO execution provider plugin (onnxruntime-ep-openvino)",
    "trt-engine": "a native TensorRT engine built from the ONNX file",
}
#: Other accepted spellings -> canonical name.
ALIASES: dict[str, str] = {
    "cpu": "ort-cpu",
    "cuda": "ort-cuda",
    "tensorrt": "ort-trt",
    "trt": "ort-trt",
    "ort-tensorrt": "ort-trt",
    "openvino": "ort-openvino",
    "ov": "ort-openvino",
    "tensorrt-engine": "trt-engine",
    "engine": "trt-engine",
}
TORCH_BACKENDS = ("torch", "torch-cuda", "torch-fused", "torch-compile")
ONNX_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "ort-openvino", "trt-engine")
#: Backends that fuse layers so that exposing an intermediate changes what is computed.
FUSING_BACKENDS = ("ort-trt", "trt-engine")
#: Backends that need an NVIDIA GPU.
GPU_BACKENDS = ("torch-cuda", "ort-cuda", "ort-trt", "trt-engine")
#: Precision -> the backends that compute in it from an fp32 file (a compute precision, as TensorRT's build
#: precision is): bf16 is OpenVINO's inference precision hint; no other backend here computes in bf16.
COMPUTE_PRECISION_BACKENDS: dict[str, tuple[str, ...]] = {"bf16": ("ort-openvino",)}


def precision_problem(precision: str, backends: list[str] | tuple[str, ...]) -> str | None:
    """Why ``backends`` cannot run ``precision`` (``None`` when they can): only the backends of
    :data:`COMPUTE_PRECISION_BACKENDS` compute in bf16, so bf16 asked of another is refused, never run as fp32."""
    able = COMPUTE_PRECISION_BACKENDS.get(precision)
    if able is None:
        return None
    other = [b for b in backends if b not in able]
    if not other:
        return None
    return f"{precision} asked of {', '.join(other)}, which cannot compute in {precision} ({precision} runs on {', '.join(able)} only)"


def canonical(name: str) -> str | None:
    """The canonical name of ``name`` (case-insensitive), or None when it names no backend."""
    raw = name.strip().lower()
    return raw if raw in BACKENDS else ALIASES.get(raw)


def names_text() -> str:
    """``torch, torch-cuda, ... (aliases: cpu=ort-cpu, ...)`` for hints."""
    aliases = ", ".join(f"{a}={c}" for a, c in ALIASES.items())
    return f"{', '.join(BACKENDS)} (aliases: {aliases})"


def parse_backends(text: str | None, option: str = "--backends", default: str = "ort-cpu") -> list[str]:
    """``"cpu,torch"`` -> canonical names in the order given, without repeats.

    Raises:
        BadInputError: An unknown name (with the closest known one and the full list) or no name at all.
    """
    out: list[str] = []
    for raw in (t.strip() for t in (text if text is not None else default).split(",")):
        if not raw:
            continue
        name = canonical(raw)
        if name is None:
            close = ["cuda"] if raw.lower() in ("gpu", "nvidia") else difflib.get_close_matches(raw.lower(), [*BACKENDS, *ALIASES], n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadInputError(f"unknown backend {raw!r} in {option}{guess}", hint=f"known: {names_text()}")
        if name not in out:
            out.append(name)
    if not out:
        raise BadInputError(f"no backend given to {option}", hint=f"known: {names_text()}")
    return out
