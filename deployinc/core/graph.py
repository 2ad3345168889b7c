"""ONNX graph helpers shared by every stage."""

from __future__ import annotations

from typing import Any


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
