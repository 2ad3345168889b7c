"""Static compatibility check of an ONNX model against a deployment target, without TensorRT or a GPU.

``check_model(path, target)`` walks the graph once and compares every node with the documented operator support of
the target (tables in :mod:`deployinc.trt.optables`):

- ``tensorrt``: the ONNX-TensorRT parser's support matrix (TensorRT 10.15, opsets 9-24): operators marked N or absent,
  custom domains (they need plugins), element types outside the matrix's list, and the documented restrictions
  that CNN exports run into: 2D/3D pooling without dilations and without MaxPool's Indices output; Resize modes,
  coordinate transforms, nearest modes, aspect-ratio policy and antialiasing; Dropout's training input; Q/DQ zero
  points (must be 0, so symmetric int8) and uint8 Q/DQ; Reduce/Squeeze/Unsqueeze/CumSum/OneHot inputs that must be
  build-time constants; TopK's ``sorted`` and K; ScatterND reductions; LayerNormalization's extra outputs; Constant's
  sparse and string values; LSTM's ``input_forget`` and ``layout``.
- ``ort-cpu`` / ``ort-cuda``: ONNX Runtime's kernels for the operators CNNs use and their element types, the IR
  version the installed runtime reads, custom-op domains. On CUDA, a node without a CUDA kernel is a *fallback*: ORT
  runs it on the CPU, with copies, rather than failing.
- ``ort-openvino``: the ORT CPU table: OpenVINO's own operator coverage is not tabulated here, and a node the
  OpenVINO plugin does not take runs on ORT's CPU provider, so the CPU kernels decide whether the model runs.

Each finding names the node and its operator. Severities: ``error`` (the target cannot run the model as is),
``fallback`` (runs, but this node leaves the target), ``warning`` (unverified or slow). A model is compatible when
there is no error. The check is static: it cannot see what a parser would constant-fold, so anything it cannot decide
is a warning, not an error.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.graph import graph_problem, node_attrs
from ..errors import BadInputError
from ..io import load_onnx
from . import optables

TARGETS = ("tensorrt", "ort-cpu", "ort-cuda", "ort-openvino")
TARGET_TITLES = {
    "tensorrt": f"TensorRT ONNX parser (support matrix of TensorRT {optables.TRT_MATRIX_VERSION}, "
    f"opsets {optables.TRT_OPSET_MIN}-{optables.TRT_OPSET_MAX})",
    "ort-cpu": "ONNX Runtime CPUExecutionProvider",
    "ort-cuda": "ONNX Runtime CUDAExecutionProvider",
    "ort-openvino": "ONNX Runtime OpenVINOExecutionProvider plugin (nodes it does not take run on the CPU provider)",
}
SEVERITIES = ("error", "fallback", "warning")
_DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX TensorProto element type -> the names the support tables use.
_TYPE_NAMES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL",
    10: "FP16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8",
    21: "UINT4", 22: "INT4", 23: "FP4",
}


@dataclass
class NodeIssue:
    """One finding: which node, which operator, why, and how bad."""

    node: str
    op: str
    severity: str
    reason: str
    domain: str = ""

    def line(self) -> str:
        op = f"{self.domain}::{self.op}" if self.domain not in _DEFAULT_DOMAINS else self.op
        return f"{self.node or '<model>'} ({op}): {self.reason}"


@dataclass
class CheckReport:
    """The result of :func:`check_model`."""

    target: str
    model: str
    opset: int
    ir_version: int
    node_count: int
    op_counts: dict[str, int]
    issues: list[NodeIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: What the target is, in words (default: its static table's title); a backend that checks with its own
    #: runtime (``openvino``) names itself here.
    title: str = ""

    @property
    def errors(self) -> list[NodeIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def fallbacks(self) -> list[NodeIssue]:
        return [i for i in self.issues if i.severity == "fallback"]

    @property
    def warnings(self) -> list[NodeIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def compatible(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compatible"] = self.compatible
        d["target_title"] = self.title or TARGET_TITLES[self.target]
        return d

    def format(self) -> str:
        """Plain-text report: model, target, findings grouped by severity, verdict."""
        lines = [
            f"model: {self.model} (opset {self.opset}, IR {self.ir_version}, {self.node_count} nodes, "
            f"{len(self.op_counts)} operator types)",
            f"target: {self.title or TARGET_TITLES[self.target]}",
        ]
        for sev, title in (("error", "unsupported"), ("fallback", "falls back"), ("warning", "warnings")):
            found = [i for i in self.issues if i.severity == sev]
            if found:
                lines.append(f"{title}: {len(found)} node(s)")
                lines.extend(f"  {i.line()}" for i in found)
        lines.extend(f"note: {n}" for n in self.notes)
        if self.compatible:
            extra = f", {len(self.fallbacks)} fallback(s)" if self.fallbacks else ""
            lines.append(f"verdict: compatible with {self.target}{extra}")
        else:
            lines.append(f"verdict: INCOMPATIBLE with {self.target} ({len(self.errors)} unsupported node(s))")
        return "\n".join(lines)


def resolve_target(target: str) -> str:
    """Validate a target name; raise BadInputError listing the known ones (and the closest match)."""
    t = (target or "").strip().lower()
    if t in TARGETS:  # a backend name or alias is turned into its table by deployinc.backends.check_target
        return t
    close = difflib.get_close_matches(t, TARGETS, n=1)
    hint = f"known targets: {', '.join(TARGETS)}" + (f" (did you mean {close[0]}?)" if close else "")
    raise BadInputError(f"unknown target {target!r}", hint=hint)


# --------------------------------------------------------------------------------------------------------------
# Graph context


class _Graph:
    """What the rules need to know about the model: types, constants, consumers."""

    def __init__(self, model: Any):
        import onnx
        from onnx import numpy_helper

        self.model = model
        self.opset = 0
        for imp in model.opset_import:
            if imp.domain in _DEFAULT_DOMAINS:
                self.opset = int(imp.version)
        self.inits = {t.name: t for t in model.graph.initializer}
        self.constants: dict[str, Any] = {}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t"):
                        self.constants[node.output[0]] = a.t
        self._np = numpy_helper
        self.types: dict[str, int] = {}
        self.shape_inference_error: str | None = None
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception as exc:  # noqa: BLE001 - inference failing is a note, not a crash
            inferred = model
            self.shape_inference_error = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        g = inferred.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = tt.elem_type
        for t in model.graph.initializer:
            self.types[t.name] = t.data_type
        for name, t in self.constants.items():
            self.types.setdefault(name, t.data_type)
        self.graph_inputs = {vi.name for vi in model.graph.input} - set(self.inits)
        self.graph_outputs = {vi.name for vi in model.graph.output}
        self.consumers: Counter[str] = Counter()
        for node in model.graph.node:
            for i in node.input:
                if i:
                    self.consumers[i] += 1

    def is_constant(self, name: str) -> bool:
        return name in self.inits or name in self.constants

    def value(self, name: str) -> Any:
        """numpy value of an initializer or Constant output, or None (not constant, or external data not loaded)."""
        t = self.inits.get(name) or self.constants.get(name)
        if t is None:
            return None
        try:
            return self._np.to_array(t)
        except Exception:  # noqa: BLE001 - external data not loaded, unusual types
            return None

    def type_name(self, name: str) -> str | None:
        code = self.types.get(name)
        return _TYPE_NAMES.get(code, f"type{code}") if code else None


def _attr(node: Any, name: str, default: Any = None) -> Any:
    v = node_attrs(node).get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _input(node: Any, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


# --------------------------------------------------------------------------------------------------------------
# TensorRT rules


_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_REDUCE_AXES_INPUT_SINCE = {"ReduceSum": 13}  # other Reduce* take axes as an input from opset 18
_TRT_TYPE_SKIP_OPS = {"Cast", "CastLike", "Shape", "Size", "Constant", "ConstantOfShape", "Identity", "If", "Loop", "Scan"}


def _trt_node_issues(node: Any, g: _Graph) -> list[tuple[str, str]]:
    op, out = node.op_type, []
    if node.domain not in _DEFAULT_DOMAINS:
        return [("error", f"operator of domain {node.domain!r} is not an ONNX operator; TensorRT needs a plugin for it")]
    if op not in optables.TRT_OPS:
        return [("error", f"not in the TensorRT ONNX parser's operator list (TensorRT {optables.TRT_MATRIX_VERSION})")]
    types = optables.TRT_OPS[op]
    if types is None:
        return [("error", f"marked unsupported (N) in the TensorRT {optables.TRT_MATRIX_VERSION} support matrix")]

    # element type of the first input
    first = _input(node, 0)
    tname = g.type_name(first) if first else None
    if tname and types and op not in _TRT_TYPE_SKIP_OPS:
        if tname == "DOUBLE":
            out.append(("warning", "DOUBLE input: TensorRT casts it down to FLOAT (limited DOUBLE support)"))
        elif tname not in types:
            hint = ""
            if op == "DequantizeLinear" and tname == "UINT8":
                hint = "; TensorRT wants symmetric int8 (deployinc quantize --target tensorrt)"
            out.append(("error", f"input type {tname} is not supported (matrix: {', '.join(sorted(types))}){hint}"))

    if op in ("AveragePool", "MaxPool", "LpPool"):
        ks = _attr(node, "kernel_shape", [])
        if op != "LpPool" and ks and len(ks) not in (2, 3):
            out.append(("error", f"{len(ks)}D pooling: only 2D or 3D pooling is supported"))
        dil = _attr(node, "dilations", [])
        if dil and any(int(d) != 1 for d in dil):
            out.append(("error", f"dilations {list(dil)}: must be empty or all ones"))
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            out.append(("error", "the Indices output of MaxPool is unsupported"))
    elif op == "Resize":
        mode = _attr(node, "mode", "nearest")
        if mode not in _RESIZE_MODES:
            out.append(("error", f"mode {mode!r}: only nearest and linear are supported"))
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if ctm not in _RESIZE_COORD:
            out.append(("error", f"coordinate_transformation_mode {ctm!r} is unsupported"))
        if mode == "nearest":
            nm = _attr(node, "nearest_mode", "round_prefer_floor")
            if nm not in _RESIZE_NEAREST:
                out.append(("error", f"nearest_mode {nm!r} is unsupported"))
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            out.append(("error", "keep_aspect_ratio_policy other than stretch is unsupported"))
        if int(_attr(node, "antialias", 0) or 0):
            out.append(("error", "antialiasing is unsupported"))
    elif op == "Dropout":
        training = _input(node, 2)
        if training:
            if not g.is_constant(training):
                out.append(("error", "is_training must be an initializer (it is computed)"))
            else:
                v = g.value(training)
                if v is not None and v.size and bool(v.reshape(-1)[0]):
                    out.append(("error", "is_training is True; it must evaluate to False"))
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        zp = _input(node, 2)
        if zp:
            if not g.is_constant(zp):
                out.append(("error", "zero point is computed; it must be a constant zero"))
            else:
                v = g.value(zp)
                if v is not None and v.size and (v != 0).any():
                    out.append(("error", "zero point is not 0 (TensorRT needs symmetric quantization)"))
                ztype = g.type_name(zp)
                # (a DequantizeLinear with a known uint8 input is already a type error above)
                if ztype == "UINT8" and (op == "QuantizeLinear" or tname is None):
                    out.append(("error", "uint8 quantization: TensorRT supports int8 (symmetric) Q/DQ only"))
    elif op.startswith("Reduce"):
        since = _REDUCE_AXES_INPUT_SINCE.get(op, 18)
        axes = _input(node, 1)
        if g.opset >= since and axes and not g.is_constant(axes):
            out.append(("error", "axes must be an initializer"))
    elif op in ("Squeeze", "Unsqueeze"):
        axes = _input(node, 1)
        if g.opset >= 13 and axes and not g.is_constant(axes):
            out.append(("warning", "axes must be resolvable to a constant; it is computed here"))
    elif op == "CumSum":
        if _input(node, 1) and not g.is_constant(_input(node, 1)):
            out.append(("warning", "axis must be a build-time constant; it is computed here"))
    elif op == "OneHot":
        if _input(node, 1) and not g.is_constant(_input(node, 1)):
            out.append(("warning", "depth must be a build-time constant; it is computed here"))
    elif op == "TopK":
        if int(_attr(node, "sorted", 1)) != 1:
            out.append(("error", "sorted must be 1"))
        k = _input(node, 1)
        if k and g.is_constant(k):
            v = g.value(k)
            if v is not None and v.size and int(v.reshape(-1)[0]) >= 3840:
                out.append(("error", f"K = {int(v.reshape(-1)[0])}; it must be less than 3840"))
    elif op == "ScatterND":
        if _attr(node, "reduction", "none") != "none":
            out.append(("error", "reduction other than none is unsupported"))
    elif op == "LayerNormalization":
        if any(o for o in list(node.output)[1:]):
            out.append(("error", "only the first output Y is supported"))
    elif op == "Constant":
        for a in node.attribute:
            if a.name in ("sparse_value", "value_string", "value_strings"):
                out.append(("error", f"the {a.name} attribute is unsupported"))
    elif op == "LSTM":
        if int(_attr(node, "input_forget", 0)):
            out.append(("error", "input_forget must be 0"))
        if int(_attr(node, "layout", 0)):
            out.append(("error", "layout must be 0"))
    return out


def _trt_model_issues(g: _Graph) -> list[NodeIssue]:
    out = []
    if g.opset and not optables.TRT_OPSET_MIN <= g.opset <= optables.TRT_OPSET_MAX:
        out.append(
            NodeIssue(
                "", "<opset>", "error",
                f"opset {g.opset} is outside TensorRT {optables.TRT_MATRIX_VERSION}'s range "
                f"{optables.TRT_OPSET_MIN}-{optables.TRT_OPSET_MAX}; re-export with --opset 17",
            )
        )
    for name in sorted(g.graph_inputs | g.graph_outputs):
        t = g.type_name(name)
        if t in ("DOUBLE",):
            out.append(NodeIssue(name, "<io>", "warning", "DOUBLE model input/output: TensorRT casts it to FLOAT"))
        elif t and t not in ("FP32", "FP16", "BF16", "INT32", "INT64", "INT8", "UINT8", "BOOL"):
            out.append(NodeIssue(name, "<io>", "error", f"model input/output of type {t} is not a TensorRT type"))
    return out


# --------------------------------------------------------------------------------------------------------------
# ONNX Runtime rules


def _ort_node_issues(node: Any, g: _Graph, target: str) -> list[tuple[str, str]]:
    op = node.op_type
    cpu_table = target in ("ort-cpu", "ort-openvino")  # OpenVINO hands what it does not take to the CPU provider
    table = optables.ORT_CPU_OPS if cpu_table else optables.ORT_CUDA_OPS
    if node.domain not in _DEFAULT_DOMAINS:
        if node.domain == "com.microsoft":
            return [("warning", "ONNX Runtime contrib operator: not in deployinc's kernel table (unverified)")]
        return [("error", f"operator of domain {node.domain!r} needs a custom-op library registered with ONNX Runtime")]
    if op not in table:
        if target == "ort-cuda":
            return [("warning", "not in deployinc's CUDA kernel table; if ORT has no CUDA kernel it runs on the CPU")]
        return [("warning", "not in deployinc's CPU kernel table (unverified; ORT's CPU provider covers most ONNX ops)")]
    types = table[op]
    first = _input(node, 0)
    tname = g.type_name(first) if first else None
    if not types or not tname or tname in types:
        return []
    if cpu_table:
        if tname == "FP16":
            return [("warning", "no float16 CPU kernel: ORT inserts Casts to float32 around it (slow)")]
        return [("error", f"no CPU kernel for input type {tname} (kernel types: {', '.join(sorted(types))})")]
    return [("fallback", f"no CUDA kernel for input type {tname}; ORT runs this node on the CPU")]


def _ort_model_issues(g: _Graph, target: str) -> list[NodeIssue]:
    out = []
    ir = int(g.model.ir_version)
    if ir > optables.ORT_MAX_IR_VERSION:
        out.append(
            NodeIssue(
                "", "<ir_version>", "error",
                f"IR version {ir} is newer than onnxruntime 1.31 reads ({optables.ORT_MAX_IR_VERSION}); "
                "re-save the model with ir_version <= 13",
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Entry point


def check_model(model: str | os.PathLike[str] | Any, target: str) -> CheckReport:
    """Check an ONNX file (or ``onnx.ModelProto``) against ``target``; see the module docstring.

    Raises:
        BadInputError: Unknown target; unreadable ONNX file (:class:`~deployinc.errors.OnnxFileError`).
    """
    target = resolve_target(target)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        proto = load_onnx(path, check_graph=False).model  # a graph no runtime runs is reported, not refused
        label = str(path)
    else:
        proto = model
        label = proto.graph.name or "<model>"
    g = _Graph(proto)
    nodes = list(proto.graph.node)
    report = CheckReport(
        target=target,
        model=label,
        opset=g.opset,
        ir_version=int(proto.ir_version),
        node_count=len(nodes),
        op_counts=dict(sorted(Counter(n.op_type for n in nodes).items())),
    )

    problem = graph_problem(proto, parts=("cycle", "schema"))  # opsets and domains are judged per target below
    if problem is not None:
        report.issues.append(NodeIssue("", "<graph>", "error", f"{problem[0]} ({problem[1]})"))
    if g.shape_inference_error:
        report.notes.append(f"ONNX shape inference failed ({g.shape_inference_error}); element types not checked")
    if target == "tensorrt":
        report.issues.extend(_trt_model_issues(g))
    else:
        report.issues.extend(_ort_model_issues(g, target))
    for i, node in enumerate(nodes):
        name = node.name or f"<node {i}>"
        found = _trt_node_issues(node, g) if target == "tensorrt" else _ort_node_issues(node, g, target)
        report.issues.extend(NodeIssue(name, node.op_type, sev, reason, node.domain) for sev, reason in found)
    if target == "ort-cuda" and any(n.op_type == "QuantizeLinear" for n in nodes):
        report.notes.append(
            "ORT's CUDA provider runs a QDQ model with float kernels between the Q/DQ pairs (no int8 speed-up); "
            "use --target tensorrt for int8 on a GPU"
        )
    if target == "ort-openvino":
        report.notes.append(
            "judged with ONNX Runtime's CPU kernels: OpenVINO's operator coverage is not tabulated here, and nodes the "
            "plugin does not take run on the CPU provider (pip install 'deployinc[openvino-ep]'; deployinc verify "
            "--providers ort-openvino runs it)"
        )
    if target == "tensorrt" and any(n.op_type == "QuantizeLinear" for n in nodes):
        report.notes.append("explicitly quantized (QDQ) model: TensorRT builds it as int8 where the Q/DQ pairs say")
    return report
