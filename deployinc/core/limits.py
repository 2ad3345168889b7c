"""The allowed range of every number deployinc takes, and rough memory estimates checked before the work starts.

Two kinds of check, both raising :class:`~deployinc.errors.BadInputError` with the allowed range (or the memory
figure) in the message and hint:

* **Ranges** (:func:`check_int`, :func:`check_float`, :func:`check_floats`, :func:`check_shape`): a value must be
  finite (no NaN, no infinity) and inside its range. The static caps below are generous but sane: they exist so
  that a typo (``--iters 1000000000000``, ``--num-classes 2000000000``, ``--image-size 100000``) is refused in
  milliseconds instead of failing after minutes, or as an allocation traceback.
* **Bytes** (:func:`check_fits` and the estimates :func:`tensor_bytes`, :func:`head_bytes`): what an input batch,
  a set of samples or a classifier head needs, compared with the memory this machine has available
  (:func:`available_memory`). The estimates are deliberately low (inputs as float32, times a small factor for the
  copies a run holds); a request is refused only when even that cannot fit, so nothing that could run is refused.

Nothing here imports torch or numpy: the CLI calls these while parsing flags.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..errors import BadInputError

KiB = 1024
MiB = 1024**2
GiB = 1024**3

#: Largest image height or width (a 16384 x 16384 RGB float32 image is 3 GiB).
IMAGE_SIDE_MAX = 16384
#: Largest number of input channels (deployinc's block models take 256; 65536 is far beyond any classifier).
CHANNELS_MAX = 65536
#: Largest batch size or sample count: tensor dimensions beyond int32 break most kernels. The real bound is memory.
BATCH_MAX = 2**31 - 1
SAMPLES_MAX = 2**31 - 1
#: Most batch sizes one deploy times (every candidate, and the eager baseline, runs at each of them).
DEPLOY_BATCH_SIZES_MAX = 16
#: Largest class count (ImageNet-21k has 21841 classes).
NUM_CLASSES_MAX = 1_000_000
#: Seeds: numpy's generators take non-negative seeds and torch.manual_seed at most 2**64 - 1; deployinc records
#: and derives seeds (``seed * 100003 + epoch`` in training), so it keeps them to 32 bits.
SEED_MAX = 2**32 - 1
#: ai.onnx opsets deployinc exports (the same range as ``deployinc.export.SUPPORTED_OPSETS``; a test checks it).
OPSET_MIN, OPSET_MAX = 13, 21
#: Intra-op threads (more than the usable CPUs is allowed: oversubscription is the user's choice).
THREADS_MAX = 1024
#: Timed iterations (every sample is kept: 10 million samples are 80 MB) and warm-up runs per measurement.
ITERS_MAX = 10_000_000
WARMUP_MAX = 1_000_000
#: Seconds of sampling per measurement (a day).
MAX_TIME_S_MAX = 86_400.0
#: Training epochs.
EPOCHS_MAX = 100_000
#: Smallest training image side (deployinc.train.data refuses less).
TRAIN_IMAGE_SIDE_MIN = 8

#: Memory assumed when the machine does not say (no /proc/meminfo, no sysconf).
FALLBACK_MEMORY = 16 * GiB
#: Bytes of one float32 value.
FLOAT32 = 4
#: Copies of the inputs a verify, bench or convert run holds at once (generated, normalised or repeated to fill
#: a batch, and the batch the runtime is fed).
INPUT_COPIES = 2
#: A convolutional classifier's activations, as a multiple of its input: the stem alone maps 3 channels to 32-64
#: at half resolution (x3-5), and a forward pass holds a few of those at once. Rough and low on purpose.
ACTIVATION_FACTOR = 8
#: Images per batch of BatchNorm recalibration (random weights; deployinc.models.loading) - the smallest batch an
#: export or profile of a random-weight model runs, whatever N is.
RECALIBRATION_BATCH = 8
#: Width assumed for a classifier head when the model is not loaded yet (GoogLeNet's 1024; ResNet-50's is 2048).
HEAD_FEATURES = 1024
#: Copies of a classifier head an export holds (the module, the prepared copy, the ONNX initializer).
HEAD_COPIES = 3

#: Budget keys of ``deployinc verify`` and a config's ``[parity]`` table: (low, high or None, example).
TOLERANCE_RANGES: dict[str, tuple[float, float | None, str]] = {
    "max_rel": (0.0, None, "1e-4"),
    "max_abs": (0.0, None, "1e-3"),
    "min_cosine": (-1.0, 1.0, "0.99999"),
    "min_top1": (0.0, 1.0, "0.99"),
    "min_top5": (0.0, 1.0, "1.0"),
}


# ranges -------------------------------------------------------------------------------------------------------------


def _fmt_num(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e16:
        return str(int(v))
    return f"{v:g}"


def int_range_text(lo: int | None, hi: int | None) -> str:
    """``an integer from 1 to 1024`` / ``an integer >= 1``."""
    if lo is not None and hi is not None:
        return f"an integer from {_fmt_num(lo)} to {_fmt_num(hi)}"
    if lo is not None:
        return f"an integer >= {_fmt_num(lo)}"
    if hi is not None:
        return f"an integer <= {_fmt_num(hi)}"
    return "an integer"


def float_range_text(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """``a finite number in (0, 100]`` / ``a finite number > 0`` / ``a finite number``."""
    if lo is not None and hi is not None:
        return f"a finite number in {'(' if lo_open else '['}{_fmt_num(lo)}, {_fmt_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"a finite number {'>' if lo_open else '>='} {_fmt_num(lo)}"
    if hi is not None:
        return f"a finite number {'<' if hi_open else '<='} {_fmt_num(hi)}"
    return "a finite number"


def _hint(allowed: str, example: str | None, extra: str | None = None) -> str:
    parts = [f"allowed: {allowed}"]
    if example:
        parts.append(f"e.g. {example}")
    if extra:
        parts.append(extra)
    return "; ".join(parts)


def check_int(
    name: str, value: Any, lo: int | None = 1, hi: int | None = None, example: str | None = None, extra: str | None = None
) -> int:
    """``value`` as an int within ``[lo, hi]``.

    Raises:
        BadInputError: Not an integer (a bool, a float with a fraction, NaN) or out of range; the hint names the range.
    """
    allowed = int_range_text(lo, hi)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise BadInputError(f"{name} {value!r} is not an integer", hint=_hint(allowed, example, extra))
    v = int(value)
    if lo is not None and v < lo:
        raise BadInputError(f"{name} {value} is below the minimum {_fmt_num(lo)}", hint=_hint(allowed, example, extra))
    if hi is not None and v > hi:
        raise BadInputError(f"{name} {value} is above the maximum {_fmt_num(hi)}", hint=_hint(allowed, example, extra))
    return v


def check_float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    example: str | None = None,
    extra: str | None = None,
) -> float:
    """``value`` as a finite float within the range (``lo_open``/``hi_open``: the bound itself is excluded).

    Raises:
        BadInputError: Not a number, NaN, infinite, or out of range; the hint names the range.
    """
    allowed = float_range_text(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInputError(f"{name} {value!r} is not a number", hint=_hint(allowed, example, extra))
    v = float(value)
    if not math.isfinite(v):
        raise BadInputError(f"{name} {value} is not a finite number", hint=_hint(allowed, example, extra))
    if lo is not None and (v <= lo if lo_open else v < lo):
        rel = "must be above" if lo_open else "is below the minimum"
        raise BadInputError(f"{name} {value:g} {rel} {_fmt_num(lo)}", hint=_hint(allowed, example, extra))
    if hi is not None and (v >= hi if hi_open else v > hi):
        rel = "must be below" if hi_open else "is above the maximum"
        raise BadInputError(f"{name} {value:g} {rel} {_fmt_num(hi)}", hint=_hint(allowed, example, extra))
    return v


def check_floats(
    name: str, values: Sequence[Any], *, positive: bool = False, example: str = "0.485,0.456,0.406"
) -> tuple[float, ...]:
    """A non-empty list of finite numbers (``positive``: each > 0, as a std must be).

    Raises:
        BadInputError: An empty list, a non-number, NaN, infinity, or (``positive``) a value <= 0.
    """
    allowed = "one or more finite numbers" + (" > 0" if positive else "") + " (one per channel, or one for all)"
    if len(values) == 0:
        raise BadInputError(f"{name} is empty", hint=_hint(allowed, example))
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise BadInputError(f"{name} holds {v!r}, not a finite number", hint=_hint(allowed, example))
        if positive and float(v) <= 0:
            raise BadInputError(f"{name} holds {v!r}; every value must be > 0", hint=_hint(allowed, example))
        out.append(float(v))
    return tuple(out)


def check_seed(name: str, value: Any) -> int:
    """A seed in ``0..2**32 - 1`` (see :data:`SEED_MAX`)."""
    return check_int(name, value, 0, SEED_MAX, example=f"{name} 0" if name.startswith("-") else "0")


def check_threads(name: str, value: Any) -> int:
    """An intra-op thread count in ``1..THREADS_MAX``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return check_int(name, value, 1, THREADS_MAX, example=f"{name} {cpus}", extra=f"this machine has {cpus} usable CPU(s)")


