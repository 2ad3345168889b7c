"""What an ONNX file holds, in one look (like Polygraphy's ``inspect model``): inputs and outputs, opsets, producer,
operators, initializers, external data, precision, a runtime check, and deployinc's provenance metadata.

:func:`inspect_model` returns a JSON-ready dict; :func:`render` writes it for a terminal of 80 columns. The file
is read through :func:`deployinc.io.load_onnx` with ``check_graph=False`` (a graph that no runtime would run, a
cycle or a custom operator, is still inspectable: the problem is one entry of the result) and without loading
external data (its files are listed with their sizes; nothing is read from them).

Nothing here imports torch or ONNX Runtime.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

from .core.graph import detect_precision, dims_of, graph_problem
from .io import load_onnx, sha256_file
from .io.onnx_files import _external_tensors
from .metadata import PREFIX, Provenance, read_provenance
from .core.precisions import INT8

#: Screen width of :func:`render`.
WIDTH = 80
#: Largest calibration report (``<name>.calibration.json``) read for its summary.
_SIDECAR_MAX_BYTES = 64 * 2**20
#: Bits per element of fixed-size ONNX tensor types (those numpy has no dtype for included).
_BITS = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128, 16: 16,
    17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6,
}  # fmt: skip
#: Fields of the int8 calibration report shown in the summary.
_CALIBRATION_KEYS = (
    "method", "percentile", "target", "calibration_images", "calibration_data", "per_channel", "activation_type",
    "weight_type", "quant_format", "source_model", "source_sha256", "excluded_nodes", "keep_fp32_before", "warnings",
)  # fmt: skip


def dtype_name(elem_type: int) -> str:
    """``1`` -> ``float32``, ``10`` -> ``float16``, ``7`` -> ``int64``; ONNX's own name for types numpy lacks."""
    from onnx import TensorProto

    numpy_names = {1: "float32", 10: "float16", 11: "float64", 9: "bool", 14: "complex64", 15: "complex128"}
    if elem_type in numpy_names:
        return numpy_names[elem_type]
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def _text(value: Any) -> str:
    """A protobuf string field as text (a damaged file can hand out bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _io_entry(vi: Any) -> dict[str, Any]:
    """name, dtype and shape of a graph input or output (``shape`` None when the file records none)."""
    t = vi.type
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        tt = t.tensor_type
        shape = dims_of(vi) if tt.HasField("shape") else None
        return {"name": _text(vi.name), "dtype": dtype_name(int(tt.elem_type)), "shape": shape}
    if kind == "sparse_tensor_type":
        st = t.sparse_tensor_type
        dims = [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in st.shape.dim]
        return {"name": _text(vi.name), "dtype": "sparse " + dtype_name(int(st.elem_type)), "shape": dims if st.HasField("shape") else None}
    return {"name": _text(vi.name), "dtype": (kind or "unknown").replace("_type", ""), "shape": None}


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _tensor_bytes(t: Any) -> int:
    """Bytes of a tensor's values, wherever they are stored (raw, typed fields, external data)."""
    from onnx import TensorProto

    if t.data_type == TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    bits = _BITS.get(int(t.data_type))
    if bits is not None:
        return (_numel(t.dims) * bits + 7) // 8
    if t.HasField("raw_data"):
        return len(t.raw_data)
    info = {e.key: e.value for e in t.external_data}
    return int(info.get("length", 0) or 0)


