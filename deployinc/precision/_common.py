"""Helpers shared by the precision modules: CPU sessions and batches (the image input is
:mod:`deployinc.subject.inputs`')."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..lazy import require
from ..runners.ort import session_options


def cpu_session(model: Any, threads: int | None = None, optimization: str = "all") -> Any:
    """An ONNX Runtime CPU session on a path or ``ModelProto``, with an explicit thread count."""
    ort = require("onnxruntime")
    so = session_options(threads, optimization=optimization)
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split N x ... into consecutive batches of at most ``batch``."""
    return [images[i : i + batch] for i in range(0, len(images), max(1, batch))]
