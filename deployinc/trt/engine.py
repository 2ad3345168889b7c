"""Native TensorRT: build an engine from an ONNX file (or take it from the cache), load it, describe its tensors.

Written against TensorRT's documented Python API (``tensorrt.Builder``, ``OnnxParser``, ``IBuilderConfig``,
``IOptimizationProfile``, ``ITimingCache``, ``Runtime``); ``tensorrt`` is imported through
:func:`deployinc.lazy.require`, so without it this module still imports and everything that needs no library
(:func:`plan_precision`, :func:`format_parser_errors`, the cache) works and is tested.

Reduced precision follows what the installed TensorRT supports:

- TensorRT 8.x/9.x/10.x (weak typing): ``BuilderFlag.FP16`` for fp16; for int8 the model must be explicitly
  quantized (QDQ, from ``deployinc quantize --target tensorrt``) and gets ``BuilderFlag.INT8`` (plus FP16 for the
  float layers unless ``fp16_fallback=False``). Implicit calibration (``IInt8Calibrator``) is deprecated since 10.1
  and removed in 11, so deployinc does not offer it.
- TensorRT 11+ (or any build without ``BuilderFlag.FP16``): strongly typed networks only. Types come from the model,
  so fp16 is built from an fp16 ONNX model (deployinc converts it first, keeping fp32 inputs/outputs), and int8 from a
  QDQ model; no precision flags.

TF32 is cleared for fp32 builds (TensorRT enables it by default) so fp32 parity numbers mean fp32, unless
``allow_tf32``. The engine cache key (:class:`~deployinc.trt.cache.EngineKey`) covers the ONNX bytes and external data,
the TensorRT version, the compute capability, all of the above and the profile shapes; a cached engine that fails to
deserialize is removed and rebuilt with a warning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.fp16 import float16_graph
from ..errors import BackendUnavailable, BadInputError, CheckFailed
from ..io import atomic_write_bytes, load_onnx, save_onnx, scratch_dir
from ..lazy import require
from .cache import EngineCache, EngineKey, ensure_private_dir, onnx_fingerprint
from . import ort_options
from .profiles import BatchRange, ShapeProfile, model_input_dims, parse_batch_range, profiles_for_inputs, profiles_key
from ..core.precisions import FP16, FP32, INT8, TRT_PRECISIONS

PRECISIONS = TRT_PRECISIONS


class TensorRTParseError(CheckFailed):
    """TensorRT's ONNX parser refused the model; :attr:`errors` lists one entry per failing node."""

    def __init__(self, message: str, errors: list[dict[str, Any]], hint: str | None = None):
        super().__init__(message, hint=hint)
        self.errors = errors


class EngineBuildError(CheckFailed):
    """The builder returned no engine (unsupported layer configuration, out of memory...)."""


