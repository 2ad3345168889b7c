"""Optimisation profiles: min/opt/max input shapes from the batch range the user asks for.

TensorRT builds one engine per profile range; a shape outside [min, max] is refused at run time, and kernels are
tuned for ``opt``. deployinc's models take ``N x C x H x W`` images, so the user gives only the batch range:

    --batch 8            static batch 8 (min = opt = max = 8)
    --batch 1,8,32       min 1, opt 8, max 32
    --batch 1:8:32       the same

and every other dimension comes from the model's inputs, which must be static there. A model exported with a
static batch accepts only that batch: asking for a range then is an error that says to re-export with a dynamic
batch dimension.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError

#: A batch above this is almost certainly a typo (and would ask TensorRT for absurd workspace).
MAX_BATCH = 65536
_SEP = re.compile(r"\s*[,:]\s*")


@dataclass(frozen=True)
class BatchRange:
    """Minimum, optimum and maximum batch size (min <= opt <= max, all >= 1)."""

    min: int
    opt: int
    max: int

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def __str__(self) -> str:
        return str(self.min) if self.is_static else f"{self.min},{self.opt},{self.max}"


def parse_batch_range(value: str | int | Sequence[int] | BatchRange) -> BatchRange:
    """Parse ``"8"``, ``"1,8,32"``, ``"1:8:32"``, an int or a 3-sequence into a validated :class:`BatchRange`.

    Raises:
        BadInputError: Not 1 or 3 positive integers, not ordered min <= opt <= max, or above :data:`MAX_BATCH`.
    """
    if isinstance(value, BatchRange):
        parts: list[Any] = [value.min, value.opt, value.max]
    elif isinstance(value, bool):
        raise BadInputError(f"batch range {value!r} is not a number", hint="use e.g. --batch 1,8,32 (min,opt,max)")
    elif isinstance(value, int):
        parts = [value]
    elif isinstance(value, str):
        text = value.strip()
        parts = _SEP.split(text) if text else []
    else:
        parts = list(value)
    hint = "use --batch N for a static batch or --batch MIN,OPT,MAX (or MIN:OPT:MAX), e.g. 1,8,32"
    if len(parts) not in (1, 3):
        raise BadInputError(f"batch range {value!r} must have 1 or 3 values, got {len(parts)}", hint=hint)
    nums = []
    for p in parts:
        try:
            n = int(str(p).strip())
        except ValueError:
            raise BadInputError(f"batch range {value!r}: {p!r} is not an integer", hint=hint) from None
        if n < 1:
            raise BadInputError(f"batch range {value!r}: {n} is below 1", hint=hint)
        if n > MAX_BATCH:
            raise BadInputError(f"batch range {value!r}: {n} is above {MAX_BATCH}", hint=hint)
        nums.append(n)
    if len(nums) == 1:
        nums = nums * 3
    lo, opt, hi = nums
    if not lo <= opt <= hi:
        raise BadInputError(f"batch range {value!r} is not ordered min <= opt <= max ({lo}, {opt}, {hi})", hint=hint)
    return BatchRange(lo, opt, hi)


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shapes of one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def model_input_dims(model: Any) -> dict[str, list[int | str | None]]:
    """Graph inputs (initializers excluded) -> dims: int when static, the dim_param name or None when not."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, list[int | str | None]] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            out[vi.name] = []
            continue
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out[vi.name] = dims
    return out


