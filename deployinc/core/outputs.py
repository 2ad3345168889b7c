"""A model's main output, whatever container it comes in (torch-free: works on any object)."""

from __future__ import annotations

from typing import Any


def first_output(out: Any) -> Any:
    """The main output of a module: the tensor itself, or the first of a tuple/namedtuple/dict."""
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out
