"""Saved tensors: a verify run's inputs and outputs in one ``.npz``, so it can be replayed or compared on another
machine without torch (``--save-inputs``, ``--save-outputs``, ``--load-outputs``, ``--inputs FILE.npz``).

Layout: ``input`` (the normalised N x C x H x W float32 inputs), ``reference/<output>`` (the reference's outputs
over every sample), ``<backend>/b<batch>/<output>`` (each backend's), and ``meta`` (a JSON string: model,
output names). Written atomically; read by :mod:`deployinc.io.arrays` (numbers only, checked before reading).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..io import atomic_write_many
from ..io.arrays import read_npz


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_run(req: Any, x: np.ndarray, ref_out: dict[str, np.ndarray], outputs: dict[str, dict[str, np.ndarray]], first_output: str) -> None:
    """Write ``req.save_inputs`` (inputs only) and/or ``req.save_outputs`` (inputs, reference and backend outputs)."""
    files: list[tuple[Any, bytes]] = []
    if req.save_inputs is not None:
        files.append((req.save_inputs, _npz_bytes({"input": x})))
    if req.save_outputs is not None:
        arrays: dict[str, np.ndarray] = {"input": x}
        arrays.update({f"reference/{k}": v for k, v in ref_out.items()})
        for where, got in outputs.items():
            arrays.update({f"{where}/{k}": v for k, v in got.items()})
        meta = {"model": str(req.model), "outputs": list(ref_out), "first_output": first_output}
        arrays["meta"] = np.array(json.dumps(meta))
        files.append((req.save_outputs, _npz_bytes(arrays)))
    atomic_write_many(files, force=req.force)


def load_run(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(inputs, reference outputs by name) of a file written by ``--save-outputs``.

    Raises:
        BadInputError: Unreadable or damaged (:func:`deployinc.io.arrays.read_npz`), no inputs or references, inputs
            that are not N x C x H x W finite numbers, a reference that does not cover every input.
    """
    hint = "write it with verify --save-outputs"
    arrays = read_npz(path, "--load-outputs", hint, select=lambda name: name == "input" or name.startswith("reference/"))
    refs = {k[len("reference/") :]: v for k, v in arrays.items() if k.startswith("reference/")}
    if "input" not in arrays or not refs:
        raise BadInputError(f"{path} holds no inputs and reference outputs", hint=hint)
    x = arrays["input"]
    if x.ndim != 4 or x.shape[0] < 1:
        raise BadInputError(f"{path}: the saved inputs have shape {list(x.shape)}, not N x C x H x W", hint=hint)
    x = x.astype(np.float32, copy=False)
    check_finite(x, f"the inputs saved in {path}")
    for name, v in refs.items():
        if v.ndim < 1 or v.shape[0] != x.shape[0]:
            raise BadInputError(
                f"{path}: the reference output {name!r} has shape {list(v.shape)}; it does not cover the {x.shape[0]} saved input(s)",
                hint="write it again with verify --save-outputs",
            )
    return x, refs


def check_finite(x: np.ndarray, what: str) -> None:
    """Refuse inputs with NaN or infinite values: no comparison of their outputs means anything."""
    bad = ~np.isfinite(x)
    if bad.any():
        nan, inf = int(np.isnan(x).sum()), int(bad.sum() - np.isnan(x).sum())
        first = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
        raise BadInputError(
            f"{what} hold non-finite values ({nan} NaN, {inf} Inf; first in sample {first}): no comparison of "
            "their outputs means anything",
            hint="give finite, normalised inputs (check the .npy / .npz file, or the --mean/--std that normalised it)",
        )
