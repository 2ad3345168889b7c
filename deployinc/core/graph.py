"""What verify needs to know about an ONNX graph: its image input, its precision, its intermediate values, and
which torch module each node came from.

Module scopes of nodes come from three sources, best first:

1. ``pkg.torch.onnx.name_scopes`` node metadata, written by the torch.export-based exporter (a list such as
   ``['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d_1']``; onnxsim keeps it on the nodes it keeps);
2. TorchScript-exporter node names such as ``/inception4c/branch2/branch2.1/conv/Conv`` (each component is a child
   name relative to an enclosing module: ``branch2.1`` inside ``inception4c``, ``blocks.1.1`` at the root; the
   second call of a module is ``relu_1``);
3. parameter names, for nodes neither names (quantizer-made nodes, renamed graphs): a node that reads the
   initializer ``inception4c.branch2.1.conv.weight`` belongs to module ``inception4c.branch2.1.conv``. Only a
   fallback: a simplifier that merges equal initializers leaves one module's name on another module's node.

Nothing here imports torch.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadInputError
from .precisions import DETECTED_PRECISIONS, FP16, FP32, INT8

#: The names deployinc gives an exported classifier's input and output.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

#: ONNX TensorProto element type -> numpy dtype, for the types verify feeds or reads.
ONNX_TO_NUMPY = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
}
FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16
_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "weight_orig", "scale", "zero_point")


@dataclass
class GraphInput:
    """The model's image input: name, dims (ints, or strings for symbolic dims), element type."""

    name: str
    dims: list[int | str]
    elem_type: int

    @property
    def dtype(self) -> Any:
        return ONNX_TO_NUMPY.get(self.elem_type)

    @property
    def dtype_name(self) -> str:
        dt = self.dtype
        return np.dtype(dt).name if dt is not None else f"ONNX type {self.elem_type}"

    @property
    def static_batch(self) -> int | None:
        d = self.dims[0] if self.dims else None
        return d if isinstance(d, int) and d > 0 else None

    @property
    def chw(self) -> tuple[int, ...] | None:
        rest = self.dims[1:]
        if all(isinstance(d, int) and d > 0 for d in rest):
            return tuple(int(d) for d in rest)  # type: ignore[arg-type]
        return None

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) if d != "" else "?" for d in self.dims) + "]"