# --------------------------------------------------------------------------------------------------------------
# Precision plan (pure, testable without TensorRT)


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string ("10.8.0.43" -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise BadInputError(f"cannot read a TensorRT version from {version!r}") from None


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get the requested precision out of the installed TensorRT.

    Attributes:
        precision: fp32, fp16 or int8.
        strongly_typed: Create the network with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.
        set_flags: ``BuilderFlag`` names to set.
        clear_flags: ``BuilderFlag`` names to clear.
        convert_to_fp16: Convert the ONNX model to fp16 before parsing (strong typing takes types from the model).
        notes: What was decided and why, for reports.
    """

    precision: str
    strongly_typed: bool
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]
    convert_to_fp16: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "set_flags": list(self.set_flags),
            "clear_flags": list(self.clear_flags),
            "convert_to_fp16": self.convert_to_fp16,
        }


def plan_precision(
    precision: str,
    trt_version: str,
    *,
    has_weak_precision_flags: bool,
    model_has_qdq: bool,
    model_is_fp16: bool = False,
    fp16_fallback: bool = True,
    allow_tf32: bool = False,
) -> PrecisionPlan:
    """Decide typing mode and builder flags; see the module docstring.

    Args:
        precision: fp32, fp16 or int8.
        trt_version: ``tensorrt.__version__``.
        has_weak_precision_flags: Whether ``tensorrt.BuilderFlag`` has ``FP16`` and ``INT8`` (removed in 11).
        model_has_qdq: The model holds Q/DQ nodes.
        model_is_fp16: The model's float tensors are already fp16.
        fp16_fallback: With int8, allow fp16 for the float layers (weak typing only).
        allow_tf32: Leave TF32 on for fp32 builds.

    Raises:
        BadInputError: Unknown precision, or int8 for a model without Q/DQ nodes.
    """
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    weak = has_weak_precision_flags and trt_major(trt_version) < 11
    notes: list[str] = []
    if precision == INT8 and not model_has_qdq:
        raise BadInputError(
            "int8 needs an explicitly quantized (QDQ) model; TensorRT's implicit calibrators are deprecated (10.1) "
            "and removed (11)",
            hint="run deployinc quantize model.onnx --data DIR --target tensorrt, and build from its output",
        )
    clear = () if (allow_tf32 or precision != FP32) else ("TF32",)
    if precision == FP32:
        return PrecisionPlan(FP32, strongly_typed=not weak, set_flags=(), clear_flags=clear, convert_to_fp16=False,
                             notes=("fp32: TF32 cleared" if clear else "fp32 with TF32 allowed",))
    if precision == FP16:
        if weak:
            return PrecisionPlan(FP16, False, ("FP16",), (), False, ("weakly typed network with BuilderFlag.FP16",))
        notes.append("strongly typed network: precision comes from the model's types")
        if not model_is_fp16:
            notes.append("the ONNX model is converted to fp16 first (fp32 inputs/outputs kept)")
        return PrecisionPlan(FP16, True, (), (), not model_is_fp16, tuple(notes))
    # int8 (QDQ)
    if weak:
        flags = ("INT8", "FP16") if fp16_fallback else ("INT8",)
        return PrecisionPlan(INT8, False, flags, (), False,
                             (f"QDQ model, weakly typed network with BuilderFlag {' + '.join(flags)}",))
    notes.append("QDQ model in a strongly typed network: int8 where the Q/DQ pairs say, the rest in the model's types")
    return PrecisionPlan(INT8, True, (), (), False, tuple(notes))


# --------------------------------------------------------------------------------------------------------------
# Parser errors


def parser_errors(parser: Any) -> list[dict[str, Any]]:
    """The parser's errors as dicts: node index, node name and operator (TensorRT 10+), code, description."""
    out = []
    for i in range(int(parser.num_errors)):
        e = parser.get_error(i)
        entry: dict[str, Any] = {"desc": str(e.desc()), "code": str(e.code()), "node": int(e.node())}
        for attr, key in (("node_name", "node_name"), ("node_operator", "op")):
            fn = getattr(e, attr, None)
            if fn is not None:
                try:
                    entry[key] = str(fn())
                except Exception:  # noqa: BLE001 - older bindings
                    pass
        out.append(entry)
    return out


def format_parser_errors(errors: Sequence[dict[str, Any]], model: Any | None = None) -> list[str]:
    """One line per failing node: ``name (Op): description``; names from the model when the binding has none."""
    nodes = list(model.graph.node) if model is not None else []
    lines = []
    for e in errors:
        idx = e.get("node", -1)
        name, op = e.get("node_name") or "", e.get("op") or ""
        if (not name or not op) and 0 <= idx < len(nodes):
            name = name or nodes[idx].name or f"<node {idx}>"
            op = op or nodes[idx].op_type
        where = f"{name or '<graph>'} ({op})" if op else (name or "<graph>")
        lines.append(f"{where}: {e.get('desc', '').strip()}")
    return lines


# --------------------------------------------------------------------------------------------------------------
# Build and load


def compute_capability() -> str:
    """``major.minor`` of CUDA device 0 via torch; BackendUnavailable when there is no GPU."""
    torch = require("torch", "TensorRT engines")
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA GPU is visible (TensorRT needs one)", hint="run on a machine with an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


@dataclass
class BuiltEngine:
    """An engine ready to deserialize, and how it was obtained."""

    data: bytes
    key: EngineKey
    engine_path: Path
    from_cache: bool
    build_seconds: float | None
    plan: PrecisionPlan
    profiles: list[ShapeProfile]
    warnings: list[str] = field(default_factory=list)
    engine: Any = None  # the deserialized ICudaEngine when a cache hit already deserialized it


def _is_fp16_model(model: Any) -> bool:
    from onnx import TensorProto

    floats = [t.data_type for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    return bool(floats) and all(t == TensorProto.FLOAT16 for t in floats)


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def build_or_load(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str = FP32,
    batch: str | int | BatchRange | None = None,
    builder_optimization_level: int = 3,
    workspace_bytes: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timing_cache: bool = True,
    allow_tf32: bool = False,
    fp16_fallback: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> BuiltEngine:
    """Return a verified cached engine for this model and configuration, or build, cache and return one.

    Raises:
        BackendUnavailable: TensorRT is not importable, or there is no GPU.
        BadInputError: Bad precision, level or batch range; int8 without Q/DQ nodes.
        TensorRTParseError: The parser refused nodes (each named in the message).
        EngineBuildError: The builder returned no engine.
    """
    trt = require("tensorrt", "native TensorRT engines")
    if isinstance(builder_optimization_level, bool) or builder_optimization_level not in range(0, 6):
        raise BadInputError(f"builder optimisation level {builder_optimization_level!r} is outside 0-5")
    onnx_path = Path(onnx_path)
    model = load_onnx(onnx_path, load_external=False).model
    plan = plan_precision(
        precision,
        trt.__version__,
        has_weak_precision_flags=hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8"),
        model_has_qdq=ort_options.model_has_qdq(model),
        model_is_fp16=_is_fp16_model(model),
        fp16_fallback=fp16_fallback,
        allow_tf32=allow_tf32,
    )
    dims = model_input_dims(model)
    if batch is None:
        first = next(iter(dims.values()), [None])
        batch = first[0] if first and isinstance(first[0], int) else 1
    profiles = profiles_for_inputs(dims, parse_batch_range(batch))
    cc = compute_capability()
    flags = {
        **plan.to_dict(),
        "builder_optimization_level": int(builder_optimization_level),
        "workspace_bytes": int(workspace_bytes) if workspace_bytes else None,
        "fp16_fallback": bool(fp16_fallback),
        "allow_tf32": bool(allow_tf32),
    }
    key = EngineKey(onnx_fingerprint(onnx_path), str(trt.__version__), cc, flags, profiles_key(profiles))
    cache = EngineCache(cache_dir)
    warnings = list(cache.warnings)
    found = cache.lookup(key)
    warnings.extend(found.warnings)
    logger = _logger(trt)
    if found.engine is not None:
        engine = trt.Runtime(logger).deserialize_cuda_engine(found.engine)
        if engine is not None:
            return BuiltEngine(found.engine, key, found.engine_path, True, None, plan, profiles,
                               _emit(warnings, on_warning), engine=engine)
        warnings.append(cache.invalidate(key, f"TensorRT {trt.__version__} could not deserialize it"))

    data, seconds = _build(trt, logger, onnx_path, model, plan, profiles, builder_optimization_level, workspace_bytes,
                           cache.root if timing_cache else None, cc)
    path = cache.store(key, data, extra={"build_seconds": round(seconds, 3), "onnx_path": str(onnx_path),
                                         "notes": list(plan.notes)})
    return BuiltEngine(data, key, path, False, seconds, plan, profiles, _emit(warnings, on_warning))


def _emit(warnings: list[str], on_warning: Callable[[str], None] | None) -> list[str]:
    if on_warning is not None:
        for w in warnings:
            on_warning(w)
    return warnings


def _timing_cache_path(root: Path, trt_version: str, cc: str) -> Path:
    folder, _ = ensure_private_dir(root / "timing")
    return folder / f"tensorrt-{trt_version}-sm{cc.replace('.', '')}.cache"


def _build(
    trt: Any,
    logger: Any,
    onnx_path: Path,
    model: Any,
    plan: PrecisionPlan,
    profiles: list[ShapeProfile],
    level: int,
    workspace_bytes: int | None,
    timing_root: Path | None,
    cc: str,
) -> tuple[bytes, float]:
    builder = trt.Builder(logger)
    net_flags = 0
    if plan.strongly_typed:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif trt_major(trt.__version__) < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)

    with scratch_dir("trt") as tmp:
        parse_path = onnx_path
        parsed_model = model
        if plan.convert_to_fp16:
            full = load_onnx(onnx_path).model
            parsed_model = float16_graph(full, keep_io_types=True)
            parse_path = Path(tmp) / "model.fp16.onnx"
            save_onnx(parsed_model, parse_path)
        ok = parser.parse_from_file(str(parse_path))  # from a file, so external data is found beside it
    if not ok:
        errors = parser_errors(parser)
        lines = format_parser_errors(errors, parsed_model)
        shown = "; ".join(lines[:6]) + (f"; and {len(lines) - 6} more" if len(lines) > 6 else "")
        raise TensorRTParseError(
            f"TensorRT {trt.__version__}'s ONNX parser refused {len(lines)} node(s): {shown}",
            errors,
            hint="deployinc check MODEL --target tensorrt lists what the support matrix allows",
        )

    config = builder.create_builder_config()
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(level)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    dynamic = any(p.min != p.max for p in profiles) or any(
        not all(isinstance(d, int) for d in dims) for dims in model_input_dims(parsed_model).values()
    )
    if dynamic:
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)

    timing_path = None
    timing = None
    if timing_root is not None:
        timing_path = _timing_cache_path(Path(timing_root), str(trt.__version__), cc)
        blob = timing_path.read_bytes() if timing_path.exists() else b""
        timing = config.create_timing_cache(blob)
        config.set_timing_cache(timing, False)  # ignore_mismatch=False: a cache from another device is not used

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not build an engine from {onnx_path}",
            hint="see TensorRT's log above; try a larger --workspace or a lower --opt-level",
        )
    if timing is not None and timing_path is not None:
        atomic_write_bytes(timing_path, bytes(timing.serialize()), force=True, mode=0o600)
    return bytes(serialized), seconds


def deserialize(trt: Any, data: bytes) -> Any:
    """Deserialize an engine; raise EngineBuildError when TensorRT returns None."""
    engine = trt.Runtime(_logger(trt)).deserialize_cuda_engine(data)
    if engine is None:
        raise EngineBuildError("TensorRT could not deserialize the engine", hint="delete the cache entry and rebuild")
    return engine


def io_tensors(trt: Any, engine: Any) -> tuple[list[str], list[str]]:
    """Input and output tensor names of an engine, in engine order."""
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
    return inputs, outputs
