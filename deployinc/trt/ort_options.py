"""Provider options for ONNX Runtime's TensorRT and CUDA execution providers, as deployinc configures them.

The TensorRT execution provider builds engines itself; deployinc decides everything it is told:

- precision: ``fp32``; ``fp16`` (``trt_fp16_enable``); ``int8`` (``trt_int8_enable``, with fp16 allowed for the layers
  that stay in floating point unless ``fp16_fallback=False``). An int8 model is either a QDQ model (from
  ``deployinc quantize``: the scales are in the graph, and TensorRT refuses a calibration table next to Q/DQ nodes) or a
  plain model plus a calibration table, which is copied into the engine-cache folder because that is where the
  provider looks for it (``trt_int8_calibration_table_name`` is a file name relative to ``trt_engine_cache_path``).
- an engine cache in a private folder of the deployinc cache keyed like native engines (:class:`EngineKey`: the
  ONNX bytes and external data, ORT and TensorRT versions, GPU, every option below, the profile shapes, the deployinc
  version), so two models, two precisions or two profiles never share an engine (ORT issue #6455);
- a timing cache shared by every model built with the same ORT/TensorRT versions (timing data is per GPU and
  version, not per model; the provider names the file after the GPU's compute capability);
- optimisation profiles (``trt_profile_min/opt/max_shapes`` as ``input:1x3x224x224``) from the batch range;
- the builder optimisation level (0-5, TensorRT's default 3) and CUDA graphs.

The option names are those of ONNX Runtime's ``tensorrt_execution_provider_info.cc``; :data:`TRT_OPTION_NAMES`
lists the ones deployinc emits, all present in onnxruntime-gpu 1.31. Values are strings (``"True"``/``"False"`` for
booleans), which is what the provider parses. Nothing here touches a GPU; :func:`detect_compute_capability` is only
called when the caller does not pass one.

Typical use (ORT's TensorRT provider first, CUDA for what TensorRT does not take, CPU last)::

    trt = tensorrt_provider_options("model.onnx", precision="fp16", batch="1,8,32")
    providers = [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda_provider_options()),
                 "CPUExecutionProvider"]
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..io import atomic_write_bytes, load_onnx
from .cache import EngineKey, default_cache_dir, ensure_private_dir, onnx_fingerprint, subdir_for_key
from .profiles import BatchRange, ShapeProfile, ort_shape_strings, parse_batch_range, profiles_for_model, profiles_key
from ..core.precisions import FP16, FP32, INT8, TRT_PRECISIONS

PRECISIONS = TRT_PRECISIONS
#: TensorRT builder optimisation levels (TensorRT 8.6+): 0 fastest build ... 5 most tactics; 3 is TensorRT's default.
OPT_LEVELS = range(0, 6)
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")

#: TensorRT-provider option names deployinc may emit (all in onnxruntime-gpu 1.31's provider library).
TRT_OPTION_NAMES = frozenset(
    {
        "device_id",
        "trt_fp16_enable",
        "trt_int8_enable",
        "trt_int8_calibration_table_name",
        "trt_int8_use_native_calibration_table",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_profile_min_shapes",
        "trt_profile_opt_shapes",
        "trt_profile_max_shapes",
        "trt_builder_optimization_level",
        "trt_cuda_graph_enable",
        "trt_max_workspace_size",
    }
)
#: CUDA-provider option names deployinc may emit.
CUDA_OPTION_NAMES = frozenset(
    {"device_id", "cudnn_conv_algo_search", "enable_cuda_graph", "use_tf32", "gpu_mem_limit", "prefer_nhwc"}
)
#: The file name a calibration table gets inside the engine-cache folder.
CALIBRATION_TABLE_NAME = "deployinc-calibration"


def _b(flag: bool) -> str:
    return "True" if flag else "False"


@dataclass
class TrtProviderConfig:
    """The options for ``TensorrtExecutionProvider`` and what deployinc decided along the way.

    Attributes:
        options: Provider options (str -> str) to pass to ONNX Runtime.
        key: The cache key of this configuration.
        engine_cache_dir: Private folder for this key's engines (ORT writes ``.engine``/``.profile`` files there).
        timing_cache_dir: Shared private folder for timing caches.
        profiles: The optimisation profile, empty when none was asked for.
        warnings: Things the user should hear (a cache folder repaired to 0700...).
    """

    options: dict[str, str]
    key: EngineKey
    engine_cache_dir: Path
    timing_cache_dir: Path
    profiles: list[ShapeProfile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def model_has_qdq(model: Any) -> bool:
    """Whether the graph holds QuantizeLinear/DequantizeLinear nodes (an explicitly quantized model)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def calibration_table_is_native(path: str | os.PathLike[str]) -> bool:
    """True for a TensorRT-native calibration cache (a text header ``TRT-<version>-<Calibrator>``), False for the
    flatbuffers table ONNX Runtime's quantization tools write (``calibration.flatbuffers``)."""
    with open(path, "rb") as f:
        head = f.read(64)
    return re.match(rb"TRT-\d+", head) is not None


