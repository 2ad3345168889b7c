"""A Triton Inference Server model repository for an ONNX model, served by Triton's ``onnxruntime`` backend.

Triton loads a model from ``<repository>/<name>/config.pbtxt`` (the model configuration, a ``ModelConfig``
protobuf message in text format) and ``<repository>/<name>/<version>/model.onnx``. This module writes both:

- :func:`io_specs` reads the model's inputs and outputs (names, Triton data types, dims) and whether dim 0 is a
  dynamic batch;
- :func:`triton_config` writes ``config.pbtxt``: ``platform: "onnxruntime_onnx"`` with ``backend: "onnxruntime"``,
  the tensors, ``max_batch_size`` and ``dynamic_batching`` when the model batches (``max_batch_size: 0`` and the
  full shapes when it does not), an ``instance_group``, and an optional execution accelerator (TensorRT on GPU
  instances, OpenVINO on CPU);
- :func:`validate` parses a configuration with Triton's own schema (``model_config_pb2`` from the ``tritonclient``
  package, the ``triton`` extra), which :func:`model_config_schema` loads without needing grpcio;
- :func:`write_repository` lays out the folder, with the ONNX file's external-data files beside it.

The text is written here, in a fixed key order, so that it reads like the examples in Triton's documentation and
does not change between runs; where the schema is installed, :func:`triton_config` parses its own text as a check.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, OutputExistsError
from ..io import copy_onnx, load_onnx

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["TensorSpec", "io_specs", "model_config_schema", "triton_config", "validate", "write_repository"]

#: What :func:`validate` says when the schema is not installed.
SCHEMA_MISSING = "tritonclient is not installed (pip install 'deployinc[triton]')"

#: The private name under which tritonclient's model_config_pb2.py is loaded (see :func:`model_config_schema`).
_SCHEMA_MODULE = "deployinc._triton_model_config_pb2"
_SCHEMA_LOCK = threading.Lock()
#: None: not tried yet; False: tried and failed; otherwise the ModelConfig class.
_schema_cache: Any = None

#: Model names Triton can serve from a folder of that name.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

#: ONNX TensorProto element types (by name) to Triton data types.
_ONNX_TO_TRITON = {
    "FLOAT": "TYPE_FP32",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "DOUBLE": "TYPE_FP64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "BOOL": "TYPE_BOOL",
    "STRING": "TYPE_STRING",
}

_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}

#: Keys the onnxruntime backend accepts for the TensorRT accelerator (it refuses a model with any other key).
_TENSORRT_KEYS = frozenset({
    "precision_mode", "max_workspace_size_bytes", "trt_max_partition_iterations", "trt_min_subgraph_size",
    "int8_calibration_table_name", "int8_use_native_calibration_table", "trt_dla_enable", "trt_dla_core",
    "trt_engine_cache_enable", "trt_engine_cache_path", "trt_engine_cache_prefix", "trt_dump_subgraphs",
    "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback",
    "trt_timing_cache_enable", "trt_timing_cache_path", "trt_force_timing_cache", "trt_detailed_build_log",
    "trt_build_heuristics_enable", "trt_sparsity_enable", "trt_builder_optimization_level", "trt_auxiliary_streams",
    "trt_tactic_sources", "trt_extra_plugin_lib_paths", "trt_profile_min_shapes", "trt_profile_max_shapes",
    "trt_profile_opt_shapes", "trt_cuda_graph_enable", "trt_dump_ep_context_model", "trt_ep_context_file_path",
    "trt_ep_context_embed_mode",
})
#: precision_mode values of the TensorRT accelerator (BF16 needs a recent backend).
_TENSORRT_PRECISIONS = ("FP32", "FP16", "BF16", "INT8")


# --------------------------------------------------------------------------------------------------------------
# The schema


def _load_schema_module() -> Any:
    """tritonclient's generated model_config_pb2 module, loaded from its file (its package needs grpcio)."""
    for loaded_name in ("tritonclient.grpc.model_config_pb2", _SCHEMA_MODULE):
        module = sys.modules.get(loaded_name)
        if module is not None and hasattr(module, "ModelConfig"):
            return module
    spec = importlib.util.find_spec("tritonclient")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(p) / "grpc" / "model_config_pb2.py" for p in locations if (Path(p) / "grpc" / "model_config_pb2.py").is_file()), None)
    if path is None:
        raise ImportError("tritonclient/grpc/model_config_pb2.py not found")
    file_spec = importlib.util.spec_from_file_location(_SCHEMA_MODULE, path)
    if file_spec is None or file_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[_SCHEMA_MODULE] = module
    try:
        file_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_SCHEMA_MODULE, None)
        raise
    return module


