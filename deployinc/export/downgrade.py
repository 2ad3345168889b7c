"""Lower an ONNX model's ai.onnx opset, for the ops image classifiers use.

The torch.export-based exporter writes opset 18 at the lowest, and falls back to it silently when the onnx
version converter fails, which it does on every torchvision CNN (ReduceMean keeps ``noop_with_empty_axes``,
there is no Relu 14->13 adapter, HardSwish has no form before 14). This module lowers opset 18+ models itself.

For every node the schema in force at the target opset is compared with the one in force now. When they are the
same, nothing changes. Otherwise a rule from :data:`RULES` rewrites the node; an op without a rule is an error
that names it. The rules:

- type-only changes (Relu 14, Add/Sub/Mul/Div 14, Identity 14-21, Shape 15-21, Flatten 21, ...): nothing to do
  while the node's attributes exist in the older schema (checked);
- ``Reduce*`` 18: the ``axes`` input becomes an attribute (it must be a constant), ``noop_with_empty_axes``
  must be 0 and is dropped;
- ``HardSwish`` (added in 14), for opset 13: ``x * HardSigmoid(x, alpha=1/6, beta=0.5)``, which is its
  definition;
- ``Split`` 18 with ``num_outputs`` (``torch.chunk``, ShuffleNet's channel split): the sizes are computed from the
  static size of the split axis (ceil(size / n) each, the last one smaller, as opset 18 defines it) and passed as
  the ``split`` input (opset 13-17) or attribute (before 13); a split axis whose size is not static is refused;
- attributes added later (Reshape ``allowzero``, AveragePool ``dilations``, Resize ``antialias``...) are dropped
  when they hold their default, else the node is refused.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExportError

_REDUCE_WITH_AXES_INPUT_SINCE_18 = {
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}
#: attribute -> default of attributes that newer schemas added; present-at-default means "drop it".
_DEFAULTS = {
    "allowzero": 0,
    "noop_with_empty_axes": 0,
    "antialias": 0,
    "keep_aspect_ratio_policy": b"stretch",
    "saturate": 1,
    "dilations": None,  # default all ones
    "start": 0,
}


def _schema_since(op: str, domain: str, opset: int) -> int | None:
    import onnx

    try:
        return onnx.defs.get_schema(op, opset, domain).since_version
    except onnx.defs.SchemaError:
        return None


def _attr_value(attr: Any) -> Any:
    import onnx

    return onnx.helper.get_attribute_value(attr)


def _at_default(name: str, value: Any) -> bool:
    if name == "dilations":
        return all(v == 1 for v in value)
    if name not in _DEFAULTS:
        return False
    return value == _DEFAULTS[name]


def _constants(graph: Any) -> dict[str, Any]:
    import onnx.numpy_helper as nh

    out = {init.name: nh.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = nh.to_array(a.t)
    return out


def torch_module_of(node: Any) -> str | None:
    """The torch module a node came from, when the torch.export-based exporter recorded it (name scopes)."""
    import ast

    raw = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    try:
        scopes = [s for s in ast.literal_eval(raw)[:-1] if isinstance(s, str) and s] if raw else []
    except (ValueError, SyntaxError):
        scopes = []
    return scopes[-1] if scopes else None


def _desc(node: Any) -> str:
    """``node NAME (OP)``, with the torch module it came from where known."""
    module = torch_module_of(node)
    return f"node {node.name or node.op_type} ({node.op_type})" + (f" from torch module {module}" if module else "")


def _static_dims(model: Any) -> dict[str, list[int | None]]:
    """Value name -> dims (None where not static), from ONNX shape inference (empty when it fails)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is best effort; the caller refuses what it cannot size
        return {}
    g = inferred.graph
    out: dict[str, list[int | None]] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def _split_sizes(node: Any, target: int, dims: dict[str, list[int | None]]) -> list[int]:
    """The sizes that ``Split(num_outputs=n)`` cuts its input into, from the static size of the split axis."""
    attrs = {a.name: _attr_value(a) for a in node.attribute}
    n, axis = int(attrs["num_outputs"]), int(attrs.get("axis", 0))
    shape = dims.get(node.input[0])
    size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if not size:
        raise ExportError(
            f"{_desc(node)} splits axis {axis} into {n} parts, but the size of that axis is not static, "
            f"and opset {target}'s Split needs the part sizes",
            hint="export with --opset 18 or higher, or --exporter torchscript",
        )
    part = -(-size // n)
    sizes = [part] * (n - 1) + [size - part * (n - 1)]
    if sizes[-1] <= 0 or len(node.output) != n:
        raise ExportError(
            f"{_desc(node)} splits an axis of size {size} into {n} parts, which opset {target} cannot express",
            hint="export with --opset 18 or higher, or --exporter torchscript",
        )
    return sizes


def _lower_split(node: Any, target: int, dims: dict[str, list[int | None]], consts: dict[str, Any], graph: Any) -> str | None:
    """Rewrite a Split 18 node for opset ``target`` in place; return the name of an input it no longer uses."""
    import numpy as np
    from onnx import helper, numpy_helper

    has_n = any(a.name == "num_outputs" for a in node.attribute)
    sizes = _split_sizes(node, target, dims) if has_n else None
    keep = [a for a in node.attribute if a.name != "num_outputs"]
    del node.attribute[:]
    node.attribute.extend(keep)
    if target >= 13:
        if sizes is not None:
            taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
            name, k = f"{node.name or 'Split'}_sizes", 0
            while name in taken:
                k += 1
                name = f"{node.name or 'Split'}_sizes_{k}"
            graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), name))
            del node.input[1:]
            node.input.append(name)
        return None
    dropped = None
    if sizes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in consts:
            raise ExportError(f"{_desc(node)} has computed split sizes; opset {target} needs constant ones", hint="export with --opset 13 or higher")
        sizes, dropped = [int(v) for v in consts[node.input[1]].reshape(-1)], node.input[1]
    del node.input[1:]
    if sizes is not None:
        node.attribute.append(helper.make_attribute("split", sizes))
    return dropped