def dims_of(vi: Any) -> list[int | str]:
    """Dims of a ValueInfo: ints, or the symbolic name (``?`` when unnamed)."""
    out: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def graph_inputs(model: Any) -> list[GraphInput]:
    """The inputs a caller must feed (graph inputs that are not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    return [
        GraphInput(vi.name, dims_of(vi), int(vi.type.tensor_type.elem_type))
        for vi in model.graph.input
        if vi.name not in inits
    ]


def image_input(model: Any, source: str = "the model") -> GraphInput:
    """The single N x C x H x W float input of a classifier.

    Raises:
        BadInputError: Not exactly one input, not rank 4, or not a floating-point type.
    """
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise BadInputError(
            f"{source} has {len(inputs)} inputs ({', '.join(i.name for i in inputs) or 'none'}); "
            "deployinc verify checks image classifiers with one N x C x H x W input",
            hint="export the classifier with a single image input",
        )
    gi = inputs[0]
    if len(gi.dims) != 4:
        raise BadInputError(
            f"{source}'s input {gi.name!r} has shape {gi.shape_text()}, not N x C x H x W",
            hint="deployinc verify checks image classifiers with one 4-d input",
        )
    if gi.elem_type not in (1, 10, 11):
        raise BadInputError(
            f"{source}'s input {gi.name!r} is {gi.dtype_name}, not float32/float16",
            hint="deployinc verify feeds normalised float images",
        )
    return gi


def check_feed(gi: GraphInput, array: np.ndarray, what: str = "the input batch") -> None:
    """Refuse an array the model would reject, naming the expected and the actual shape/dtype.

    Raises:
        BadInputError: Rank, a static dimension, or the dtype differs.
    """
    shape = tuple(int(s) for s in array.shape)
    expected = gi.shape_text()
    if len(shape) != len(gi.dims):
        raise BadInputError(
            f"{what} has shape {list(shape)}, but the model's input {gi.name!r} expects {expected} (rank {len(gi.dims)})",
            hint="give N x C x H x W inputs that match the model (see --input-shape, --inputs FILE.npy)",
        )
    for i, (want, got) in enumerate(zip(gi.dims, shape)):
        if isinstance(want, int) and want > 0 and want != got:
            dim = "NCHW"[i] if len(gi.dims) == 4 else str(i)
            raise BadInputError(
                f"{what} has shape {list(shape)}, but the model's input {gi.name!r} expects {expected} "
                f"(dimension {dim}: {want}, got {got})",
                hint="the batch must be what the model was exported with"
                if i == 0
                else "use the model's input size (it is read from the file; --input-shape must agree with it)",
            )
    want_dt = gi.dtype
    if want_dt is None or np.dtype(array.dtype) != np.dtype(want_dt):
        raise BadInputError(
            f"{what} is {np.dtype(array.dtype).name}, but the model's input {gi.name!r} expects {gi.dtype_name} "
            f"(shape {expected})",
            hint="give float32 images (deployinc casts them to float16 for fp16 inputs)",
        )


def detect_precision(model: Any) -> tuple[str, str]:
    """``(precision, why)``: int8 for Q/DQ graphs, fp16 for float16 weights, else fp32; a recorded
    ``deployinc.precision`` metadata entry wins."""
    meta = {p.key: p.value for p in model.metadata_props}
    rec = meta.get("deployinc.precision", "").strip().strip('"')
    if rec in DETECTED_PRECISIONS:
        return rec, "recorded in the file's metadata"
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return INT8, "the graph has quantize/dequantize nodes"
    n16 = sum(1 for t in model.graph.initializer if t.data_type == 10)
    n32 = sum(1 for t in model.graph.initializer if t.data_type == 1)
    if n16 and n16 >= n32:
        return FP16, f"{n16} of its {n16 + n32} float weights are float16"
    return FP32, "float32 weights"


def value_types(model: Any) -> dict[str, tuple[int, list[int | str]]]:
    """Element type and dims of every value: inputs, outputs, and (by shape inference) intermediates."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - shape inference may fail on custom ops; use what the file says
        inferred = model
    out: dict[str, tuple[int, list[int | str]]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = (int(vi.type.tensor_type.elem_type), dims_of(vi))
    return out


def with_outputs(model: Any, names: Sequence[str], types: dict[str, tuple[int, list[int | str]]]) -> Any:
    """A copy of ``model`` whose graph outputs are its own plus ``names`` (intermediate values exposed)."""
    from onnx import helper

    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n in have:
            continue
        elem = types.get(n, (1, []))[0] or 1
        m.graph.output.append(helper.make_tensor_value_info(n, elem, None))
        have.add(n)
    return m


def truncated(model: Any, name: str, types: dict[str, tuple[int, list[int | str]]]) -> Any:
    """A copy of ``model`` computing only ``name`` as its single output (nodes not needed for it removed).

    Used for bisection on backends that fuse layers (TensorRT): the prefix up to ``name`` keeps the fusions it
    has in the whole model, except at the cut itself.
    """
    from onnx import helper

    m = copy.deepcopy(model)
    producers = {o: n for n in m.graph.node for o in n.output}
    needed_nodes: set[int] = set()
    stack = [name]
    seen: set[str] = set()
    index = {id(n): i for i, n in enumerate(m.graph.node)}
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        node = producers.get(v)
        if node is None:
            continue
        needed_nodes.add(index[id(node)])
        stack.extend(i for i in node.input if i)
        for attr in node.attribute:  # subgraphs (If/Loop) may read values of the outer graph
            if attr.HasField("g"):
                stack.extend(i for sub in attr.g.node for i in sub.input if i)
    keep = [n for i, n in enumerate(m.graph.node) if i in needed_nodes]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    del m.graph.output[:]
    elem = types.get(name, (1, []))[0] or 1
    m.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return m


def guard_pad_before_maxpool(model: Any) -> int:
    """Write the value of each zero constant Pad that feeds a MaxPool as -0.0 (in place); returns how many.

    ONNX Runtime's PadFusion folds a zero Pad into the next Conv or MaxPool's own ``pads``. For a Conv that is right;
    a MaxPool pads with -inf, so a window of negative values then gives its maximum instead of the 0 the Pad put
    there (timm's BiT stem: ``ConstantPad2d(1, 0)`` then ``MaxPool2d(3, 2)``, off by 0.15 of the output's scale).
    PadFusion only fuses a value whose bytes are all zero; -0.0 compares equal to 0.0 everywhere else, so the model
    computes exactly what torch does, on every runtime.
    """
    from onnx import TensorProto, numpy_helper

    g = model.graph
    readers = consumers(model)
    inits = {t.name: t for t in g.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    count = 0
    for node in g.node:
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        if node.op_type != "Pad" or mode != "constant" or opset < 11 or not node.output:
            continue
        if not any(r.op_type == "MaxPool" for r in readers.get(node.output[0], [])):
            continue
        value = node.input[2] if len(node.input) > 2 else ""
        if value and value in inits and np.any(numpy_helper.to_array(inits[value]) != 0):
            continue  # a non-zero value: nothing to fold
        if value and value not in inits and not _zero_constant(g, value):
            continue  # computed at run time: PadFusion leaves it alone
        dtype: int = int(TensorProto.FLOAT)
        types = value_types(model)
        if node.input[0] in types:
            dtype = types[node.input[0]][0]
        if dtype not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            continue
        name = f"{node.name or node.output[0]}_value_negzero"
        arr = np.array(-0.0, dtype=np.float16 if dtype == TensorProto.FLOAT16 else np.float64 if dtype == TensorProto.DOUBLE else np.float32)
        g.initializer.append(numpy_helper.from_array(arr, name))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
        count += 1
    return count


def _zero_constant(g: Any, name: str) -> bool:
    """Whether ``name`` is the output of a Constant node holding zeros."""
    from onnx import numpy_helper

    node = next((n for n in g.node if n.op_type == "Constant" and name in n.output), None)
    if node is None:
        return False
    attr = next((a for a in node.attribute if a.name == "value"), None)
    return attr is not None and not np.any(numpy_helper.to_array(attr.t) != 0)


def reinfer_shapes(model: Any) -> tuple[Any, str | None]:
    """``model`` with its intermediate shape annotations (``graph.value_info``) dropped and inferred again by ONNX
    shape inference from the graph's own inputs, so that a symbolic batch dimension reaches every tensor.

    An exporter may annotate tensors with the shapes of its example input: torch's dynamo exporter writes
    ``[1, 197, 3072]`` for the GELU of a torchvision ViT whose batch is dynamic, and ONNX Runtime's MatMul+Add
    fusion then bakes that 1 into a Reshape, so the graph fails at batch 2. Runtimes do not need the annotations,
    so wrong ones are worse than none. Inference runs with data propagation, then without; when both fail the
    exporter's annotations are kept (a later lowering reads static sizes from them). Returns ``(model, note)``:
    ``note`` is None when inference worked, else it says why the annotations were kept as the exporter wrote them.
    """
    import onnx

    m = copy.deepcopy(model)
    del m.graph.value_info[:]
    error: Exception | None = None
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=data_prop), None
        except Exception as exc:  # noqa: BLE001 - inference is best effort: the exporter's annotations stay
            error = exc
    text = (str(error).splitlines() or [""])[0][:120]
    return model, f"kept the exporter's shape annotations: ONNX shape inference failed ({type(error).__name__}: {text})"


def topo_nodes(model: Any) -> list[Any]:
    """The graph's nodes (ONNX requires topological order)."""
    return list(model.graph.node)


def node_attrs(node: Any) -> dict[str, Any]:
    """A node's attributes by name, as Python values (``onnx.helper.get_attribute_value``)."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def consumers(model: Any) -> dict[str, list[Any]]:
    """value name -> nodes reading it."""
    out: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


# module scopes ----------------------------------------------------------------------------------------------------


def _normalise(path: str, modules: set[str]) -> str | None:
    """``path`` if it names a module; also tries it without a ``model.`` prefix (prepare's output wrapper)."""
    if path in modules:
        return path
    if path.startswith("model.") and path[len("model.") :] in modules:
        return path[len("model.") :]
    return None


def _scope_from_metadata(node: Any, modules: set[str]) -> str | None:
    meta = {p.key: p.value for p in node.metadata_props}
    raw = meta.get("pkg.torch.onnx.name_scopes")
    if raw:
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            scopes = []
        for s in reversed(list(scopes)):
            if isinstance(s, str) and s:
                found = _normalise(s, modules)
                if found is not None:
                    return found
        if scopes:
            return ""
    return None


_REPEATED_CALL = re.compile(r"^(?P<name>.+)_(?P<k>\d+)$")


def _scope_from_torchscript_name(name: str, modules: set[str]) -> str | None:
    """``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1`` (validated against the module names).

    Each component names a child module relative to an enclosing module, not always the one before it: nested
    containers write paths (``/features/features.12/conv/conv.1/conv.1.0/Conv`` is ``features.12.conv.1.0``,
    ``/blocks/blocks.1/blocks.1.1/Add`` is ``blocks.1.1``). A repeated call is suffixed (``relu_1``: the second
    call of ``relu``).
    """
    if not name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p]
    if len(parts) < 1:
        return None
    comps = parts[:-1]  # the last part is the op (Conv, Relu, Conv_1...)
    path = ""
    best: str | None = "" if not comps else None
    for c in comps:
        if not path and c == "model" and "model" not in modules:  # prepare's output wrapper (SelectOutput)
            path = "model"
            continue
        again = _REPEATED_CALL.match(c)
        nxt = _child(path, c, modules) or (_child(path, again.group("name"), modules) if again else None)
        if nxt is None:
            break
        path = nxt
        best = _normalise(path, modules)
    return best


def _child(path: str, rel: str, modules: set[str]) -> str | None:
    """The module below ``path`` named ``rel`` relative to ``path`` or to one of its ancestors."""
    pieces = path.split(".") if path else []
    for k in range(len(pieces), -1, -1):
        cand = ".".join(pieces[:k] + [rel])
        if (not path or cand.startswith(path + ".")) and _normalise(cand, modules) is not None:
            return cand
    return None


_DERIVED_PARAM = re.compile(r"^(?P<prefix>.+)\.(?:weight|bias)_(?:DequantizeLinear|quantized|QuantizeLinear)")


def _scope_from_params(node: Any, inits: set[str], modules: set[str]) -> str | None:
    for i in node.input:
        if i in inits and "." in i:
            prefix, _, suffix = i.rpartition(".")
            if suffix in _PARAM_SUFFIXES:
                found = _normalise(prefix, modules)
                if found is not None:
                    return found
    for i in node.input:  # quantized models read weights through DequantizeLinear (conv1.weight_DequantizeLinear_Output)
        m = _DERIVED_PARAM.match(i)
        if m and node.op_type not in ("DequantizeLinear", "QuantizeLinear"):
            found = _normalise(m.group("prefix"), modules)
            if found is not None:
                return found
    return None


def node_scopes(model: Any, modules: Iterable[str]) -> dict[int, str | None]:
    """Index of each node -> the torch module path it was exported from (``""`` = the root), or None."""
    mods = set(modules)
    inits = {t.name for t in model.graph.initializer}
    out: dict[int, str | None] = {}
    for idx, n in enumerate(model.graph.node):
        # The exporter's record of the node's module first: parameter names mislead where a simplifier merged
        # equal initializers (every LayerNorm's ones-initialised weight read as ``features.0.1.weight``).
        s = _scope_from_metadata(n, mods)
        if s is None and n.name:
            s = _scope_from_torchscript_name(n.name, mods)
        if s is None or s == "":
            s = _scope_from_params(n, inits, mods) or s
        out[idx] = s
    return out


def within(scope: str | None, outer: str) -> bool:
    """Whether module path ``scope`` is ``outer`` or inside it."""
    if scope is None:
        return False
    return scope == outer or outer == "" or scope.startswith(outer + ".")


# order, and what a runtime would refuse -------------------------------------------------------------------------


def toposort_nodes(graph: Any) -> bool:
    """Put ``graph``'s nodes in topological order, in place (ONNX requires it; converters that append Cast nodes
    at the end break it). Stable: nodes already in order keep their order. Returns whether anything moved.

    Raises:
        ValueError: The graph has a cycle (a node needs a value that only a later node of the cycle produces).
    """
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    available |= {t.name for t in getattr(graph, "sparse_initializer", [])}
    nodes = list(graph.node)
    producers: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producers[o] = i
    needs: list[set[int]] = []
    for n in nodes:
        deps = {producers[v] for v in _inputs_of(n) if v not in available and v in producers}
        needs.append(deps)
    users: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, deps in enumerate(needs):
        for d in deps:
            users[d].append(i)
    remaining = [len(d) for d in needs]
    import heapq

    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if remaining[i] > 0]
        raise ValueError(f"the graph has a cycle through {', '.join(stuck[:4])}")
    if order == list(range(len(nodes))):
        return False
    copies = [type(nodes[i])() for i in order]
    for c, i in zip(copies, order):
        c.CopyFrom(nodes[i])
    del graph.node[:]
    graph.node.extend(copies)
    return True