def check_num_classes(name: str, value: Any) -> int:
    """A class count in ``1..NUM_CLASSES_MAX``."""
    return check_int(name, value, 1, NUM_CLASSES_MAX, example=f"{name} 1000" if name.startswith("-") else "1000")


def check_opset(name: str, value: Any) -> int:
    """An ai.onnx opset deployinc exports (``OPSET_MIN..OPSET_MAX``)."""
    return check_int(name, value, OPSET_MIN, OPSET_MAX, example=f"{name} 17" if name.startswith("-") else "17")


def check_tolerance(name: str, key: str, value: Any) -> float:
    """A parity budget (``key`` of :data:`TOLERANCE_RANGES`): finite, and inside its range (a cosine in [-1, 1], an
    agreement in [0, 1], an error >= 0)."""
    lo, hi, example = TOLERANCE_RANGES[key]
    return check_float(name, value, lo, hi, example=f"{name} {example}" if name.startswith("-") else example)


def check_shape(
    name: str, shape: Sequence[Any], example: str = "1,3,224,224", shown: str | None = None
) -> tuple[int, int, int, int]:
    """An ``N, C, H, W`` input shape: four integers, N and C and H and W at least 1, within the static caps.

    ``shown`` is the shape as the user wrote it (default: the values, comma-separated).

    Raises:
        BadInputError: Not four values, a non-integer, a value < 1, or above a cap (the hint names them).
    """
    allowed = f"N,C,H,W: four integers >= 1, C <= {CHANNELS_MAX}, H and W <= {IMAGE_SIDE_MAX}"
    dims = list(shape)
    shown = shown if shown is not None else _shape_text(dims)
    if len(dims) != 4:
        extra = " (a 1-D model's N,C,L is not supported; C,H,W needs its batch N written out)" if len(dims) == 3 else ""
        raise BadInputError(
            f"deployinc exports image models: {name} must be N,C,H,W (four values), got {shown!r}: {len(dims)} value(s){extra}",
            hint=_hint(allowed, example),
        )
    for v in dims:
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadInputError(f"{name} {shown}: {v!r} is not an integer", hint=_hint(allowed, example))
    for axis, v, hi in zip("NCHW", dims, (BATCH_MAX, CHANNELS_MAX, IMAGE_SIDE_MAX, IMAGE_SIDE_MAX)):
        if v < 1:
            raise BadInputError(f"{name} {shown}: {axis} = {v} must be at least 1", hint=_hint(allowed, example))
        if v > hi:
            raise BadInputError(f"{name} {shown}: {axis} = {v} is above the maximum {_fmt_num(hi)}", hint=_hint(allowed, example))
    return tuple(int(v) for v in dims)  # type: ignore[return-value]