def model_config_schema() -> type | None:
    """Triton's ModelConfig protobuf message class, from tritonclient's generated model_config_pb2, or None when
    tritonclient is not installed.

    ``import tritonclient.grpc.model_config_pb2`` needs grpcio (the package's ``__init__`` imports it), so the file
    is loaded directly under a private module name. The result, a failure included, is cached: protobuf's default
    descriptor pool must not get ``model_config.proto`` twice. Any failure (tritonclient missing, a protobuf runtime
    that refuses the generated code) gives None.
    """
    global _schema_cache
    with _SCHEMA_LOCK:
        if _schema_cache is None:
            try:
                _schema_cache = _load_schema_module().ModelConfig
            except Exception:  # noqa: BLE001 - ImportError, protobuf's VersionError, a broken install: all mean "absent"
                _schema_cache = False
        return _schema_cache or None


def validate(text: str) -> str | None:
    """None when the text parses with Triton's ModelConfig schema; the parser's message otherwise.

    Never raises: returns :data:`SCHEMA_MISSING` ("tritonclient is not installed (pip install 'deployinc[triton]')")
    when the schema is missing.
    """
    schema = model_config_schema()
    if schema is None:
        return SCHEMA_MISSING
    from google.protobuf import text_format

    try:
        text_format.Parse(text, schema())
    except text_format.ParseError as exc:
        return str(exc)
    except (TypeError, ValueError) as exc:  # not text (bytes, None), or text protobuf cannot take
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------------------------------------------
# The model's tensors


@dataclass
class TensorSpec:
    """One input or output as Triton sees it."""

    name: str
    #: Triton data type, e.g. ``"TYPE_FP32"``.
    dtype: str
    #: Without the batch dimension when the model batches; -1 for a dynamic dim.
    dims: list[int]