def _initializers(model: Any) -> dict[str, Any]:
    by_dtype: dict[str, dict[str, int]] = {}
    total = 0
    tensors = list(model.graph.initializer)
    for t in tensors:
        b = _tensor_bytes(t)
        total += b
        entry = by_dtype.setdefault(dtype_name(int(t.data_type)), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += b
    out: dict[str, Any] = {
        "count": len(tensors),
        "bytes": total,
        "by_dtype": dict(sorted(by_dtype.items(), key=lambda kv: (-kv[1]["bytes"], kv[0]))),
    }
    sparse = list(model.graph.sparse_initializer)
    if sparse:
        out["sparse_count"] = len(sparse)
    # Weights stored in Constant nodes (some exporters and converters write them there instead).
    const_count = const_bytes = 0
    for n in model.graph.node:
        if n.op_type == "Constant" and (n.domain or "") in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    const_count += 1
                    const_bytes += _tensor_bytes(a.t)
    out["constants"] = {"count": const_count, "bytes": const_bytes}
    return out


def _external_data(model: Any, base: Path) -> dict[str, Any]:
    """Per external-data file: tensors, bytes declared, and its size on disk (load_onnx has checked each one:
    beside the model, a regular file, long enough)."""
    files: dict[str, dict[str, Any]] = {}
    for t in _external_tensors(model):
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        entry = files.setdefault(loc, {"location": loc, "tensors": 0, "bytes": 0, "file_bytes": None})
        entry["tensors"] += 1
        length = info.get("length")
        entry["bytes"] += int(length) if length else _tensor_bytes(t)
    for entry in files.values():
        try:
            entry["file_bytes"] = os.stat(base / entry["location"]).st_size
        except OSError:
            entry["file_bytes"] = None
    listed = sorted(files.values(), key=lambda e: e["location"])
    return {
        "files": listed,
        "tensors": sum(e["tensors"] for e in listed),
        "bytes": sum(e["bytes"] for e in listed),
    }


#: What of a metadata value is shown: strings up to this many characters, lists and dicts up to this many entries,
#: nesting up to this depth (a file can carry anything there; inspect shows it without being stopped by it).
_TEXT_MAX = 2000
_ITEMS_MAX = 256
_DEPTH_MAX = 8


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested beyond what the parser takes
        return value


def _tame(value: Any, depth: int = 0) -> Any:
    """A metadata value cut to what is shown (:data:`_TEXT_MAX`, :data:`_ITEMS_MAX`, :data:`_DEPTH_MAX`), marked
    where it was cut; JSON types only."""
    if isinstance(value, str):
        return value if len(value) <= _TEXT_MAX else value[:_TEXT_MAX] + f"... ({len(value):,} characters)"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= _DEPTH_MAX:
        return "(nested deeper than shown)"
    if isinstance(value, (list, tuple)):
        out = [_tame(v, depth + 1) for v in value[:_ITEMS_MAX]]
        return out + ([f"... ({len(value):,} entries)"] if len(value) > _ITEMS_MAX else [])
    if isinstance(value, dict):
        items = list(value.items())
        tamed = {str(k)[:_TEXT_MAX]: _tame(v, depth + 1) for k, v in items[:_ITEMS_MAX]}
        if len(items) > _ITEMS_MAX:
            tamed["..."] = f"({len(items):,} entries)"
        return tamed
    return _tame(str(value), depth)


def _metadata(model: Any) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, str]]:
    """``(provenance, other deployinc.* entries, other metadata_props)``, each value as :func:`_tame` shows it."""
    prov = read_provenance(model)
    known = {f.name for f in fields(Provenance)}
    extra: dict[str, Any] = {}
    other: dict[str, str] = {}
    for p in model.metadata_props:
        key, value = _tame(_text(p.key)), _text(p.value)
        if key.startswith(PREFIX):
            field_name = key[len(PREFIX) :]
            if prov is not None and field_name in known:
                continue
            extra[key] = _tame(_json_or_text(value))
        else:
            other[key] = _tame(value)
    shown = {f.name: _tame(getattr(prov, f.name)) for f in fields(Provenance)} if prov is not None else None
    return shown, extra, other


def calibration_sidecar(path: Path) -> Path:
    """Where ``deployinc quantize`` writes the calibration report of ``path``: ``<name>.calibration.json``."""
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.stem
    return path.with_name(f"{stem}.calibration.json")


