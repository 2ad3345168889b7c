"""Parsers and checks of option values shared by several commands (the flags themselves are declared in :mod:`.groups`).

Nothing here imports torch: command modules are imported to build ``deployinc --help``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..core import limits
from ..errors import BadInputError
from ..io import atomic_write_text


def parse_int_list(
    text: str, what: str, min_value: int = 1, max_value: int | None = None, hint: str = "e.g. 1,8,32"
) -> list[int]:
    """``"1,8,32"`` -> [1, 8, 32], with an error naming ``what`` and the allowed range."""
    allowed = "allowed: comma-separated integers " + (
        f"from {min_value} to {max_value}" if max_value is not None else f">= {min_value}"
    )
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{what} {text!r} is not a comma-separated list of integers", hint=f"{allowed}; {hint}") from None
    if not values:
        raise BadInputError(f"{what} {text!r} holds no value", hint=f"{allowed}; {hint}")
    for v in values:
        if v < min_value or (max_value is not None and v > max_value):
            raise BadInputError(f"{what} {text!r}: {v} is out of range", hint=f"{allowed}; {hint}")
    return values


def parse_shape(text: str | None, what: str = "--input-shape") -> tuple[int, int, int, int] | None:
    """``"1,3,224,224"`` -> (1, 3, 224, 224): exactly four values, N,C,H,W, each within :mod:`deployinc.core.limits`.

    A 3-value ``C,H,W`` is refused on every command (it used to get N=1, and ``1,3,224`` then read as C=1, H=3,
    W=224): the batch is always written out, so a shape means the same thing to export, profile and verify.
    """
    if text is None:
        return None
    try:
        dims = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise BadInputError(
            f"{what} {text!r} is not a comma-separated list of integers", hint="give N,C,H,W, e.g. 1,3,224,224"
        ) from None
    return limits.check_shape(what, dims, example="1,3,224,224", shown=text)


def parse_floats(text: str | None, what: str, positive: bool = False) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5): one or more finite numbers (``positive``: each > 0, as a std)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(
            f"{what} {text!r} is not a comma-separated list of numbers", hint="allowed: finite numbers; e.g. 0.485,0.456,0.406"
        ) from None
    return limits.check_floats(what, values, positive=positive, example="0.229,0.224,0.225" if positive else "0.485,0.456,0.406")


# option callbacks: each checks its value while click parses the command line, before the command runs ----------


def _flag(param: click.Parameter) -> str:
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0] if longs else param.opts[0]


def check_with(check: Callable[[str, Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running ``check(flag, value)`` on a given value (None passes: the option's default)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            check(_flag(param), value)
        return value

    return callback


def int_in(lo: int | None = 1, hi: int | None = None, example: str | None = None) -> Callable[..., Any]:
    """Callback: an integer in ``[lo, hi]``."""
    return check_with(lambda name, v: limits.check_int(name, v, lo, hi, example=f"{name} {example}" if example else None))


def float_in(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False, example: str | None = None
) -> Callable[..., Any]:
    """Callback: a finite float in the range."""
    return check_with(
        lambda name, v: limits.check_float(
            name, v, lo, hi, lo_open=lo_open, hi_open=hi_open, example=f"{name} {example}" if example else None
        )
    )


seed_callback = check_with(limits.check_seed)
num_classes_callback = check_with(limits.check_num_classes)
shape_callback = check_with(lambda name, v: parse_shape(v, name))
mean_callback = check_with(lambda name, v: parse_floats(v, name))
std_callback = check_with(lambda name, v: parse_floats(v, name, positive=True))


def tolerance_callback(key: str) -> Callable[..., Any]:
    """Callback: a parity budget (``max_rel``, ``min_cosine``...) within :data:`deployinc.core.limits.TOLERANCE_RANGES`."""
    return check_with(lambda name, v: limits.check_tolerance(name, key, v))


def batch_list_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback: comma-separated batch sizes, each ``1..BATCH_MAX``."""
    if value is not None:
        parse_batches(value, _flag(param))
    return value


def parse_batches(text: str, what: str = "--batch") -> list[int]:
    """Batch sizes ``1..BATCH_MAX`` (the real bound is memory: see :func:`check_onnx_input_memory`)."""
    return parse_int_list(text, what, 1, limits.BATCH_MAX)


#: Sample counts or batch sizes up to this need no look at the file's input size before the run.
PEEK_ABOVE = 64


def onnx_input_chw(path: str) -> tuple[int, int, int] | None:
    """C, H, W of an ONNX file's single image input, read from its graph (None when it cannot be told: the
    command's own loading then reports what is wrong with the file)."""
    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not our error to report here
        return None
    inits = {t.name for t in m.graph.initializer}
    inputs = [vi for vi in m.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        return None
    dims = list(inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        return None
    return tuple(int(d.dim_value) for d in dims[1:])  # type: ignore[return-value]


def check_onnx_input_memory(
    model: str, requests: list[tuple[str, Any, int]], chw: tuple[int, ...] | None = None, factor: float = limits.INPUT_COPIES
) -> None:
    """Refuse inputs that cannot fit before a run of ``model`` (an ONNX file) starts.

    Args:
        model: The .onnx path (read for its C, H, W only when ``chw`` is not given and a count is large).
        requests: ``(flag, value as typed, number of inputs it makes the run hold)``; the largest is checked.
        chw: C, H, W when known (from --input-shape).
        factor: Copies of the inputs a run holds.
    """
    flag, value, n = max(requests, key=lambda r: r[2])
    if n <= PEEK_ABOVE and chw is None:
        return
    if chw is None:
        chw = onnx_input_chw(model)
    if chw is None:
        return
    limits.check_input_memory(flag, value, n, chw, factor=factor)


def write_json_report(path: str, data: Any, force: bool) -> None:
    """Write a JSON report atomically (refusing to overwrite without --force)."""
    import json

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n", force=force)
