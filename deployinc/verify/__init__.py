"""Parity: does an exported model compute what its PyTorch original computes?

- :mod:`~deployinc.core.images`: realistic inputs (image folders, seeded natural-image statistics), noise on request;
- :mod:`~deployinc.core.metrics`: the one comparison code path and the tolerance presets;
- :mod:`~deployinc.verify.reference`: the reference, rebuilt from the file's provenance, a spec, or another ONNX file;
- :mod:`~deployinc.verify.backends`: the backends by name, skipped with a reason where they cannot run;
- :mod:`~deployinc.verify.localize`: the first layer where a model departs, by torch module name;
- :mod:`~deployinc.verify.checks`: the preprocessing check;
- :mod:`~deployinc.verify.core`: :func:`verify`, the library form of ``deployinc verify``;
- :mod:`~deployinc.verify.report`: the screen table.

Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VerifyReport", "verify"]


def __getattr__(name: str) -> Any:
    if name in ("verify", "VerifyReport"):
        from . import core  # lazy: keeps import deployinc.verify (and each submodule) free of verify.core's imports

        return getattr(core, name)
    raise AttributeError(f"module 'deployinc.verify' has no attribute {name!r}")
