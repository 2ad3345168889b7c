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
