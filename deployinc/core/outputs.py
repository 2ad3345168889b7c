"""A model's main output, whatever container it comes in (torch-free: works on any object)."""

from __future__ import annotations

from typing import Any

#: The dict key that names a classifier's main output when a model returns a dict (Hugging Face style).
MAIN_KEY = "logits"


def main_key(out: dict[Any, Any]) -> Any:
    """The key of a dict output's main entry: ``logits`` when there is one, else the first key."""
    return MAIN_KEY if MAIN_KEY in out else next(iter(out))


def first_output(out: Any) -> Any:
    """The main output of a module: the tensor itself, the first of a tuple/namedtuple, or a dict's ``logits``
    entry (its first entry when it has none). Every stage picks the same one: prepare's output selection, its
    self-check, the class count probe, and the torch references."""
    if isinstance(out, dict):
        return out[main_key(out)] if out else None
    if isinstance(out, (tuple, list)):
        return out[0]
    return out
