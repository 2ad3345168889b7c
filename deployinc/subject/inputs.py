"""The image input of an ONNX classifier, read one way for every stage: its name, C x H x W, batch and normalisation
(:func:`input_spec`), sample images for it (:func:`sample_images`), and saved inputs (:func:`load_inputs`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.images import load_image_folder, natural_images
from ..errors import BadInputError
from ..io.arrays import read_npz

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class InputSpec:
    """The image input of a classifier: name, C x H x W, whether the batch is dynamic, normalisation."""

    name: str
    chw: tuple[int, int, int]
    dynamic_batch: bool
    static_batch: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    elem_type: int


def _meta_floats(meta: dict[str, str], *keys: str) -> tuple[float, ...] | None:
    for k in keys:
        if k in meta:
            try:
                v = json.loads(meta[k])
                if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
                    return tuple(float(x) for x in v)
            except ValueError:
                continue
    return None


def input_spec(model: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> InputSpec:
    """The model's single image input (N x C x H x W) and its mean/std.

    mean/std come from the arguments, else from the model's provenance metadata (``mean``/``std`` as JSON lists,
    with or without a ``deployinc.`` prefix), else ImageNet's.

    Raises:
        BadInputError: Not exactly one non-initializer input, or not rank 4 with static C, H, W.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise BadInputError(
            f"the model has {len(inputs)} inputs; deployinc's image tools need exactly one (N x C x H x W)",
            hint="export the classifier with a single image input",
        )
    vi = inputs[0]
    dims = list(vi.type.tensor_type.shape.dim)
    if len(dims) != 4 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        raise BadInputError(
            f"input {vi.name!r} has shape {shown}; expected N x C x H x W with static C, H, W",
            hint="export with a fixed image size",
        )
    elem = int(vi.type.tensor_type.elem_type)
    if elem not in (1, 10, 16):  # float, float16, bfloat16: an image
        import onnx

        kind = onnx.TensorProto.DataType.Name(elem).lower() if elem in onnx.TensorProto.DataType.values() else str(elem)
        raise BadInputError(
            f"input {vi.name!r} is {kind}, not a float image tensor; deployinc's image tools feed normalised float pixels",
            hint="export the classifier with a float32 N x C x H x W image input",
        )
    b = dims[0]
    static_batch = int(b.dim_value) if b.HasField("dim_value") and b.dim_value > 0 else None
    meta = {p.key: p.value for p in model.metadata_props}
    m = tuple(mean) if mean is not None else _meta_floats(meta, "mean", "deployinc.mean") or IMAGENET_MEAN
    s = tuple(std) if std is not None else _meta_floats(meta, "std", "deployinc.std") or IMAGENET_STD
    c, h, w = (int(d.dim_value) for d in dims[1:])
    return InputSpec(
        name=vi.name,
        chw=(c, h, w),
        dynamic_batch=static_batch is None,
        static_batch=static_batch,
        mean=m,
        std=s,
        elem_type=int(vi.type.tensor_type.elem_type),
    )


def sample_images(spec: InputSpec, n: int, data: str | os.PathLike[str] | None = None, seed: int = 0) -> np.ndarray:
    """``n`` normalised images for ``spec``: from a folder when given, else seeded natural-image statistics."""
    if data is not None:
        return load_image_folder(data, spec.chw, spec.mean, spec.std, limit=n)
    return natural_images(n, spec.chw, spec.mean, spec.std, seed=seed)


_SAVED_HINT = "give the .npz that verify --save-outputs / --save-inputs wrote"


def load_inputs(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``input`` array of a saved run or saved inputs (read by :func:`deployinc.io.arrays.read_npz`)."""
    arrays = read_npz(path, "--inputs", _SAVED_HINT, select=lambda name: name == "input")
    if "input" not in arrays:
        raise BadInputError(f"{path} holds no 'input' array", hint="write it with verify --save-inputs")
    return arrays["input"]