def _tensor_type(value_info: Any, role: str) -> tuple[str, list[int | None] | None]:
    """(Triton data type, dims with None for a symbolic or unknown dim, or None for an unknown rank)."""
    import onnx

    name = value_info.name
    if value_info.type.WhichOneof("value") != "tensor_type":
        kind = value_info.type.WhichOneof("value") or "no type"
        raise BadInputError(f"{role} {name!r} is a {kind}, not a tensor", hint="Triton's onnxruntime backend serves tensor inputs and outputs only")
    tensor_type = value_info.type.tensor_type
    elem = onnx.TensorProto.DataType.Name(tensor_type.elem_type) if tensor_type.elem_type in onnx.TensorProto.DataType.values() else str(tensor_type.elem_type)
    if elem not in _ONNX_TO_TRITON:
        raise BadInputError(
            f"{role} {name!r} has element type {elem}, which Triton has no data type for",
            hint="supported: " + ", ".join(sorted(_ONNX_TO_TRITON)) + "; cast the tensor in the model",
        )
    if not tensor_type.HasField("shape"):
        return _ONNX_TO_TRITON[elem], None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return _ONNX_TO_TRITON[elem], dims


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec], bool]:
    """Inputs (graph inputs that are not initializers) and outputs of an ONNX model, and whether its first
    dimension is a dynamic batch (all inputs and outputs have a symbolic/unknown dim 0).

    Dims are -1 where symbolic or unknown. When the model batches, dim 0 is left out of every spec.

    Raises:
        BadInputError: A tensor that is no tensor (a sequence, a map), of an element type Triton has no data type
            for, of unknown rank, or a model without inputs or outputs.
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer} | {t.name for t in graph.sparse_initializer}
    raw: list[tuple[str, str, str, list[int | None]]] = []
    for role, infos in (("input", [i for i in graph.input if i.name not in initializers]), ("output", list(graph.output))):
        if not infos:
            raise BadInputError(f"the ONNX model has no graph {role}s", hint="export the model again; Triton needs named inputs and outputs")
        for info in infos:
            dtype, dims = _tensor_type(info, role)
            if dims is None:
                raise BadInputError(
                    f"{role} {info.name!r} has no shape (unknown rank); Triton's config needs one",
                    hint="export the model with input shapes (or run deployinc simplify, which infers shapes)",
                )
            raw.append((role, info.name, dtype, dims))
    batching = all(len(dims) >= 1 and dims[0] is None for _, _, _, dims in raw)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for role, name, dtype, dims in raw:
        kept = dims[1:] if batching else dims
        spec = TensorSpec(name=name, dtype=dtype, dims=[-1 if d is None else d for d in kept])
        (inputs if role == "input" else outputs).append(spec)
    return inputs, outputs, batching


# --------------------------------------------------------------------------------------------------------------
# config.pbtxt


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", "..") or len(name) > 255:
        raise BadInputError(
            f"Triton model name {name!r} is not usable: letters, digits, '_', '-' and '.' only",
            hint="pick a name such as resnet50_fp16 (it is also the model's folder in the repository)",
        )


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _int_list(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]" if values else "[ ]"


def _tensor_block(field: str, specs: Sequence[TensorSpec], batch_dim: bool) -> list[str]:
    """``input [ ... ]`` or ``output [ ... ]``; ``batch_dim`` puts back a -1 dim 0 (a batching model served unbatched)."""
    lines = [f"{field} ["]
    for i, spec in enumerate(specs):
        dims = [-1, *spec.dims] if batch_dim else list(spec.dims)
        lines += ["  {", f"    name: {_quote(spec.name)}", f"    data_type: {spec.dtype}"]
        if dims:
            lines.append(f"    dims: {_int_list(dims)}")
        else:  # a scalar per request: Triton wants dims [ 1 ] and a reshape to no dims
            lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        lines.append("  }," if i < len(specs) - 1 else "  }")
    lines.append("]")
    return lines


def _accelerator_block(accelerator: Mapping[str, str], kind: str) -> list[str]:
    """``optimization { execution_accelerators { ... } }`` for TensorRT (GPU instances) or OpenVINO (CPU)."""
    if not isinstance(accelerator, Mapping) or "name" not in accelerator:
        raise BadInputError(f"accelerator {accelerator!r} has no 'name'", hint='give e.g. {"name": "tensorrt", "precision_mode": "FP16"}')
    name = accelerator["name"]
    params = {k: v for k, v in accelerator.items() if k != "name"}
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadInputError(f"accelerator parameter {key!r}: {value!r} is not a string pair", hint='Triton takes strings: write "1", not 1 or True')
    if name == "tensorrt":
        if kind != "gpu":
            raise BadInputError("the TensorRT accelerator needs GPU instances (kind='gpu')", hint="Triton ignores a GPU accelerator on CPU instances")
        unknown = sorted(set(params) - _TENSORRT_KEYS)
        if unknown:
            raise BadInputError(
                f"unknown TensorRT accelerator parameter(s) {', '.join(unknown)}; the onnxruntime backend refuses the model",
                hint="known: " + ", ".join(sorted(_TENSORRT_KEYS)),
            )
        if params.get("precision_mode", "FP32") not in _TENSORRT_PRECISIONS:
            raise BadInputError(f"TensorRT precision_mode {params['precision_mode']!r} is not one of {', '.join(_TENSORRT_PRECISIONS)}", hint="use FP16 or FP32")
        field = "gpu_execution_accelerator"
    elif name == "openvino":  # the backend reads no parameters for OpenVINO today; any given are written as they are
        field = "cpu_execution_accelerator"
    else:
        raise BadInputError(f"unknown Triton execution accelerator {name!r}", hint="use 'tensorrt' (GPU) or 'openvino' (CPU), or none")
    lines = ["optimization {", "  execution_accelerators {", f"    {field}: [", "      {", f"        name: {_quote(name)}"]
    lines += [f"        parameters {{ key: {_quote(k)} value: {_quote(params[k])} }}" for k in sorted(params)]
    lines += ["      }", "    ]", "  }", "}"]
    return lines


def triton_config(
    name: str,
    model: onnx.ModelProto,
    *,
    max_batch_size: int,
    preferred_batch_sizes: list[int],
    kind: str = "cpu",
    instance_count: int = 1,
    accelerator: dict[str, str] | None = None,
    max_queue_delay_us: int = 100,
    notes: Sequence[str] = (),
) -> str:
    """config.pbtxt text.

    Args:
        name: The model's name in the repository (and its folder): letters, digits, ``_ - .``.
        model: The ONNX model (its graph; external data need not be loaded).
        max_batch_size: The largest batch Triton may form (>= 1), used when the model has a dynamic batch
            dimension; 0 serves the model unbatched. A model with a static batch always gets 0.
        preferred_batch_sizes: Batch sizes the dynamic batcher should aim for; sorted and deduplicated, those
            above ``max_batch_size`` dropped.
        kind: ``"cpu"`` or ``"gpu"`` instances.
        instance_count: Model instances (>= 1).
        accelerator: None, or ``{"name": "tensorrt" | "openvino", <parameter>: <string value>, ...}``. TensorRT
            goes into ``gpu_execution_accelerator`` and needs ``kind="gpu"``; its keys are those of the
            onnxruntime backend (``precision_mode`` FP32/FP16/BF16/INT8, ``max_workspace_size_bytes``,
            ``trt_engine_cache_enable``, ``trt_engine_cache_path``, ...). OpenVINO goes into
            ``cpu_execution_accelerator``.
        max_queue_delay_us: How long the dynamic batcher may hold a request to fill a batch, in microseconds.
        notes: Comment lines written under the header (what the model computes in which precision).

    Raises:
        BadInputError: A bad name, argument, accelerator, or a tensor Triton cannot describe.
        RuntimeError: The text did not parse with Triton's schema (a bug here).
    """
    _check_name(name)
    if kind not in _KINDS:
        raise BadInputError(f"instance kind {kind!r} is not 'cpu' or 'gpu'", hint="use kind='cpu' or kind='gpu'")
    for label, value, least in (("max_batch_size", max_batch_size, 0), ("instance_count", instance_count, 1), ("max_queue_delay_us", max_queue_delay_us, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise BadInputError(f"{label} must be an integer >= {least}, not {value!r}", hint=f"give {label}={max(least, 1)} or more")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in preferred_batch_sizes):
        raise BadInputError(f"preferred batch sizes must be integers >= 1, not {list(preferred_batch_sizes)!r}", hint="e.g. [4, 8, 16]")
    inputs, outputs, batching = io_specs(model)
    batched = batching and max_batch_size > 0
    lines = [
        "# Triton model configuration written by deployinc, for the onnxruntime backend.",
        *["# " + " ".join(str(n).split()) for n in notes],
        f"name: {_quote(name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batched else 0}",
    ]
    lines += _tensor_block("input", inputs, batching and not batched)
    lines += _tensor_block("output", outputs, batching and not batched)
    lines += ["instance_group [", "  {", f"    count: {instance_count}", f"    kind: {_KINDS[kind]}", "  }", "]"]
    if batched:
        preferred = sorted({b for b in preferred_batch_sizes if b <= max_batch_size})
        lines.append("dynamic_batching {")
        if preferred:
            lines.append(f"  preferred_batch_size: {_int_list(preferred)}")
        lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    if accelerator is not None:
        lines += _accelerator_block(accelerator, kind)
    text = "\n".join(lines) + "\n"
    schema = model_config_schema()
    if schema is not None:
        from google.protobuf import text_format

        try:
            text_format.Parse(text, schema())
        except text_format.ParseError as exc:
            raise RuntimeError(f"deployinc wrote a Triton config that Triton's schema refuses ({exc}):\n{text}") from exc
    return text


# --------------------------------------------------------------------------------------------------------------
# The repository


def _check_config_name(config_text: str, name: str) -> None:
    """Where the schema is installed: the text must parse and its ``name`` (if any) must be the folder's."""
    schema = model_config_schema()
    if schema is None:
        return
    from google.protobuf import text_format

    message = schema()
    try:
        text_format.Parse(config_text, message)
    except text_format.ParseError as exc:
        raise BadInputError(f"the Triton config does not parse: {exc}", hint="write it with deployinc.deploy.triton.triton_config") from exc
    if message.name and message.name != name:
        raise BadInputError(
            f"the Triton config names the model {message.name!r} but its folder is {name!r}; Triton refuses that",
            hint="use the same name for triton_config and write_repository",
        )


