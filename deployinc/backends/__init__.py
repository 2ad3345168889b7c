"""Every backend deployinc runs, one module per family, each backend a record (:class:`Backend`).

``verify --providers``, ``bench --backends``, ``deploy --backends``, ``check --target`` and every other command that
names a backend read the records registered here, so a name means the same thing everywhere, and what a backend
can do (its device, why it cannot run here, the precisions it computes and from which artifact, whether it fuses
layers, isolation, dependency rank, tolerance family, Triton accelerator, how its runner is built) is written
once, in its family's module:

==================  ==================================================================================
``torch.py``        eager PyTorch: ``torch``, ``torch-cuda``, ``torch-fused``, ``torch-compile``
``onnxruntime.py``  ONNX Runtime's providers: ``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``ort-openvino``
``openvino.py``     the OpenVINO runtime itself: ``openvino``
``tensorrt.py``     a native TensorRT engine: ``trt-engine``
``tensorrt_rtx.py`` TensorRT for RTX, ONNX Runtime's plugin provider: ``ort-trt-rtx``
==================  ==================================================================================

A new backend is a module here that registers its records (and a line in :data:`FAMILIES`); every command then
accepts its name. The tables below (:data:`BACKENDS`, :data:`ALIASES`, :data:`ONNX_BACKENDS`...) are computed from
the records, for the code that reads names.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from ..errors import BadInputError
from ._probe import bf16_native
from ._record import REGISTRY, Backend, register

#: The family modules, in the order their backends are listed.
FAMILIES = ("torch", "onnxruntime", "openvino", "tensorrt", "tensorrt_rtx")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

from .onnxruntime import REFERENCE  # noqa: E402 - registered above
from .torch import BASELINE  # noqa: E402 - registered above

__all__ = [
    "ALIASES", "BACKENDS", "BASELINE", "COMPUTE_PRECISION_BACKENDS", "FUSING_BACKENDS", "GPU_BACKENDS",
    "ONNX_BACKENDS", "REFERENCE", "TORCH_BACKENDS", "Backend", "backend_problem", "bf16_native", "canonical", "get",
    "float_precision_problem", "names", "names_text", "parse_backends", "precision_problem", "register", "targets",
]  # fmt: skip


def names(where: object = None) -> tuple[str, ...]:
    """Canonical names of the records for which ``where(record)`` is true (all of them when None), in order."""
    return tuple(n for n, r in REGISTRY.items() if where is None or where(r))  # type: ignore[operator]


#: Canonical names -> what each runs, in the order they are listed.
BACKENDS: dict[str, str] = {n: r.summary for n, r in REGISTRY.items()}
#: Other accepted spellings -> canonical name.
ALIASES: dict[str, str] = {a: r.name for r in REGISTRY.values() for a in r.aliases}
TORCH_BACKENDS = names(lambda r: not r.onnx)
ONNX_BACKENDS = names(lambda r: r.onnx)
#: Backends that fuse layers so that exposing an intermediate changes what is computed.
FUSING_BACKENDS = names(lambda r: r.fuses)
#: Backends that need an NVIDIA GPU.
GPU_BACKENDS = names(lambda r: r.device == "gpu")
#: Backends that build an engine for fixed shapes from a file (one per batch size).
ENGINE_BACKENDS = names(lambda r: r.builds_engine)
#: Backends verify and bench run in a subprocess by default.
ISOLATED_BACKENDS = names(lambda r: r.isolate)
#: Precision -> the backends that compute in it from an fp32 file (a compute precision, as TensorRT's build
#: precision is): bf16 is OpenVINO's inference precision hint; no other backend here computes in bf16.
COMPUTE_PRECISION_BACKENDS: dict[str, tuple[str, ...]] = {"bf16": names(lambda r: "bf16" in r.from_fp32)}


def get(name: str) -> Backend:
    """The record of ``name`` (a canonical name or an alias).

    Raises:
        BadInputError: ``name`` names no backend.
    """
    backend = canonical(name)
    if backend is None:
        raise BadInputError(f"unknown backend {name!r}", hint=f"known: {names_text()}")
    return REGISTRY[backend]


def targets(target: str) -> tuple[str, ...]:
    """The backends deploy tries for a target (``cpu``, ``cuda``, ``tensorrt``)."""
    return names(lambda r: target in r.targets)


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` (a name or alias) cannot run here, or None when it can: cheap (no session, no model, no
    torch import).

    Raises:
        BadInputError: ``name`` names no backend.
    """
    return get(name).problem()