def detect_compute_capability() -> str:
    """``"major.minor"`` of CUDA device 0 through torch when a GPU is visible, else ``"unknown"``.

    Only called when the caller passes no compute capability; it initialises CUDA, so call it at activation time.
    """
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}"
    except Exception:  # noqa: BLE001 - any failure means we cannot tell
        pass
    return "unknown"


def _tensorrt_version() -> str:
    """Version of the TensorRT Python package if installed, without importing it (importing loads the libraries)."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_libs"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _ort_version() -> str:
    try:
        from importlib import metadata

        for dist in ("onnxruntime-gpu", "onnxruntime"):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    except Exception:  # noqa: BLE001 - a version is informative only (engine cache key); unknown is recorded as such
        pass
    return "unknown"


def _safe_component(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "unknown"


def tensorrt_provider_config(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str = FP32,
    batch: str | int | BatchRange | None = None,
    calibration_table: str | os.PathLike[str] | None = None,
    fp16_fallback: bool = True,
    builder_optimization_level: int = 3,
    cuda_graph: bool = False,
    device_id: int = 0,
    workspace_bytes: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    compute_capability: str | None = None,
    engine_cache: bool = True,
    timing_cache: bool = True,
) -> TrtProviderConfig:
    """Options for ``TensorrtExecutionProvider`` for one model; see the module docstring for what each does.

    Args:
        onnx_path: The ONNX model the session will load (read to key the cache and find input names).
        precision: ``fp32``, ``fp16`` or ``int8``.
        batch: Batch range for an optimisation profile (``"1,8,32"``, ``"8"``...); None: no explicit profile.
        calibration_table: For ``int8`` on a model without Q/DQ nodes: ORT's ``calibration.flatbuffers`` or a
            TensorRT-native cache. Refused for a QDQ model.
        fp16_fallback: With ``int8``, let non-quantized layers run in fp16 (otherwise fp32).
        builder_optimization_level: 0-5.
        cuda_graph: Capture and replay a CUDA graph (needs static shapes per run, inputs bound on the device).
        device_id: CUDA device.
        workspace_bytes: Builder workspace limit; None leaves the provider's default.
        cache_dir: Cache root (default :func:`~deployinc.trt.cache.default_cache_dir`).
        compute_capability: The GPU's ``major.minor`` for the key; None detects it (initialises CUDA).
        engine_cache: Cache engines (in the keyed private folder).
        timing_cache: Keep a timing cache (in the shared private folder).

    Raises:
        BadInputError: An unknown precision or level, int8 with neither Q/DQ nodes nor a table, a table with a QDQ
            model, a missing table, or a profile that does not fit the model's inputs.
    """
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if isinstance(builder_optimization_level, bool) or builder_optimization_level not in OPT_LEVELS:
        raise BadInputError(
            f"builder optimisation level {builder_optimization_level!r} is outside 0-5",
            hint="use 0 (fastest build) to 5 (most tactics); TensorRT's default is 3",
        )
    if workspace_bytes is not None and (isinstance(workspace_bytes, bool) or int(workspace_bytes) <= 0):
        raise BadInputError(f"workspace size {workspace_bytes!r} must be a positive number of bytes")
    onnx_path = Path(onnx_path)
    onnx_file = load_onnx(onnx_path, load_external=False)
    model = onnx_file.model
    qdq = model_has_qdq(model)

    table_bytes, table_sha, table_native = _calibration_table(calibration_table, precision, qdq, onnx_path)

    profiles: list[ShapeProfile] = []
    if batch is not None:
        profiles = profiles_for_model(model, parse_batch_range(batch))

    ort_version = _ort_version()
    trt_version = _tensorrt_version()
    cc = compute_capability if compute_capability is not None else detect_compute_capability()
    flags: dict[str, Any] = {
        "provider": "onnxruntime-TensorrtExecutionProvider",
        "precision": precision,
        FP16: precision == FP16 or (precision == INT8 and fp16_fallback),
        INT8: precision == INT8,
        "qdq_model": qdq,
        "calibration_table_sha256": table_sha,
        "calibration_table_native": table_native,
        "builder_optimization_level": int(builder_optimization_level),
        "cuda_graph": bool(cuda_graph),
        "workspace_bytes": int(workspace_bytes) if workspace_bytes is not None else None,
        "device_id": int(device_id),
    }
    key = EngineKey(
        onnx_sha256=onnx_fingerprint(onnx_path),
        trt_version=f"onnxruntime {ort_version} / tensorrt {trt_version}",
        compute_capability=cc,
        builder_flags=flags,
        profiles=profiles_key(profiles),
    )
    engine_dir, timing_dir, warnings = _cache_dirs(cache_dir, key, ort_version, trt_version)

    opts: dict[str, str] = {
        "device_id": str(int(device_id)),
        "trt_fp16_enable": _b(flags[FP16]),
        "trt_int8_enable": _b(flags[INT8]),
        "trt_engine_cache_enable": _b(engine_cache),
        "trt_engine_cache_path": str(engine_dir),
        "trt_timing_cache_enable": _b(timing_cache),
        "trt_timing_cache_path": str(timing_dir),
        "trt_builder_optimization_level": str(int(builder_optimization_level)),
        "trt_cuda_graph_enable": _b(cuda_graph),
    }
    if workspace_bytes is not None:
        opts["trt_max_workspace_size"] = str(int(workspace_bytes))
    if calibration_table is not None:
        # The provider reads the table from the engine-cache folder, by name.
        atomic_write_bytes(engine_dir / CALIBRATION_TABLE_NAME, table_bytes, force=True, mode=0o600)
        opts["trt_int8_calibration_table_name"] = CALIBRATION_TABLE_NAME
        opts["trt_int8_use_native_calibration_table"] = _b(bool(table_native))
    if profiles:
        lo, opt, hi = ort_shape_strings(profiles)
        opts["trt_profile_min_shapes"] = lo
        opts["trt_profile_opt_shapes"] = opt
        opts["trt_profile_max_shapes"] = hi
    unknown = set(opts) - TRT_OPTION_NAMES
    assert not unknown, f"deployinc emitted TensorRT-provider options it does not declare: {sorted(unknown)}"
    return TrtProviderConfig(
        options=opts,
        key=key,
        engine_cache_dir=engine_dir,
        timing_cache_dir=timing_dir,
        profiles=profiles,
        warnings=warnings,
    )


def _calibration_table(calibration_table: Any, precision: str, qdq: bool, onnx_path: Path) -> tuple[bytes | None, str | None, bool | None]:
    """(bytes, sha256, is-native) of an int8 calibration table; Nones without one.

    Raises:
        BadInputError: A table without int8, with a QDQ model, missing or empty; int8 with neither.
    """
    table_bytes = None
    table_sha = None
    table_native = None
    if calibration_table is not None:
        if precision != INT8:
            raise BadInputError(
                f"a calibration table was given with precision {precision}", hint="it is used only with int8"
            )
        if qdq:
            raise BadInputError(
                f"{onnx_path} already holds Q/DQ nodes; TensorRT refuses a calibration table for a QDQ model",
                hint="drop the calibration table: the scales are in the model",
            )
        table = Path(calibration_table)
        if not table.is_file() or table.stat().st_size == 0:
            raise BadInputError(f"calibration table {table} does not exist or is empty", hint="check the path")
        table_bytes = table.read_bytes()
        table_sha = hashlib.sha256(table_bytes).hexdigest()
        table_native = calibration_table_is_native(table)
    elif precision == INT8 and not qdq:
        raise BadInputError(
            f"int8 needs a quantized (QDQ) model or a calibration table, and {onnx_path} has no Q/DQ nodes",
            hint="run deployinc quantize on it first, or pass a calibration table",
        )
    return table_bytes, table_sha, table_native


def _cache_dirs(cache_dir: Any, key: Any, ort_version: str, trt_version: str) -> tuple[Path, Path, list[str]]:
    """The keyed engine folder and the shared timing-cache folder, both private; warnings on repaired modes."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    engine_dir, warnings = subdir_for_key(root, "ort-trt", key)
    base, more = ensure_private_dir(root)
    warnings.extend(more)
    timing_parent, more = ensure_private_dir(base / "ort-trt-timing")
    warnings.extend(more)
    timing_dir, more = ensure_private_dir(timing_parent / _safe_component(f"ort-{ort_version}_trt-{trt_version}"))
    warnings.extend(more)
    return engine_dir, timing_dir, warnings


