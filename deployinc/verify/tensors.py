"""Saved tensors: a verify run's inputs and outputs in one ``.npz``, so it can be replayed or compared on another
machine without torch (``--save-inputs``, ``--save-outputs``, ``--load-outputs``, ``--inputs FILE.npz``).

Layout: ``input`` (the normalised N x C x H x W float32 inputs), ``reference/<output>`` (the reference's outputs
over every sample), ``<backend>/b<batch>/<output>`` (each backend's), and ``meta`` (a JSON string: model,
output names). Written atomically; read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..io import atomic_write_many


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


def _open(path: str | os.PathLike[str], what: str) -> Any:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise BadInputError(f"{what} file {p} does not exist", hint="give the .npz that verify --save-outputs / --save-inputs wrote")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise BadInputError(f"{what} file {p} is not a readable .npz: {str(exc)[:120]}", hint="write it with verify --save-outputs") from exc


def load_inputs(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``input`` array of a saved run or saved inputs."""
    with _open(path, "--inputs") as z:
        if "input" not in z.files:
            raise BadInputError(f"{path} holds no 'input' array", hint="write it with verify --save-inputs")
        return np.asarray(z["input"])


def load_run(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(inputs, reference outputs by name) of a file written by ``--save-outputs``."""
    with _open(path, "--load-outputs") as z:
        refs = {k[len("reference/") :]: np.asarray(z[k]) for k in z.files if k.startswith("reference/")}
        if "input" not in z.files or not refs:
            raise BadInputError(f"{path} holds no inputs and reference outputs", hint="write it with verify --save-outputs")
        x = np.asarray(z["input"], dtype=np.float32)
    if any(v.shape[0] != x.shape[0] for v in refs.values()):
        raise BadInputError(f"{path}: the reference outputs do not cover every input", hint="write it again with verify --save-outputs")
    return x, refs