def precision_problem(precision: str, backends: list[str] | tuple[str, ...]) -> str | None:
    """Why ``backends`` cannot run ``precision`` (``None`` when they can): only the backends of
    :data:`COMPUTE_PRECISION_BACKENDS` compute in bf16, so bf16 asked of another is refused, never run as fp32."""
    able = COMPUTE_PRECISION_BACKENDS.get(precision)
    if able is None:
        return None
    other = [b for b in backends if b not in able]
    if not other:
        return None
    return f"{precision} asked of {', '.join(other)}, which cannot compute in {precision} ({precision} runs on {', '.join(able)} only)"


def float_precision_problem(float_precision: str | None, precision: str | None, backends: list[str] | tuple[str, ...]) -> tuple[str, str] | None:
    """Why an int8 file's float layers cannot compute in ``float_precision`` on ``backends`` (``None`` when they
    can, or when none was asked): (the problem, a hint)."""
    if float_precision in (None, "fp32"):
        return None
    able = names(lambda r: float_precision in r.float_precisions)
    if not able:
        return f"--float-precision {float_precision!r} is not one any backend computes in", "use fp32 or bf16"
    if precision is not None and precision != "int8":  # None: not known yet (verify detects it from the file)
        return f"--float-precision {float_precision} applies to an int8 file, and this one runs at {precision}", "drop --float-precision, or give the int8 file (and no other --precision)"
    other = [b for b in backends if b not in able]
    if other:
        return f"--float-precision {float_precision} asked of {', '.join(other)}, which computes an int8 file's float layers in fp32", f"use --providers {able[0]}"
    return None


def canonical(name: str) -> str | None:
    """The canonical name of ``name`` (case-insensitive), or None when it names no backend."""
    raw = name.strip().lower()
    return raw if raw in BACKENDS else ALIASES.get(raw)


def names_text() -> str:
    """``torch, torch-cuda, ... (aliases: cpu=ort-cpu, ...)`` for hints."""
    aliases = ", ".join(f"{a}={c}" for a, c in ALIASES.items())
    return f"{', '.join(BACKENDS)} (aliases: {aliases})"


def check_target(name: str) -> str:
    """The static support table ``deployinc check --target NAME`` judges with: a backend's own (by name or alias),
    else ``name`` as given (``tensorrt``)."""
    backend = canonical(name)
    table = REGISTRY[backend].check_target if backend is not None else None
    return table or name


def checker(name: str) -> Callable[[str], Any] | None:
    """The backend's own check (its runtime asked, not a table) for ``check --target NAME``, where it has one."""
    backend = canonical(name)
    return REGISTRY[backend].checker if backend is not None else None


#: Backend name -> the static support table ``deployinc check`` judges it with.
CHECK_TARGETS: dict[str, str] = {n: r.check_target for n, r in REGISTRY.items() if r.check_target}


def check_targets_text() -> str:
    """``ort-cpu (cpu), ort-cuda (cuda), ...``: the names ``check --target`` accepts, for help text."""
    return ", ".join(f"{n} ({', '.join(REGISTRY[n].aliases)})" if REGISTRY[n].aliases else n for n in CHECK_TARGETS)


def eager_baseline(compile: bool) -> list[str]:
    """The eager torch backends deploy times as its baseline: those ``bench`` runs by default (torch.compile's only
    when ``compile``)."""
    return [n for n in TORCH_BACKENDS if REGISTRY[n].bench_default and (compile or not REGISTRY[n].options.get("compile"))]


def names_help(where: object = None) -> str:
    """``torch, ..., cpu/ort-cpu, cuda/ort-cuda, ...``: each name with its first alias, for help text."""
    return ", ".join("/".join([*r.aliases[:1], n]) for n, r in REGISTRY.items() if n in names(where))


def compute_text(precision: str) -> str:
    """``ort-openvino``: the backends that compute in ``precision`` from an fp32 file, for help text."""
    return " or ".join(COMPUTE_PRECISION_BACKENDS.get(precision, ())) or "no backend"


#: ``bench --backends``'s default: every backend whose record says so.
BENCH_DEFAULT = ",".join(names(lambda r: r.bench_default))


def parse_backends(text: str | None, option: str = "--backends", default: str = REFERENCE) -> list[str]:
    """``"cpu,torch"`` -> canonical names in the order given, without repeats.

    Raises:
        BadInputError: An unknown name (with the closest known one and the full list) or no name at all.
    """
    out: list[str] = []
    for raw in (t.strip() for t in (text if text is not None else default).split(",")):
        if not raw:
            continue
        name = canonical(raw)
        if name is None:
            close = ["cuda"] if raw.lower() in ("gpu", "nvidia") else difflib.get_close_matches(raw.lower(), [*BACKENDS, *ALIASES], n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadInputError(f"unknown backend {raw!r} in {option}{guess}", hint=f"known: {names_text()}")
        if name not in out:
            out.append(name)
    if not out:
        raise BadInputError(f"no backend given to {option}", hint=f"known: {names_text()}")
    return out