def _strip_new_attributes(node: Any, target: int) -> None:
    """Drop attributes the target schema does not know, when they hold their defaults."""
    import onnx

    schema = onnx.defs.get_schema(node.op_type, target, node.domain or "")
    known = set(schema.attributes)
    keep = []
    for a in node.attribute:
        if a.name in known:
            keep.append(a)
        elif _at_default(a.name, _attr_value(a)):
            continue
        else:
            raise ExportError(
                f"{_desc(node)} uses attribute {a.name!r}, which opset {target} lacks",
                hint=f"export with --opset {_schema_since(node.op_type, node.domain or '', 100)} or higher, or --exporter torchscript",
            )
    del node.attribute[:]
    node.attribute.extend(keep)


def downgrade_opset(model: Any, target: int) -> Any:
    """Return a copy of ``model`` at ai.onnx opset ``target`` (lower than its current one).

    Raises:
        ExportError: A node has no rule to lower it, naming the node and op.
    """
    import onnx
    from onnx import helper

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current is None or current <= target:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(f for f in out.functions):
        raise ExportError("the model holds ONNX functions, which deployinc cannot lower", hint="use --opset 18 or --exporter torchscript")
    consts = _constants(graph)
    dims: dict[str, list[int | None]] | None = None  # shape inference, run only when a rule needs it
    new_nodes = []
    unused_inputs: set[str] = set()
    for node in graph.node:
        domain = node.domain or ""
        if domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        now, then = _schema_since(node.op_type, domain, current), _schema_since(node.op_type, domain, target)
        if then is None:
            if node.op_type == "HardSwish":
                x, y = node.input[0], node.output[0]
                hs = helper.make_node("HardSigmoid", [x], [y + "__hardsigmoid"], name=(node.name or "HardSwish") + "_hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
                mul = helper.make_node("Mul", [x, y + "__hardsigmoid"], [y], name=(node.name or "HardSwish") + "_mul")
                for n in (hs, mul):
                    n.metadata_props.extend(node.metadata_props)
                new_nodes += [hs, mul]
                continue
            raise ExportError(
                f"node {node.name or node.op_type}: op {node.op_type} does not exist in opset {target}"
                + (f" (from torch module {torch_module_of(node)})" if torch_module_of(node) else ""),
                hint=f"export with a higher --opset (it exists since {now}) or --exporter torchscript",
            )
        if now == then:
            new_nodes.append(node)
            continue
        if node.op_type == "Split" and now >= 18 and target < 18:
            if dims is None:
                dims = _static_dims(model)
            dropped = _lower_split(node, target, dims, consts, graph)
            if dropped:
                unused_inputs.add(dropped)
            new_nodes.append(node)
            continue
        if node.op_type in _REDUCE_WITH_AXES_INPUT_SINCE_18 and target < 18 and now >= 18:
            if len(node.input) > 1 and node.input[1]:
                axes_name = node.input[1]
                if axes_name not in consts:
                    raise ExportError(
                        f"{_desc(node)} has computed axes; opset {target} needs constant axes",
                        hint="export with --opset 18 or higher",
                    )
                axes = [int(a) for a in consts[axes_name].reshape(-1)]
                del node.input[1:]
                node.attribute.append(helper.make_attribute("axes", axes))
                unused_inputs.add(axes_name)
            _strip_new_attributes(node, target)
            new_nodes.append(node)
            continue
        if node.op_type == "Reshape" and target < 14:
            # allowzero=1 differs from the old Reshape only when the shape holds a 0: check the constant shape.
            az = next((a for a in node.attribute if a.name == "allowzero"), None)
            if az is not None and _attr_value(az) == 1:
                shape = consts.get(node.input[1]) if len(node.input) > 1 else None
                if shape is None or (shape == 0).any():
                    raise ExportError(
                        f"node {node.name or 'Reshape'} reshapes with allowzero=1 to a shape that may hold 0",
                        hint="export with --opset 14 or higher",
                    )
                keep = [a for a in node.attribute if a.name != "allowzero"]
                del node.attribute[:]
                node.attribute.extend(keep)
        # Same inputs/outputs; the newer schema broadened types or added optional attributes.
        schema_then = onnx.defs.get_schema(node.op_type, target, domain)
        if len(node.input) > schema_then.max_input or len(node.output) > schema_then.max_output:
            raise ExportError(
                f"{_desc(node)} has inputs that opset {target} does not accept",
                hint="export with a higher --opset or --exporter torchscript",
            )
        _strip_new_attributes(node, target)
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Drop constants only the old axes inputs used.
    still_used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = unused_inputs - still_used
    if dead:
        keep_init = [i for i in graph.initializer if i.name not in dead]
        del graph.initializer[:]
        graph.initializer.extend(keep_init)
        keep_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output and n.output[0] in dead)]
        del graph.node[:]
        graph.node.extend(keep_nodes)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return out
