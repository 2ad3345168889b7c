"""Options shared by several commands, as decorators, and small parsers for their values.

Nothing here imports torch: command modules are imported to build ``deployinc --help``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..errors import BadInputError


def parse_int_list(text: str, what: str, min_value: int = 1) -> list[int]:
    """``"1,8,32"`` -> [1, 8, 32], with an error naming ``what``."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{what} {text!r} is not a comma-separated list of integers", hint="e.g. 1,8,32") from None
    if not values or any(v < min_value for v in values):
        raise BadInputError(f"{what} {text!r} must hold integers >= {min_value}", hint="e.g. 1,8,32")
    return values


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,3,224,224"`` -> (1, 3, 224, 224); ``C,H,W`` gets N=1."""
    if text is None:
        return None
    dims = parse_int_list(text, "--input-shape")
    if len(dims) == 3:
        dims = [1, *dims]
    if len(dims) != 4:
        raise BadInputError(f"--input-shape {text!r} must be N,C,H,W (or C,H,W)", hint="e.g. 1,3,224,224")
    return tuple(dims)


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5)."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInputError(f"{what} {text!r} is not a comma-separated list of numbers", hint="e.g. 0.485,0.456,0.406") from None


def force_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--force", is_flag=True, help="Overwrite existing output files.")(f)


def threads_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--threads", type=int, default=None, help="Intra-op threads for torch and ONNX Runtime alike (recorded)."
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the full report as JSON.")(f)


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--weights, --num-classes, --input-shape, --mean, --std, --seed."""
    for opt in reversed(
        [
            click.option("--weights", default=None, help="none (seeded random init), DEFAULT / IMAGENET1K_V1 (torchvision), or a .pt/.pth/.safetensors file."),
            click.option("--num-classes", type=int, default=None, help="Number of classes (default: the model's)."),
            click.option("--input-shape", default=None, help="N,C,H,W of the example input (default: the model's)."),
            click.option("--mean", default=None, help="Input normalisation mean, comma-separated."),
            click.option("--std", default=None, help="Input normalisation std, comma-separated."),
            click.option("--seed", type=int, default=None, help="Seed of random initialisation and BN recalibration."),
        ]
    ):
        f = opt(f)
    return f


def write_json_report(path: str, data: Any, force: bool) -> None:
    """Write a JSON report atomically (refusing to overwrite without --force)."""
    import json

    from ..io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n", force=force)