def tensorrt_provider_options(onnx_path: str | os.PathLike[str], **kwargs: Any) -> dict[str, str]:
    """Just the options dict of :func:`tensorrt_provider_config` (same arguments).

    Example::

        opts = tensorrt_provider_options("resnet50.onnx", precision="fp16", batch="1,8,32", cuda_graph=False)
        sess = ort.InferenceSession("resnet50.onnx", providers=[("TensorrtExecutionProvider", opts), ...])
    """
    return tensorrt_provider_config(onnx_path, **kwargs).options


def cuda_provider_options(
    *,
    device_id: int = 0,
    conv_algo_search: str = "EXHAUSTIVE",
    cuda_graph: bool = False,
    tf32: bool = False,
    gpu_mem_limit: int | None = None,
    prefer_nhwc: bool | None = None,
) -> dict[str, str]:
    """Options for ``CUDAExecutionProvider``.

    Args:
        device_id: CUDA device.
        conv_algo_search: cuDNN convolution algorithm search: ``EXHAUSTIVE`` (ORT's default; benchmarks every
            algorithm on first run), ``HEURISTIC`` or ``DEFAULT``.
        cuda_graph: ``enable_cuda_graph`` (static shapes, inputs bound on the device with IOBinding).
        tf32: Allow TF32 for fp32 matmul/conv (off by default so fp32 parity numbers mean fp32).
        gpu_mem_limit: Arena limit in bytes; None leaves it unlimited.
        prefer_nhwc: Use NHWC kernels where ORT has them; None leaves ORT's default.
    """
    search = conv_algo_search.upper()
    if search not in CONV_ALGO_SEARCH:
        raise BadInputError(
            f"unknown cuDNN algorithm search {conv_algo_search!r}", hint=f"use one of {', '.join(CONV_ALGO_SEARCH)}"
        )
    opts = {
        "device_id": str(int(device_id)),
        "cudnn_conv_algo_search": search,
        "enable_cuda_graph": "1" if cuda_graph else "0",
        "use_tf32": "1" if tf32 else "0",
    }
    if gpu_mem_limit is not None:
        if int(gpu_mem_limit) <= 0:
            raise BadInputError(f"gpu_mem_limit {gpu_mem_limit!r} must be positive")
        opts["gpu_mem_limit"] = str(int(gpu_mem_limit))
    if prefer_nhwc is not None:
        opts["prefer_nhwc"] = "1" if prefer_nhwc else "0"
    return opts