def _shape_text(dims: Sequence[Any]) -> str:
    return ",".join(str(d) for d in dims)


# bytes --------------------------------------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    """``56.1 GiB``, ``512.0 MiB``, ``3.6 TiB``."""
    for unit, size in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def tensor_bytes(n: int, chw: Sequence[int], itemsize: int = FLOAT32) -> int:
    """Bytes of ``n`` float32 inputs of shape ``chw``."""
    return int(n) * math.prod(int(v) for v in chw) * itemsize


def head_bytes(num_classes: int, features: int = HEAD_FEATURES) -> int:
    """Bytes of a float32 Linear head (``features x num_classes`` weights and the bias)."""
    return (int(features) + 1) * int(num_classes) * FLOAT32


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> tuple[int, str]:
    """``(bytes, source)``: the memory this process can still get.

    ``MemAvailable`` of /proc/meminfo, lowered to what a cgroup limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``) leaves; else ``os.sysconf`` (available, then physical pages); else
    :data:`FALLBACK_MEMORY`.
    """
    avail: int | None = None
    source = ""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail, source = int(line.split()[1]) * 1024, "MemAvailable"
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        for key in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            try:
                pages, size = os.sysconf(key), os.sysconf("SC_PAGE_SIZE")
            except (AttributeError, ValueError, OSError):
                continue
            if pages > 0 and size > 0:
                avail, source = pages * size, key
                break
    if avail is None:
        avail, source = FALLBACK_MEMORY, "fixed fallback"
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, used = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and used is not None and limit < 2**60 and limit - used < avail:
            avail, source = max(0, limit - used), "cgroup limit"
    return avail, source


