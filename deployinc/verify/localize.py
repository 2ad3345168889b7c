"""Find the first layer where an ONNX model departs from its reference.

Torch reference: every ONNX node is given the torch module it came from (:func:`~deployinc.verify.graph.node_scopes`);
a value that leaves its module's scope is that module's output. A folded convolution's ONNX output is compared with
the output of the BatchNorm folded into it (found by tensor identity in the traced forward pass: the BN reads the
convolution's output), since the original model computes ``bn(conv(x))`` where the ONNX graph has one Conv. The
module outputs are captured with forward hooks on the original eager model, and the pairs are compared in torch's
execution order with :func:`~deployinc.verify.metrics.compare_arrays` under a per-layer budget; the first pair over
its budget is the departure. Each point also records its largest activation magnitude, flagged beyond float16's
65504.

ONNX reference (``--against``): values are paired by name.

How intermediates are read:

- ``all`` (ONNX Runtime CPU and CUDA): every mapped value becomes a graph output of one model, run once.
- ``bisect`` (TensorRT, and on request): exposing an intermediate stops TensorRT from fusing across it, so the
  points are read from *truncated* models whose only output is the point, which keep every fusion of the full
  model except at the cut. A binary search runs over the graph's single-tensor cuts (values every path from the
  input to the output goes through: the outputs of inception blocks, residual additions, pools), where a wrong
  value stays wrong downstream; then the points inside the failing block are read one by one.

The nodes between the last agreeing point and the first departing one (ancestors of the departing value that no
agreeing point depends on) are reported as the suspects.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from . import graph as G
from .metrics import Tolerance, compare_arrays

FP16_MAX = 65504.0


def layer_budget(tol: Tolerance) -> Tolerance:
    """The budget of one intermediate tensor: the output's element and cosine budgets, no task metrics.

    int8 outputs are judged on agreement only (``max_rel`` None); their layers get a cosine budget.
    """
    cos = tol.min_cosine if tol.min_cosine is not None else 0.99
    return Tolerance(
        max_rel=tol.max_rel, max_abs=None, min_cosine=cos, min_top1=None, min_top5=None, name=f"{tol.name}-layer"
    )


@dataclass
class Point:
    """One compared intermediate tensor."""

    order: int
    module: str
    label: str
    module_type: str
    onnx_value: str
    onnx_node: str
    onnx_op: str
    torch_module: str
    shape: list[int] = field(default_factory=list)
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    ref_max_abs: float | None = None
    test_max_abs: float | None = None
    nonfinite: int = 0
    failures: list[str] = field(default_factory=list)
    compared: bool = False
    note: str | None = None

    @property
    def passed(self) -> bool:
        return self.compared and not self.failures

    @property
    def fp16_overflow(self) -> bool:
        return any(v is not None and v > FP16_MAX for v in (self.ref_max_abs, self.test_max_abs)) or self.nonfinite > 0

    def line(self) -> str:
        s = f"{self.label} [ONNX {self.onnx_op} {self.onnx_node!r} -> {self.onnx_value!r}]"
        if self.compared:
            s += f": max_rel {self.max_rel:.2e}, max_abs {self.max_abs:.3g}, cosine {self.cosine:.6f}"
            s += f", largest |activation| {self.ref_max_abs:.4g} (reference) / {self.test_max_abs:.4g} (model)"
            if self.fp16_overflow:
                s += " — beyond fp16's 65504"
        return s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["fp16_overflow"] = self.fp16_overflow
        return d


@dataclass
class Localization:
    """Where the model departs from the reference."""

    backend: str
    method: str
    budget: Tolerance
    points: list[Point] = field(default_factory=list)
    first: Point | None = None
    last_good: Point | None = None
    suspects: list[str] = field(default_factory=list)
    mapped: int = 0
    unmapped_values: int = 0
    samples: int = 0
    runs: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def overflow(self) -> list[Point]:
        return [p for p in self.points if p.compared and p.fp16_overflow]

    def summary(self) -> str:
        if self.first is None:
            compared = [p for p in self.points if p.compared]
            if not compared:
                return "no intermediate tensor could be compared"
            worst = max(compared, key=lambda p: p.max_rel or 0.0)
            return (
                f"no layer exceeds its budget ({self.budget.describe()}) over {len(compared)} compared tensors; "
                f"the largest error is at {worst.label} (max_rel {worst.max_rel:.2e})"
            )
        return f"first departure at {self.first.label}: {'; '.join(self.first.failures)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "method": self.method,
            "budget": asdict(self.budget),
            "summary": self.summary(),
            "first": self.first.to_dict() if self.first else None,
            "last_good": self.last_good.to_dict() if self.last_good else None,
            "suspect_nodes": self.suspects,
            "fp16_overflow": [p.label for p in self.overflow],
            "mapped_points": self.mapped,
            "unmapped_values": self.unmapped_values,
            "samples": self.samples,
            "runs": self.runs,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "points": [p.to_dict() for p in self.points],
        }


# torch side --------------------------------------------------------------------------------------------------------


@dataclass
class TorchCapture:
    """Outputs of module calls in execution order, and the Conv -> BatchNorm pairs a fold would merge."""

    outputs: dict[str, list[tuple[int, np.ndarray]]]
    calls: dict[str, int]
    types: dict[str, str]
    folds: dict[str, str]


def capture_torch(module: Any, x: np.ndarray, wanted: set[str]) -> TorchCapture:
    """Run ``module`` once on ``x`` with forward hooks; keep copies of the outputs of ``wanted`` modules."""
    import torch
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm

    names = {id(m): n for n, m in module.named_modules()}
    types = {n: type(m).__name__ for n, m in module.named_modules()}
    outputs: dict[str, list[tuple[int, np.ndarray]]] = {}
    calls: dict[str, int] = {}
    conv_out: dict[int, str] = {}
    keep_alive: list[Any] = []
    folds: dict[str, str] = {}
    counter = [0]
    handles = []

    def hook(mod: Any, inputs: tuple[Any, ...], out: Any) -> None:
        name = names.get(id(mod))
        if name is None:
            return
        calls[name] = calls.get(name, 0) + 1
        counter[0] += 1
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(out, torch.Tensor):
            conv_out[id(out)] = name
            keep_alive.append(out)
        if name in wanted and isinstance(out, torch.Tensor):
            outputs.setdefault(name, []).append((counter[0], out.detach().float().cpu().numpy().copy()))

    def bn_pre(mod: Any, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and id(inputs[0]) in conv_out:
            folds.setdefault(conv_out[id(inputs[0])], names[id(mod)])

    for n, m in module.named_modules():
        if n == "":
            continue
        handles.append(m.register_forward_hook(hook))
        if isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_pre))
    try:
        with torch.inference_mode():
            module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    # A conv whose output is read by a BN twice, or a conv run twice, is not folded by deployinc's prepare.
    folds = {c: b for c, b in folds.items() if calls.get(c) == 1 and calls.get(b) == 1}
    return TorchCapture(outputs=outputs, calls=calls, types=types, folds=folds)


# ONNX side ---------------------------------------------------------------------------------------------------------


@dataclass
class Boundary:
    """An ONNX value that leaves its module's scope: that module's output."""

    value: str
    node_index: int
    node_name: str
    op: str
    scope: str
    feeds_bn: bool


def boundaries(model: Any, modules: set[str]) -> tuple[dict[str, list[Boundary]], int]:
    """Module path -> its output values in topological order; and the count of values with no module."""
    scopes = G.node_scopes(model, modules)
    cons = G.consumers(model)
    index = {id(n): i for i, n in enumerate(model.graph.node)}
    outs = {o.name for o in model.graph.output}
    by_module: dict[str, list[Boundary]] = {}
    unmapped = 0
    for idx, n in enumerate(model.graph.node):
        s = scopes.get(idx)
        for v in n.output:
            if not v:
                continue
            if n.op_type in ("Constant", "Shape"):
                continue
            if s is None or s == "":
                unmapped += 1
                continue
            readers = cons.get(v, [])
            leaves = v in outs or not readers
            for r in readers:
                rs = scopes.get(index[id(r)])
                if rs is None or not G.within(rs, s):
                    leaves = True
                    break
            if leaves:
                # In a QDQ (int8) graph, compare what the quantized graph computes: the value after its Q -> DQ
                # pair. Exposing the float value before it would stop ONNX Runtime fusing the quantized kernel.
                if len(readers) == 1 and readers[0].op_type == "QuantizeLinear":
                    dq = cons.get(readers[0].output[0], [])
                    if len(dq) == 1 and dq[0].op_type == "DequantizeLinear":
                        v = dq[0].output[0]
                        readers = cons.get(v, [])
                by_module.setdefault(s, []).append(
                    Boundary(
                        value=v,
                        node_index=idx,
                        node_name=n.name or f"#{idx}",
                        op=n.op_type,
                        scope=s,
                        feeds_bn=any(r.op_type == "BatchNormalization" for r in readers),
                    )
                )
    return by_module, unmapped


def ancestors(model: Any, value: str) -> set[int]:
    """Indices of the nodes ``value`` depends on (its producer included)."""
    producers = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    seen: set[int] = set()
    stack = [value]
    visited: set[str] = set()
    while stack:
        v = stack.pop()
        if v in visited:
            continue
        visited.add(v)
        i = producers.get(v)
        if i is None or i in seen:
            continue
        seen.add(i)
        stack.extend(x for x in model.graph.node[i].input if x)
    return seen


def single_tensor_cuts(model: Any) -> list[str]:
    """Values every path from the input to the outputs goes through, in topological order."""
    nodes = list(model.graph.node)
    inputs = {gi.name for gi in G.graph_inputs(model)}
    live_dep: set[str] = set(inputs)
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if any(x in live_dep for x in n.input):
            for o in n.output:
                if o:
                    live_dep.add(o)
                    producer[o] = i
    last_use: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            if x in producer:
                last_use[x] = i
    outs = {o.name for o in model.graph.output}
    for o in outs:
        if o in producer:
            last_use[o] = len(nodes)
    crossing = np.zeros(len(nodes) + 1, dtype=np.int64)
    for v, p in producer.items():
        end = last_use.get(v, p)
        if end > p:
            crossing[p] += 1
            crossing[end] -= 1
    live = np.cumsum(crossing)
    cuts = []
    for i, n in enumerate(nodes[:-1]):
        if live[i] == 1:
            for o in n.output:
                if o in producer and last_use.get(o, i) > i:
                    cuts.append(o)
    return cuts


@dataclass
class _Pair:
    point: Point
    ref: np.ndarray | None
    node_index: int


def _pairs_torch(model: Any, reference_module: Any, x: np.ndarray) -> tuple[list[_Pair], int, list[str]]:
    """Map ONNX values to torch module outputs and capture the torch side."""
    modules = {n for n, _ in reference_module.named_modules() if n}
    by_module, unmapped = boundaries(model, modules)
    wanted = set(by_module)
    from torch.nn.modules.batchnorm import _BatchNorm

    wanted |= {n for n, m in reference_module.named_modules() if isinstance(m, _BatchNorm)}
    cap = capture_torch(reference_module, x, wanted)
    pairs: list[_Pair] = []
    notes: list[str] = []
    skipped_multi = []
    for scope, values in by_module.items():
        mtype = cap.types.get(scope, "?")
        target = scope
        label = scope
        if scope in cap.folds and not any(b.feeds_bn for b in values):
            target = cap.folds[scope]
            label = f"{scope} ({mtype}, with {target} folded in)"
        else:
            label = f"{scope} ({mtype})"
        calls = cap.outputs.get(target, [])
        if not calls:
            unmapped += len(values)
            continue
        if len(calls) == 1:
            chosen = [(values[-1], calls[0])]
        elif len(calls) == len(values):
            chosen = list(zip(values, calls))
        else:
            skipped_multi.append(scope)
            unmapped += len(values)
            continue
        for k, (b, (order, arr)) in enumerate(chosen):
            suffix = f" call {k + 1}" if len(chosen) > 1 else ""
            pairs.append(
                _Pair(
                    point=Point(
                        order=order,
                        module=scope,
                        label=label + suffix,
                        module_type=mtype,
                        onnx_value=b.value,
                        onnx_node=b.node_name,
                        onnx_op=b.op,
                        torch_module=target,
                    ),
                    ref=arr,
                    node_index=b.node_index,
                )
            )
    if skipped_multi:
        notes.append(
            f"{len(skipped_multi)} module(s) run a different number of times in torch and ONNX, not compared: "
            + ", ".join(sorted(skipped_multi)[:5])
        )
    pairs.sort(key=lambda p: p.point.order)
    return pairs, unmapped, notes


def _guess_label(model: Any, idx: int) -> str:
    n = model.graph.node[idx]
    inits = {t.name for t in model.graph.initializer}
    for i in n.input:
        if i in inits and "." in i:
            prefix, _, suffix = i.rpartition(".")
            if suffix in G._PARAM_SUFFIXES:
                return prefix
    if n.name.startswith("/"):
        parts = [p for p in n.name.split("/") if p][:-1]
        if parts:
            return ".".join(parts)
    return n.name or f"#{idx}"


def _pairs_onnx(model: Any, ref_model: Any) -> tuple[list[_Pair], int, list[str]]:
    """Pair the values of two ONNX graphs by name (float values only)."""
    test_types = G.value_types(model)
    ref_types = G.value_types(ref_model)
    ref_values = {o for n in ref_model.graph.node for o in n.output if o}
    outs = {o.name for o in model.graph.output}
    pairs = []
    unmapped = 0
    for idx, n in enumerate(model.graph.node):
        if n.op_type in ("Constant", "Shape"):
            continue
        for v in n.output:
            if not v or v in outs:
                continue
            if v not in ref_values or test_types.get(v, (0,))[0] not in G.FLOAT_TYPES or ref_types.get(v, (0,))[0] not in G.FLOAT_TYPES:
                unmapped += 1
                continue
            label = _guess_label(model, idx)
            pairs.append(
                _Pair(
                    point=Point(
                        order=idx,
                        module=label,
                        label=f"{label} ({n.op_type})",
                        module_type=n.op_type,
                        onnx_value=v,
                        onnx_node=n.name or f"#{idx}",
                        onnx_op=n.op_type,
                        torch_module="",
                    ),
                    ref=None,
                    node_index=idx,
                )
            )
    return pairs, unmapped, []


def _compare(pair: _Pair, test: np.ndarray | None, budget: Tolerance) -> None:
    p = pair.point
    ref = pair.ref
    if test is None or ref is None:
        p.note = "no value from the backend" if test is None else "no reference value"
        return
    if tuple(ref.shape) != tuple(test.shape):
        p.note = f"shapes differ: reference {list(ref.shape)}, model {list(test.shape)}"
        return
    c = compare_arrays(p.onnx_value, ref, test, budget)
    t64 = np.asarray(test, dtype=np.float64)
    p.compared = True
    p.shape = [int(s) for s in ref.shape]
    p.max_abs, p.max_rel, p.cosine = c.max_abs, c.max_rel, c.cosine
    p.ref_max_abs = c.ref_scale
    fin = np.isfinite(t64)
    p.test_max_abs = float(np.abs(t64[fin]).max()) if fin.any() else float("inf")
    p.nonfinite = int(c.nan + c.inf)
    p.failures = list(c.failures)


def localize(
    model: Any,
    x: np.ndarray,
    *,
    tolerance: Tolerance,
    run_exposed: Callable[[Any, list[str]], dict[str, np.ndarray]],
    reference_module: Any = None,
    reference_model: Any = None,
    run_reference_exposed: Callable[[Any, list[str]], dict[str, np.ndarray]] | None = None,
    method: str = "all",
    run_proxy_exposed: Callable[[Any, list[str]], dict[str, np.ndarray]] | None = None,
    backend: str = "ort-cpu",
    log: Callable[[str], None] | None = None,
) -> Localization:
    """Compare intermediate tensors of ``model`` with the reference's, in execution order.

    Args:
        model: The ONNX model under test.
        x: Input batch (float32, normalised); cast to the model's input type by ``run_exposed``.
        tolerance: The output tolerance; each layer gets :func:`layer_budget` of it.
        run_exposed: ``run_exposed(model_proto, value_names) -> {name: array}`` on the backend under test; it
            receives the model with the values exposed as outputs (``all``) or a truncated model (``bisect``).
        reference_module: The torch reference (eval mode), or
        reference_model: the reference ONNX model with ``run_reference_exposed`` to read its values.
        method: ``all`` or ``bisect``.
        run_proxy_exposed: For ``bisect``: reads values of ``model`` on ONNX Runtime's CPU provider, the stand-in
            reference of cuts that have no torch counterpart.
        backend: Backend name, for the report.
        log: Progress lines.
    """
    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    budget = layer_budget(tolerance)
    loc = Localization(backend=backend, method=method, budget=budget, samples=int(x.shape[0]))
    if reference_module is not None:
        pairs, unmapped, notes = _pairs_torch(model, reference_module, x)
    else:
        pairs, unmapped, notes = _pairs_onnx(model, reference_model)
        if pairs and run_reference_exposed is not None:
            ref_model_exposed = reference_model
            got = run_reference_exposed(ref_model_exposed, [p.point.onnx_value for p in pairs])
            for p in pairs:
                p.ref = got.get(p.point.onnx_value)
            loc.runs += 1
    loc.notes += notes
    loc.mapped = len(pairs)
    loc.unmapped_values = unmapped
    if not pairs:
        loc.notes.append(
            "no ONNX value could be mapped to a reference tensor (no module scopes or parameter names in the graph)"
        )
        loc.seconds = time.perf_counter() - t0
        return loc
    types = G.value_types(model)

    def read(names: list[str], truncate: bool) -> dict[str, np.ndarray]:
        loc.runs += 1
        if truncate:
            assert len(names) == 1
            return run_exposed(G.truncated(model, names[0], types), names)
        return run_exposed(G.with_outputs(model, names, types), names)

    if method == "all":
        got = read([p.point.onnx_value for p in pairs], truncate=False)
        for p in pairs:
            _compare(p, got.get(p.point.onnx_value), budget)
    else:
        proxy_reader = None
        if run_proxy_exposed is not None:
            proxy_reader = lambda names: run_proxy_exposed(G.with_outputs(model, names, types), names)  # noqa: E731
        extra = _bisect(model, pairs, budget, read, say, loc, proxy_reader)
        pairs = sorted(pairs + extra, key=lambda p: (p.point.order, p.node_index))
    compared_in_order = [p for p in pairs if p.point.compared]
    first_idx = next((i for i, p in enumerate(compared_in_order) if p.point.failures), None)
    loc.points = [p.point for p in pairs]
    if first_idx is not None:
        first = compared_in_order[first_idx]
        loc.first = first.point
        good = [p for p in compared_in_order[:first_idx]]
        loc.last_good = good[-1].point if good else None
        upstream_ok: set[int] = set()
        for g in good:
            upstream_ok |= ancestors(model, g.point.onnx_value)
        bad = ancestors(model, first.point.onnx_value)
        suspects = sorted(bad - upstream_ok)
        loc.suspects = [
            f"{model.graph.node[i].name or '#' + str(i)} ({model.graph.node[i].op_type})" for i in suspects
        ][:20]
    loc.seconds = time.perf_counter() - t0
    return loc


def _bisect(
    model: Any,
    pairs: list[_Pair],
    budget: Tolerance,
    read: Callable[[list[str], bool], dict[str, np.ndarray]],
    say: Callable[[str], None],
    loc: Localization,
    proxy: Callable[[list[str]], dict[str, np.ndarray]] | None,
) -> list[_Pair]:
    """Binary search over the graph's single-tensor cuts, then the mapped points of the failing block.

    A cut with a torch counterpart is compared with it; one without (an unscoped Concat, say) is compared with the
    same model's value on ONNX Runtime's CPU provider (``proxy``), which the torch comparison vouches for up to the
    first departing point. Returns the extra points created for unmapped cuts.
    """
    cuts = single_tensor_cuts(model)
    by_value = {p.point.onnx_value: p for p in pairs}
    topo = sorted(pairs, key=lambda p: p.node_index)
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    unmapped = [c for c in cuts if c not in by_value]
    proxies = proxy(unmapped) if (proxy is not None and unmapped) else {}
    if proxy is not None and unmapped:
        loc.runs += 1
    extra: list[_Pair] = []
    cut_pairs: list[_Pair] = []
    for c in cuts:
        if c in by_value:
            cut_pairs.append(by_value[c])
            continue
        if c not in proxies:
            continue
        idx = producer[c]
        before = [p for p in topo if p.node_index < idx]
        order = before[-1].point.order if before else 0
        node = model.graph.node[idx]
        label = f"{_guess_label(model, idx)} ({node.op_type} output, compared with ORT CPU)"
        pair = _Pair(
            point=Point(
                order=order,
                module=_guess_label(model, idx),
                label=label,
                module_type=node.op_type,
                onnx_value=c,
                onnx_node=node.name or f"#{idx}",
                onnx_op=node.op_type,
                torch_module="",
            ),
            ref=np.asarray(proxies[c], dtype=np.float32),
            node_index=idx,
        )
        extra.append(pair)
        cut_pairs.append(pair)

    def check(p: _Pair) -> bool:
        if not p.point.compared and p.point.note is None:
            got = read([p.point.onnx_value], True)
            _compare(p, got.get(p.point.onnx_value), budget)
        return p.point.compared and bool(p.point.failures)

    lo, hi = 0, len(cut_pairs)  # the first failing cut lies in cut_pairs[lo:hi] (hi: none fails)
    while lo < hi:
        mid = (lo + hi) // 2
        say(f"bisect: checking {cut_pairs[mid].point.label}")
        if check(cut_pairs[mid]):
            hi = mid
        else:
            lo = mid + 1
    start = cut_pairs[lo - 1].node_index if lo > 0 else -1
    end = cut_pairs[lo].node_index if lo < len(cut_pairs) else len(model.graph.node)
    block = [p for p in topo if start < p.node_index < end]
    for p in sorted(block, key=lambda q: q.point.order):
        check(p)
    loc.notes.append(
        f"bisection over {len(cut_pairs)} single-tensor cuts ({len(extra)} compared with ORT CPU), then "
        f"{len(block)} point(s) of the failing block, each read from a truncated model so that fusions elsewhere "
        "are unchanged"
    )
    return extra