def write_repository(root: Path, name: str, onnx_path: Path, config_text: str) -> list[Path]:
    """Lay out root/<name>/config.pbtxt and root/<name>/1/model.onnx.

    The ONNX file is copied byte for byte; external-data files it references (checked by
    :func:`deployinc.io.load_onnx`: beside it, no symlinks, nothing outside its folder) are copied into ``1/``
    under the same relative names. ``root`` must not exist yet or be an empty directory; on failure what this call
    created is removed. Where the schema is installed the config must parse and name the model ``name``.

    Returns:
        The files written: config.pbtxt, model.onnx, then the external-data files in name order.

    Raises:
        BadInputError: A bad name or config; OnnxFileError for an unreadable ONNX file; OutputExistsError when
            ``root`` is a file or a non-empty directory.
    """
    root, onnx_path = Path(root), Path(onnx_path)
    _check_name(name)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise OutputExistsError(f"Triton repository folder {root} exists and is not empty", hint="give a new or empty folder")
    _check_config_name(config_text, name)
    load_onnx(onnx_path, load_external=False, check_graph=False)  # an unreadable file fails before anything is made
    created = root if not root.exists() else root / name
    written: list[Path] = []
    try:
        version_dir = root / name / "1"
        version_dir.mkdir(parents=True)
        config_path = root / name / "config.pbtxt"
        config_path.write_text(config_text, encoding="utf-8")
        written.append(config_path)
        written += copy_onnx(onnx_path, version_dir / "model.onnx")
    except BaseException:
        shutil.rmtree(created, ignore_errors=True)
        raise
    return written