def check_fits(what: str, need: int, detail: str, *, factor: float = 1, factor_why: str | None = None, hint: str) -> None:
    """Refuse ``what`` when ``need * factor`` bytes exceed the available memory.

    Args:
        what: The request, as the user typed it (``--batch 100000000``).
        need: Bytes of the part estimated (the inputs, a head).
        detail: What ``need`` is (``100000000 inputs of 3 x 224 x 224 float32``).
        factor: Copies (or activations) held at once, as a multiple of ``need``.
        factor_why: Words for ``factor`` (default: ``held about 2x while running``).
        hint: How to go on.

    Raises:
        BadInputError: It cannot fit; the message gives both figures.
    """
    total = need * factor
    avail, _source = available_memory()
    if total <= avail:
        return
    how = detail
    if factor != 1:
        how += f" ({fmt_bytes(need)}), " + (factor_why or f"held about {factor:g}x while running")
    raise BadInputError(
        f"{what} needs at least {fmt_bytes(total)}: {how}; this machine has {fmt_bytes(avail)} available",
        hint=hint,
    )


def largest_fitting(per_item: int, factor: float) -> int:
    """How many items of ``per_item`` bytes (times ``factor``) fit in the available memory now."""
    avail, _ = available_memory()
    return int(avail // max(1, per_item * factor))


def check_input_memory(option: str, value: Any, n: int, chw: Sequence[int], *, factor: float = INPUT_COPIES, unit: str = "inputs") -> None:
    """Refuse ``n`` float32 inputs of ``chw`` that cannot fit (``option value`` names the flag in the message)."""
    per = tensor_bytes(1, chw)
    dims = " x ".join(str(int(v)) for v in chw)
    fit = largest_fitting(per, factor)
    check_fits(
        f"{option} {value}",
        per * int(n),
        f"{int(n)} {unit} of {dims} float32",
        factor=factor,
        hint=f"at most about {fit} such {unit} fit here; use a smaller {option}, or a machine with more memory",
    )


def check_model_memory(option: str, value: Any, shape: Sequence[int], *, random_weights: bool = True, export: bool = True) -> None:
    """Refuse an export or profile input shape whose activations cannot fit: ``max(N, 8)`` images (BatchNorm
    recalibration of random weights runs batches of 8, whatever N is) times :data:`ACTIVATION_FACTOR`. Rough and
    low on purpose: only a shape that cannot possibly run is refused."""
    n, chw = int(shape[0]), tuple(int(v) for v in shape[1:])
    images = max(n, RECALIBRATION_BATCH) if random_weights else n
    per = tensor_bytes(1, chw)
    dims = " x ".join(map(str, chw))
    avail, _ = available_memory()
    side = int(math.sqrt(max(0, avail) / (ACTIVATION_FACTOR * FLOAT32 * chw[0] * images)))
    check_fits(
        f"{option} {value}",
        per * images,
        f"{images} image(s) of {dims} float32" + (" (BatchNorm recalibration runs batches of 8)" if images > n else ""),
        factor=ACTIVATION_FACTOR,
        factor_why=f"times ~{ACTIVATION_FACTOR} for the activations",
        hint=(
            f"use a smaller input (at this batch, images up to about {side}x{side} fit here"
            + ("; N=1 is enough: export traces at batch 1 whatever N is" if export else "")
            + "), or a machine with more memory"
        ),
    )


def check_head_memory(option: str, num_classes: int, features: int = HEAD_FEATURES) -> None:
    """Refuse a classifier head of ``num_classes`` that cannot fit (assuming ``features`` inputs, before the model
    is loaded)."""
    need = head_bytes(num_classes, features)
    fit = int(available_memory()[0] // (HEAD_COPIES * (features + 1) * FLOAT32))
    check_fits(
        f"{option} {num_classes}",
        need,
        f"a Linear head of ~{features} x {num_classes} float32",
        factor=HEAD_COPIES,
        hint=f"at most about {fit} classes fit here; check {option}",
    )
