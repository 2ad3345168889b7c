"""The float16 graph conversion itself, for every layer that converts (``deployinc convert``, deploy's fp16 artifact,
the TensorRT engine builder's strongly typed fp16 networks): ONNX Runtime's
``onnxruntime.transformers.float16.convert_float_to_float16`` with ORT's default block list and the operators and
nodes asked for kept float32, redundant Cast pairs removed, nodes in topological order, and the precision recorded
in the metadata. The overflow report and the parity check around it are the fp16 stage's
(:mod:`deployinc.precision.fp16`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from ..errors import BadInputError, CheckFailed
from .graph import toposort_nodes
from .precisions import FP16


def check_convertible(model: Any, keep_fp32_nodes: Sequence[str] = ()) -> None:
    """Refuse node names the model does not have, and a model with nothing in float32 to convert.

    Raises:
        BadInputError: A name in ``keep_fp32_nodes`` is not a node of the model.
        CheckFailed: The model has no float32 inputs or weights (already fp16?).
    """
    from onnx import TensorProto

    names = {n.name for n in model.graph.node}
    unknown = [n for n in keep_fp32_nodes if n not in names]
    if unknown:
        raise BadInputError(f"no node named {unknown[0]!r} in the model", hint="node names are listed by deployinc check")
    has_float = any(t.data_type == TensorProto.FLOAT for t in model.graph.initializer) or any(
        vi.type.tensor_type.elem_type == TensorProto.FLOAT for vi in model.graph.input
    )
    if not has_float:
        raise CheckFailed("the model has no float32 inputs or weights to convert", hint="is it already fp16?")


def _default_block_list() -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return list(DEFAULT_OP_BLOCK_LIST)


def float16_graph(model: Any, *, keep_io_types: bool = True, keep_fp32_ops: Sequence[str] = (), keep_fp32_nodes: Sequence[str] = ()) -> Any:
    """``model`` (a float32 ``onnx.ModelProto``, not modified) converted to float16, with ``keep_fp32_ops`` (on top
    of ORT's default block list) and ``keep_fp32_nodes`` kept float32, and the graph inputs and outputs too with
    ``keep_io_types``.

    Raises:
        BadInputError, CheckFailed: See :func:`check_convertible`.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    check_convertible(model, keep_fp32_nodes)
    nodes = list(dict.fromkeys(keep_fp32_nodes))
    ops = list(dict.fromkeys(_default_block_list() + list(keep_fp32_ops)))
    m16 = convert_float_to_float16(
        copy.deepcopy(model), keep_io_types=keep_io_types, op_block_list=ops, node_block_list=nodes or None
    )
    m16.ir_version = model.ir_version
    remove_cast_roundtrips(m16)

    toposort_nodes(m16.graph)  # ORT's converter appends the input Casts after their users
    kept = {p.key: p.value for p in m16.metadata_props}
    # deployinc's metadata convention: keys deployinc.<field>, JSON values.
    kept["deployinc.precision"] = json.dumps(FP16)
    kept["deployinc.fp16"] = json.dumps({"keep_io_types": bool(keep_io_types), "kept_fp32_ops": list(keep_fp32_ops),
                                         "kept_fp32_nodes": nodes})  # fmt: skip
    del m16.metadata_props[:]
    for k, v in kept.items():
        entry = m16.metadata_props.add()
        entry.key, entry.value = k, v
    return m16


def remove_cast_roundtrips(model: Any) -> int:
    """Remove float32 -> float16 -> float32 Cast pairs; return how many were bypassed. Modifies ``model``.

    ORT's converter casts the output of a node kept in float32 down to float16 and back up again when the next
    node is kept in float32 too, so a run of blocked nodes still passes its values through float16 (and an
    overflowing activation becomes inf anyway). Consumers of the up-cast read the original float32 tensor instead;
    a down-cast left with no consumer is dropped.
    """
    import onnx
    from onnx import TensorProto

    g = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.value_info) + list(inferred.input)}
    except Exception:  # noqa: BLE001 - without types, only unambiguous pairs are removed below
        types = {}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in g.input})
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    bypassed = 0
    remove = []
    for up in list(g.node):
        if cast_to(up) != TensorProto.FLOAT:
            continue
        down = producer.get(up.input[0])
        if down is None or cast_to(down) != TensorProto.FLOAT16:
            continue
        src = down.input[0]
        if types.get(src, TensorProto.FLOAT) != TensorProto.FLOAT:
            continue
        bypassed += 1
        if up.output[0] in outputs:  # a graph output keeps its name: the up-cast becomes an Identity of src
            up.op_type = "Identity"
            del up.attribute[:]
            up.input[0] = src
            continue
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == up.output[0]:
                    n.input[i] = src
        remove.append(up)
    for n in remove:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input} | outputs
    for n in list(g.node):
        if n.op_type == "Cast" and cast_to(n) == TensorProto.FLOAT16 and not (set(n.output) & used):
            g.node.remove(n)
    return bypassed