def _calibration(path: Path, extra: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the calibration report beside an int8 file (None when the file is no deployinc int8 model)."""
    if "deployinc.int8" not in extra and extra.get("deployinc.precision") != INT8:
        return None
    side = calibration_sidecar(path)
    out: dict[str, Any] = {"report": str(side), "found": False}
    try:
        if side.is_symlink() or not side.is_file():
            return out
        if side.stat().st_size > _SIDECAR_MAX_BYTES:
            out["error"] = f"larger than {_SIDECAR_MAX_BYTES // 2**20} MiB; not read"
            return out
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        out["error"] = f"unreadable: {str(exc)[:120]}"
        return out
    if not isinstance(data, dict):
        out["error"] = "not a calibration report (no JSON object)"
        return out
    out["found"] = True
    out.update({k: data[k] for k in _CALIBRATION_KEYS if k in data})
    if isinstance(data.get("tensors"), dict):
        out["tensors"] = len(data["tensors"])
    return out


class _GraphOnly:
    """A model seen without its metadata: what :func:`detect_precision` reads from the graph alone."""

    metadata_props: tuple[Any, ...] = ()

    def __init__(self, graph: Any):
        self.graph = graph


def inspect_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything ``deployinc inspect`` shows about an ONNX file, as a JSON-ready dict.

    Keys: ``file``, ``file_bytes``, ``sha256``, ``ir_version``, ``opsets`` (domain -> version; ``ai.onnx`` for
    the default domain), ``producer``, ``graph``, ``inputs``/``outputs`` (name, dtype, shape; symbolic dims as
    names), ``nodes`` (``total``, ``by_op`` most frequent first, ``functions``, ``subgraph_nodes``),
    ``initializers`` (count, bytes, ``by_dtype``, tensors in Constant nodes), ``external_data`` (files, tensors,
    bytes), ``precision`` (``value`` and ``why`` from :func:`deployinc.core.graph.detect_precision`;
    ``from_graph``: what the graph alone says, to hold against a recorded ``deployinc.precision``),
    ``runtime_check`` (``ok``, ``problem``, ``hint``: :func:`deployinc.core.graph.graph_problem`), ``provenance``
    (:class:`deployinc.metadata.Provenance` as a dict, None for a file deployinc did not export),
    ``deployinc_metadata`` (other ``deployinc.*`` entries: ``deployinc.precision``, ``deployinc.fp16``,
    ``deployinc.int8``..., JSON-decoded), ``metadata`` (every other ``metadata_props`` entry) and
    ``calibration`` (the summary of an int8 file's ``<name>.calibration.json``, None for other files).

    Raises:
        OnnxFileError: The file cannot be read safely (missing, empty, not ONNX, unsafe external data...).
    """
    loaded = load_onnx(path, check_graph=False, load_external=False)
    model, p = loaded.model, loaded.path
    g = model.graph
    inits = {t.name for t in g.initializer}

    ops = Counter(
        (n.op_type if (n.domain or "") in ("", "ai.onnx") else f"{n.domain}::{n.op_type}") for n in g.node
    )
    subgraph_nodes = 0
    stack = [a for n in g.node for a in n.attribute]
    while stack:
        a = stack.pop()
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            subgraph_nodes += len(sub.node)
            stack.extend(x for n in sub.node for x in n.attribute)

    precision, why = detect_precision(model)
    graph_precision, graph_why = detect_precision(_GraphOnly(g))
    if why.startswith("recorded"):
        evidence = graph_why.removeprefix("the graph ")
        agree = graph_precision == precision
        why += f"; the graph agrees: {evidence}" if agree else f"; but the graph looks {graph_precision}: {evidence}"
    problem = graph_problem(model)
    prov, extra, other = _metadata(model)
    result: dict[str, Any] = {
        "file": str(p),
        "file_bytes": p.stat().st_size,
        "sha256": sha256_file(p),
        "ir_version": int(model.ir_version),
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        "producer": {"name": _text(model.producer_name), "version": _text(model.producer_version)},
        "model_version": int(model.model_version),
        "domain": _text(model.domain),
        "graph": _text(g.name),
        "doc_string": _text(model.doc_string or g.doc_string),
        "inputs": [_io_entry(vi) for vi in g.input if vi.name not in inits],
        "outputs": [_io_entry(vi) for vi in g.output],
        "nodes": {
            "total": len(g.node),
            "by_op": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
            "functions": [f"{f.domain}::{f.name}" if f.domain else f.name for f in model.functions],
            "subgraph_nodes": subgraph_nodes,
        },
        "initializers": _initializers(model),
        "external_data": _external_data(model, p.parent) if loaded.has_external_data else {"files": [], "tensors": 0, "bytes": 0},
        "precision": {"value": precision, "why": why, "from_graph": graph_precision},
        "runtime_check": {"ok": problem is None, "problem": problem[0] if problem else None, "hint": problem[1] if problem else None},
        "provenance": prov,
        "deployinc_metadata": extra,
        "metadata": other,
        "calibration": _calibration(p, extra),
    }
    return result


# rendering -------------------------------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    """``26141312`` -> ``26,141,312 bytes (24.9 MiB)``: the exact count, with a readable size past 1 KiB."""
    exact = f"{n:,} byte" + ("" if n == 1 else "s")
    if n < 1024:
        return exact
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{exact} ({size:.1f} {unit})"
    return exact  # pragma: no cover


def shape_text(shape: list[Any] | None) -> str:
    if shape is None:
        return "(no shape)"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _short(sha: Any, n: int = 12) -> str:
    if not sha:
        return "-"
    return sha[:n] if isinstance(sha, str) else _compact(sha)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _compact(value: Any, nested: bool = False) -> str:
    """A metadata value in one readable line: lists comma-separated, dicts ``key=value``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_compact(v, True) for v in value)
        if nested:
            return f"[{inner}]"
        return inner or "(none)"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={_compact(v, True)}" for k, v in value.items())
        if nested:
            return "{" + inner + "}"
        return inner or "(none)"
    return str(value)


_NBSP = "\xa0"  # holds a unit ("Conv 57", "torch 2.5.1") together when a line is wrapped


def _units(entries: list[str], sep: str = ", ") -> str:
    return sep.join(e.replace(" ", _NBSP) for e in entries)


class _Lines:
    """Lines of at most :data:`WIDTH` columns: ``label  text``, the text wrapped under itself."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def _wrap(self, text: str, width: int) -> list[str]:
        wrapped = textwrap.wrap(text, max(width, 20), break_on_hyphens=False) or [""]
        return [w.replace(_NBSP, " ") for w in wrapped]

    def head(self, text: str) -> None:
        if self.out:
            self.out.append("")
        self.add(text)

    def add(self, text: str, indent: int = 0) -> None:
        wrapped = textwrap.wrap(
            text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * (indent + 4), break_on_hyphens=False
        )
        self.out.extend(w.replace(_NBSP, " ").rstrip() for w in wrapped or [""])

    def field(self, label: str, text: str, width: int = 12) -> None:
        lead = "  " + label.ljust(width) + " "
        if len(lead) > WIDTH // 2:  # a long label: the text on its own lines
            self.add(label, 2)
            self.add(text, 6)
            return
        wrapped = self._wrap(text, WIDTH - len(lead)) if text else ["-"]
        self.out.append((lead + wrapped[0]).rstrip())
        self.out.extend((" " * len(lead) + w).rstrip() for w in wrapped[1:])


def _label_width(labels: Any) -> int:
    """The label column of a section: its longest label, 12 to 28 columns (longer ones sit on their own line)."""
    return max(12, min(28, max((len(x) for x in labels), default=12)))


def _io_lines(lines: _Lines, title: str, entries: list[dict[str, Any]]) -> None:
    lines.head(f"{title} ({len(entries)})")
    if not entries:
        lines.add("(none)", 2)
        return
    name_w = min(max(len(e["name"]) for e in entries), 36)
    type_w = max(len(e["dtype"]) for e in entries)
    for e in entries:
        shape = shape_text(e["shape"])
        row = f"  {e['name'].ljust(name_w)}  {e['dtype'].ljust(type_w)}  {shape}"
        if len(row) <= WIDTH:
            lines.out.append(row.rstrip())
        else:  # a long name or shape: name on its line, type and shape below
            lines.add(e["name"], 2)
            lines.add(f"{e['dtype']}  {shape}", 6)


def _provenance_lines(lines: _Lines, prov: dict[str, Any]) -> None:
    lines.head("provenance (deployinc export)")
    f = lines.field
    spec = str(prov.get("model_spec"))
    family = prov.get("family")
    f("model", f"{spec} (family {family})" if family and family != "other" else spec)
    weights = str(prov.get("weights", "none"))
    w = weights
    if prov.get("weights_sha256"):
        w += f"  sha256 {_short(prov['weights_sha256'])}"
    if weights == "none":
        w = "none (seeded random initialisation)"
    f("weights", w)
    if prov.get("state_sha256"):
        f("state", f"sha256 {_short(prov['state_sha256'])} (over the loaded state dict)")
    seed = f"{prov.get('seed')}"
    if prov.get("bn_recalibrated"):
        seed += ", BatchNorm statistics recalibrated"
    f("seed", seed)
    shape = prov.get("input_shape")
    shape_s = "x".join(str(v) for v in shape) if isinstance(shape, list) else _compact(shape)
    batch = "dynamic batch" if prov.get("dynamic_batch") else "static batch"
    f("input", f"{shape_s}, {batch}, {prov.get('num_classes')} classes")
    f("mean", _compact(prov.get("mean")))
    f("std", _compact(prov.get("std")))
    f("passes", _compact(prov.get("passes")))
    if prov.get("aux_heads"):
        f("aux heads", _compact(prov.get("aux_heads")) + " (removed)")
    exp = f"{prov.get('exporter')}, opset {prov.get('opset')}"
    if prov.get("opset_pinned") is not None:
        exp += " (chosen with --opset)" if prov["opset_pinned"] else " (not pinned)"
    f("exporter", exp)
    path = prov.get("export_path") or []
    if path:
        steps = []
        for step in path if isinstance(path, list) else [path]:
            if not isinstance(step, dict):
                steps.append(str(step))
                continue
            what = f"{step.get('exporter')}@{step.get('opset')}"
            err = step.get("error")
            steps.append(f"{what} failed: {err}" if err else f"{what} ok")
        f("export path", "; ".join(steps))
    if prov.get("fallback"):
        f("fallback", str(prov["fallback"]))
    if prov.get("config"):
        f("config", str(prov["config"]))
    if prov.get("tolerances"):
        f("tolerances", _compact(prov["tolerances"]))
    versions = prov.get("versions") or {}
    if versions:
        f("versions", _units([f"{k} {_compact(v, True)}" for k, v in versions.items()]) if isinstance(versions, dict) else _compact(versions))
    f("format", str(prov.get("format")))


def render(info: dict[str, Any]) -> str:
    """The screen form of :func:`inspect_model`'s result: sections of ``label  value`` lines, 80 columns."""
    lines = _Lines()
    lines.add(f"{info['file']}")
    f = lines.field
    f("size", human_bytes(info["file_bytes"]))
    f("sha256", info["sha256"])
    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items()) or "(none)"
    f("format", f"ONNX IR version {info['ir_version']}; opsets {opsets}")
    prod = info["producer"]
    f("producer", " ".join(v for v in (prod["name"], prod["version"]) if v) or "(not recorded)")
    if info.get("graph"):
        f("graph", info["graph"])
    if info.get("model_version"):
        f("version", str(info["model_version"]))
    if info.get("domain"):
        f("domain", info["domain"])
    if info.get("doc_string"):
        first = info["doc_string"].strip().splitlines()[0] if info["doc_string"].strip() else ""
        if first:
            f("doc", first[:200])
    prec = info["precision"]
    f("precision", f"{prec['value']} ({prec['why']})")
    rc = info["runtime_check"]
    if rc["ok"]:
        lines.out.append("runtime check: ok (opset, operator domains, acyclic, node schemas)")
    else:
        lines.add(f"runtime check: {rc['problem']}")
        if rc.get("hint"):
            lines.add(f"hint: {rc['hint']}", 2)

    _io_lines(lines, "inputs", info["inputs"])
    _io_lines(lines, "outputs", info["outputs"])

    nodes = info["nodes"]
    lines.head(f"nodes ({nodes['total']:,}, {len(nodes['by_op'])} operator types)")
    if nodes["by_op"]:
        lines.add(_units([f"{op} {n:,}" for op, n in nodes["by_op"].items()]), 2)
    if nodes.get("subgraph_nodes"):
        lines.add(f"and {nodes['subgraph_nodes']:,} nodes inside subgraphs (If/Loop/Scan bodies)", 2)
    if nodes.get("functions"):
        lines.add("model-local functions: " + ", ".join(nodes["functions"]), 2)

    ini = info["initializers"]
    lines.head(f"initializers ({ini['count']:,}): {human_bytes(ini['bytes'])}")
    for dt, e in ini["by_dtype"].items():
        lines.add(f"{dt}: {_plural(e['count'], 'tensor')}, {human_bytes(e['bytes'])}", 2)
    if ini.get("sparse_count"):
        lines.add(f"and {ini['sparse_count']:,} sparse initializers", 2)
    const = ini.get("constants") or {}
    if const.get("count"):
        lines.add(f"in Constant nodes: {_plural(const['count'], 'tensor')}, {human_bytes(const['bytes'])}", 2)

    ext = info["external_data"]
    if ext["files"]:
        lines.head(f"external data ({len(ext['files'])} file(s), {ext['tensors']:,} tensors): {human_bytes(ext['bytes'])}")
        for e in ext["files"]:
            on_disk = f"; file {human_bytes(e['file_bytes'])}" if e.get("file_bytes") is not None else ""
            lines.add(f"{e['location']}: {_plural(e['tensors'], 'tensor')}, {human_bytes(e['bytes'])}{on_disk}", 2)
    else:
        lines.head("external data: none (weights inside the file)")

    if info["provenance"] is not None:
        _provenance_lines(lines, info["provenance"])
    else:
        lines.head("provenance: none (not exported by deployinc)")

    extra = info["deployinc_metadata"]
    if extra:
        lines.head("deployinc metadata")
        labels = {k: k[len("deployinc.") :] if k.startswith("deployinc.") else k for k in extra}
        width = _label_width(labels.values())
        for k, v in extra.items():
            f(labels[k], _compact(v), width=width)

    cal = info.get("calibration")
    if cal is not None:
        lines.head("calibration")
        if not cal.get("found"):
            f("report", f"{cal['report']}: " + (cal.get("error") or "not found"))
        else:
            f("report", cal["report"], width=18)
            for k in _CALIBRATION_KEYS:
                if k in cal and cal[k] not in (None, [], {}):
                    value = _short(cal[k]) if k.endswith("sha256") and isinstance(cal[k], str) else _compact(cal[k])
                    f(k.replace("_", " "), value, width=18)
            if cal.get("tensors"):
                f("tensors", f"{cal['tensors']:,} with calibrated ranges", width=18)

    other = info["metadata"]
    if other:
        lines.head(f"other metadata ({len(other)})")
        width = _label_width(other)
        for k, v in other.items():
            f(k, v, width=width)
    return "\n".join(lines.out)
