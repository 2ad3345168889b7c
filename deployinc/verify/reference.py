"""The reference an ONNX file is verified against: the torch model it came from, or another ONNX file.

Four ways to get it:

- from the file's provenance metadata alone (:func:`from_provenance`) or from a ``package.module:function`` spec and
  a checkpoint (:func:`from_spec`): the torch references, built by :mod:`deployinc.subject.reference` (below the
  stages, so that bench and deploy build the same one);
- another ONNX file (:func:`from_onnx`), run on ONNX Runtime's CPU provider: no torch needed;
- outputs saved by ``verify --save-outputs`` (:func:`from_saved`): a replay.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import BadInputError
from ..io import load_onnx
from ..models.bn_cache import store_bn_stats  # noqa: F401 - re-exported
from ..subject.reference import Reference, from_provenance, from_spec  # noqa: F401 - re-exported: the torch references


def from_onnx(path: str | os.PathLike[str]) -> tuple[Reference, Any]:
    """Read and check the ``--against`` ONNX file; returns the reference and its ``ModelProto``."""
    t0 = time.perf_counter()
    f = load_onnx(path)
    ref = Reference(
        kind="onnx",
        description=f"{f.path} on ONNX Runtime CPU (fp32 reference)",
        onnx_path=f.path,
        seconds=time.perf_counter() - t0,
    )
    return ref, f.model


def from_saved(path: str | os.PathLike[str]) -> Reference:
    """The reference outputs saved by ``verify --save-outputs`` (no torch, no model: a replay)."""
    return Reference(kind="saved", description=f"outputs saved in {path} (replayed; no torch)", weights=None)


def no_reference_error(path: Any) -> BadInputError:
    """The error for a file with no provenance and neither ``--reference`` nor ``--against``."""
    return BadInputError(
        f"{path} carries no deployinc provenance metadata, so its reference cannot be rebuilt",
        hint="give the torch model with --reference package.module:function [--weights ckpt.pt], "
        "or compare with another ONNX file with --against other.onnx",
    )