def _inputs_of(node: Any) -> list[str]:
    """The values a node reads, including those its subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    names = list(node.input)
    for attr in node.attribute:
        subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for g in subs:
            inner = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
            names += [v for n in g.node for v in _inputs_of(n) if v not in inner]
    return names


#: Operator domains ONNX Runtime implements without a plugin library.
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview.training"})
#: The oldest ai.onnx opset ONNX Runtime runs.
MIN_OPSET = 7


def graph_problem(model: Any, parts: tuple[str, ...] = ("opset", "domains", "cycle", "schema")) -> tuple[str, str] | None:
    """The first reason a runtime would refuse ``model``'s graph, as ``(problem, hint)``; None when there is none.

    Checks what every command needs before it hands a file to ONNX Runtime: an ai.onnx opset it runs
    (``opset``), operators of known domains or model-local functions (``domains``), an acyclic graph (``cycle``)
    and node schemas (``schema``: onnx's checker, for what ONNX Runtime would refuse at load).
    """
    checks = {"opset": _opset_problem, "domains": _domain_problem, "cycle": _cycle_problem, "schema": _schema_problem}
    for part in parts:
        found = checks[part](model)
        if found is not None:
            return found
    return None


def _opset_problem(model: Any) -> tuple[str, str] | None:
    opsets = {o.domain or "": o.version for o in model.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None:
        return "the model imports no ai.onnx opset", "export it again with an opset between 13 and 21"
    if version < MIN_OPSET:
        return f"the model uses ai.onnx opset {version}, older than ONNX Runtime runs ({MIN_OPSET})", "export it again with an opset between 13 and 21"
    try:
        import onnx.defs

        newest = onnx.defs.onnx_opset_version()
    except Exception:  # noqa: BLE001 - onnx without defs: skip the upper bound
        return None
    if version > newest:
        return f"the model uses ai.onnx opset {version}, newer than the installed onnx knows ({newest})", "export it at an opset between 13 and 21, or upgrade onnx and onnxruntime"
    return None


def _domain_problem(model: Any) -> tuple[str, str] | None:
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        dom = node.domain or ""
        if dom not in KNOWN_DOMAINS and (dom, node.op_type) not in local:
            return (
                f"node {node.name or node.op_type} uses the custom operator {dom}::{node.op_type}, which ONNX Runtime does not implement",
                "a custom operator needs its plugin library; export the model without it",
            )
    return None


def _cycle_problem(model: Any) -> tuple[str, str] | None:
    import copy

    try:
        toposort_nodes(copy.deepcopy(model.graph))
    except ValueError as exc:
        return str(exc), "export the model again: an ONNX graph must be acyclic"
    return None


def _schema_problem(model: Any) -> tuple[str, str] | None:
    """Node schema violations found by onnx's checker (input and attribute counts, types of an operator version):
    what ONNX Runtime refuses at load. Other findings of the checker (node order, missing value-info shapes) are
    not held against a file: ONNX Runtime accepts them."""
    import onnx

    from onnx import TensorProto

    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        return None  # the checker would look for the data relative to the current folder
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        node_level = [ln for ln in lines if "schema(" in ln or ln.startswith("Node(") or "Unrecognized attribute" in ln]
        if not node_level:
            return None
        return f"the graph is not valid ONNX: {node_level[0][:200]}", "export or convert the model again; deployinc check FILE lists what it finds"
    except (ValueError, RuntimeError):  # a model over protobuf's 2 GiB in memory: the runtime will tell
        return None
    return None


def node_counts(model: Any) -> dict[str, int]:
    """Node count per op type (``domain::op`` for non-default domains)."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def activation_range(node: Any, inits: dict[str, Any]) -> tuple[float | None, float | None]:
    """A Relu's or Clip's output range (low, high; None: unbounded): a Clip's bounds from its initializer inputs, or
    from its ``min``/``max`` attributes before opset 11."""
    if node.op_type == "Relu":
        return (0.0, None)
    from onnx import numpy_helper

    def bound(i: int, attr: str) -> float | None:
        if len(node.input) > i and node.input[i] in inits:
            return float(numpy_helper.to_array(inits[node.input[i]]).reshape(-1)[0])
        return next((float(a.f) for a in node.attribute if a.name == attr), None)

    return (bound(1, "min"), bound(2, "max"))