def profiles_for_inputs(
    inputs: Mapping[str, Sequence[int | str | None]],
    batch: str | int | Sequence[int] | BatchRange,
    fixed: Mapping[str, Sequence[int]] | None = None,
) -> list[ShapeProfile]:
    """One :class:`ShapeProfile` per input: dimension 0 follows ``batch``, the others must be static.

    Args:
        inputs: Input name -> dims, as :func:`model_input_dims` returns.
        batch: The batch range (see :func:`parse_batch_range`).
        fixed: Input name -> full shape, for inputs whose non-batch dimensions are dynamic in the model; the batch
            entry of such a shape is ignored (the range applies).

    Raises:
        BadInputError: No inputs, an input with no shape or rank 0, a dynamic non-batch dimension with no ``fixed``
            shape, or a static batch dimension that the requested range does not equal.
    """
    br = parse_batch_range(batch)
    fixed = dict(fixed or {})
    if not inputs:
        raise BadInputError("the model has no inputs", hint="check the ONNX file")
    profiles = []
    for name, dims in inputs.items():
        dims = list(dims)
        if name in fixed:
            shape = [int(v) for v in fixed[name]]
            if len(shape) != len(dims) and dims:
                raise BadInputError(
                    f"shape {shape} given for input {name!r} has rank {len(shape)}; the model's input has rank {len(dims)}",
                    hint="give the full shape, batch first",
                )
            for i, (want, have) in enumerate(zip(shape, dims)):
                if i > 0 and isinstance(have, int) and have != want:
                    raise BadInputError(
                        f"shape {shape} given for input {name!r} differs from the model's static dim {i} ({have})",
                        hint="only dynamic dimensions can be chosen",
                    )
            dims = [dims[0] if dims else None, *shape[1:]]
        if not dims:
            raise BadInputError(
                f"input {name!r} has no shape (or rank 0) in the model",
                hint="export with an input shape, or run shape inference on the model",
            )
        rest = dims[1:]
        dynamic = [i + 1 for i, d in enumerate(rest) if not isinstance(d, int)]
        if dynamic:
            raise BadInputError(
                f"input {name!r} has dynamic dimension(s) {dynamic} besides the batch ({dims})",
                hint="export with a fixed image size (deployinc builds profiles over the batch only)",
            )
        b0 = dims[0]
        if isinstance(b0, int) and not (br.is_static and br.min == b0):
            raise BadInputError(
                f"input {name!r} has a static batch of {b0}; batch range {br} cannot be served",
                hint=f"re-export the model with a dynamic batch dimension, or use --batch {b0}",
            )
        rest_t = tuple(int(d) for d in rest)  # type: ignore[arg-type]
        profiles.append(ShapeProfile(name, (br.min, *rest_t), (br.opt, *rest_t), (br.max, *rest_t)))
    return profiles


def profiles_for_model(model: Any, batch: str | int | Sequence[int] | BatchRange, fixed: Mapping[str, Sequence[int]] | None = None) -> list[ShapeProfile]:
    """:func:`profiles_for_inputs` over an ``onnx.ModelProto``'s graph inputs."""
    return profiles_for_inputs(model_input_dims(model), batch, fixed)


def profiles_key(profiles: Sequence[ShapeProfile]) -> list[dict[str, Any]]:
    """The JSON-able form used in cache keys and manifests: one profile mapping input -> min/opt/max."""
    return [{p.name: p.to_dict() for p in profiles}] if profiles else []


def _check_ort_name(name: str) -> None:
    # ORT splits the option string on ',' between inputs and on ':' between name and shape.
    if not name or "," in name or ":" in name:
        raise BadInputError(
            f"input name {name!r} cannot be written in ONNX Runtime's profile-shape option (no ',' or ':' allowed)",
            hint="rename the model's inputs (e.g. re-export with input_names=['input'])",
        )


def ort_shape_strings(profiles: Sequence[ShapeProfile]) -> tuple[str, str, str]:
    """``trt_profile_min_shapes`` / ``_opt_`` / ``_max_`` values: ``"in1:1x3x224x224,in2:..."``."""

    def fmt(which: str) -> str:
        parts = []
        for p in profiles:
            _check_ort_name(p.name)
            parts.append(f"{p.name}:{'x'.join(str(d) for d in getattr(p, which))}")
        return ",".join(parts)

    return fmt("min"), fmt("opt"), fmt("max")
