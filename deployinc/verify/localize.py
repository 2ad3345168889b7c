"""Find the first layer where an ONNX model departs from its reference.

Torch reference: every ONNX node is given the torch module it came from (:func:`~deployinc.core.graph.node_scopes`:
the exporter's scope metadata first, then TorchScript node names, then parameter names); a value that leaves its
module's scope is that module's output. Each comparison point must pair the *same* tensor on both sides:

- a folded convolution's ONNX output is what the BatchNorm folded into it computes by its normalisation alone
  (found by tensor identity in the traced forward pass: the BN reads the convolution's output). For a plain BN
  that is the BN module's output; timm's ``BatchNormAct2d`` applies its activation inside the module, so its output
  is the activation node after the conv, in the BN's scope, and the conv is compared with the normalisation
  recomputed from the BN's input and statistics;
- hooks copy what they see at once, so an in-place op later in the forward (``ReLU(inplace=True)`` on a BN's
  output, ``out += identity``) cannot change it;
- one module call takes its last ONNX output value of the right shape; a module called ``k`` times pairs with
  ``k`` values in order (a shared ReLU), otherwise it is not compared;
- in an int8 (QDQ) graph a point is the value after its QuantizeLinear -> DequantizeLinear pair. ONNX Runtime's
  quantizer removes a Relu (or Clip) whose range that QuantizeLinear covers, so the convolution's value is clamped
  there: both sides are compared after that clamp (the label says so), not a pre- with a post-activation tensor.
  Which values: the ones deployinc's quantizer recorded (``folded_activations`` in the file's ``deployinc.int8``
  metadata); in another int8 file, a value whose QuantizeLinear's zero point is its type's lowest (a clamp at 0,
  taken as a folded ReLU). Against an ONNX reference, a value the reference's Relu or Clip writes.

The pairs are compared in torch's execution order with :func:`~deployinc.core.metrics.compare_arrays` under a
per-layer budget, whose ``max_rel`` for fp32 is at least twice torch's own float32 error at that point (a
float64 run of the reference: deep networks drift past 1e-4 by rounding alone). A point over budget is confirmed
before it is named (:func:`_confirm`): a real departure propagates, so a point with a later point that every path
from it to the output goes through agreeing again (or one that reaches no output) is *dropped (mapping)*: listed,
never the diagnosis. Where the point agreeing again is a pooling (a global average), the error is real but differs
from position to position and the average brings it back within budget (int8's noise through a deep network): such
points are *averaged out*, named with the lowest cosine they reach, and not the diagnosis either. The first confirmed point is the departure; on a correct export there is none. Each point also records
its largest activation magnitude, flagged beyond float16's 65504.

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

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np

from ..core import graph as G
from ..core.floor import FLOOR_MULTIPLE
from ..core.metrics import Tolerance, compare_arrays

FP16_MAX = 65504.0
#: Layer budgets up to this max_rel (fp32's) are widened to the float32 noise floor; fp16's and int8's are far
#: above it.
FLOOR_MAX_BUDGET = 1e-3
#: Averages over positions (ONNX ops, torch module types): an error that differs from position to position before one
#: shrinks through it, so a point over budget with such a pooling agreeing after it is a real error it averages out.
POOLS = frozenset({"GlobalAveragePool", "AveragePool", "ReduceMean", "AdaptiveAvgPool2d", "AvgPool2d", "AdaptiveAvgPool1d"})
#: Added to the label of a point compared after the ReLU its int8 graph folded into a QuantizeLinear.
FOLDED = " (folded into its QuantizeLinear)"
RELU_FOLDED = " + ReLU" + FOLDED

Clamp = tuple[Optional[float], Optional[float]]  # (low, high) of a folded activation; None: unbounded


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
    dropped: str | None = None
    noise_floor: float | None = None
    max_rel_budget: float | None = None  # where the noise floor widened the layer budget
    #: Dropped because a pooling that every path from it goes through agrees again (its label): a real error that
    #: the average over positions brings back within budget (int8's noise), not a mapping error.
    averaged_by: str | None = None

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
            if self.max_rel_budget is not None and self.noise_floor is not None:
                s += f", max_rel budget {self.max_rel_budget:.1e}"
                s += f" ({FLOOR_MULTIPLE:g} x torch fp32 vs fp64 {self.noise_floor:.1e})"
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

    @property
    def dropped(self) -> list[Point]:
        """Points over budget that are no departure: a later point that every path from them goes through agrees
        again, or they reach no output (:func:`_confirm`)."""
        return [p for p in self.points if p.dropped]

    @property
    def mapping(self) -> list[Point]:
        """The dropped points that are no error of the model: the tensors compared differ, or the graph removes it."""
        return [p for p in self.dropped if not p.averaged_by]

    @property
    def averaged(self) -> list[Point]:
        """The dropped points whose error a pooling averages back within budget (:attr:`Point.averaged_by`)."""
        return [p for p in self.dropped if p.averaged_by]

    def budget_text(self) -> str:
        """The layer budget, and that the float32 noise floor widened it where it did."""
        text = self.budget.describe()
        base = self.budget.max_rel
        floors = [p.noise_floor for p in self.points if p.noise_floor is not None]
        if base is not None and any(FLOOR_MULTIPLE * f > base for f in floors):
            text += f", max_rel widened to {FLOOR_MULTIPLE:g} x torch's own fp32-vs-fp64 error where that is larger"
        return text

    def summary(self) -> str:
        if self.first is None:
            compared = [p for p in self.points if p.compared and not p.dropped]
            dropped = f"; {len(self.mapping)} point(s) dropped (mapping)" if self.mapping else ""
            if self.averaged:
                worst_avg = _lowest_cosine(self.averaged)
                return (
                    f"no one layer departs: {len(self.averaged)} point(s) exceed the budget ({self.budget_text()}), "
                    f"down to cosine {worst_avg.cosine:.6f} at {worst_avg.label}, and {worst_avg.averaged_by} averages "
                    f"their error back within budget on the {self.samples} image(s) localised{dropped}"
                )
            if not compared:
                if self.dropped:
                    return f"no departure: the {len(self.dropped)} point(s) over budget were dropped (mapping)"
                return "no intermediate tensor could be compared"
            if self.budget.max_rel is None:  # a cosine budget (int8): the worst cosine, not max_rel, says how far
                worst = _lowest_cosine(compared)
                largest = f"the lowest cosine is at {worst.label} ({worst.cosine:.6f})"
            else:
                worst = max(compared, key=lambda p: p.max_rel or 0.0)
                largest = f"the largest error is at {worst.label} (max_rel {worst.max_rel:.2e})"
            return f"no layer exceeds its budget ({self.budget_text()}) over {len(compared)} compared tensors; {largest}{dropped}"
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
            "dropped_mapping": [{"label": p.label, "reason": p.dropped} for p in self.mapping],
            "averaged_out": [{"label": p.label, "cosine": p.cosine, "reason": p.dropped} for p in self.averaged],
            "mapped_points": self.mapped,
            "unmapped_values": self.unmapped_values,
            "samples": self.samples,
            "runs": self.runs,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "points": [p.to_dict() for p in self.points],
        }


def _lowest_cosine(points: list[Point]) -> Point:
    return min(points, key=lambda p: p.cosine if p.cosine is not None else 1.0)


# torch side --------------------------------------------------------------------------------------------------------


@dataclass
class TorchCapture:
    """Outputs of module calls in execution order, and the Conv -> BatchNorm pairs a fold would merge.

    ``normalised`` holds, for each BatchNorm that reads a convolution's output, what the normalisation alone computes
    (the BN's affine transform of its input): the value a folded convolution's ONNX output holds. For a plain BN it
    is the module's output; for a BN that applies more in its own forward (timm's ``BatchNormAct2d`` applies its
    activation) the module's output is a different tensor (post-activation), which the ONNX graph computes after the
    folded convolution, in the BN's own scope.
    """

    outputs: dict[str, list[tuple[int, np.ndarray]]]
    calls: dict[str, int]
    types: dict[str, str]
    folds: dict[str, str]
    normalised: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)
    root: tuple[int, np.ndarray] | None = None


def _np(t: Any) -> np.ndarray:
    """A copy taken now: an in-place op later in the forward (``ReLU(inplace=True)``, ``x += identity``) would
    otherwise change what the hook saw."""
    return t.detach().float().cpu().numpy().copy()


def _batch_norm_only(mod: Any, x: Any) -> Any:
    """What BatchNorm module ``mod`` computes from ``x`` with its running statistics, before anything its own
    forward adds (an activation, dropout)."""
    import torch.nn.functional as F

    if getattr(mod, "running_mean", None) is None or getattr(mod, "running_var", None) is None:
        return None
    try:
        return F.batch_norm(x, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0.0, mod.eps)
    except (RuntimeError, TypeError, ValueError):
        return None


def capture_torch(module: Any, x: np.ndarray, wanted: set[str], dtype: Any = np.float32) -> TorchCapture:
    """Run ``module`` once on ``x`` (as ``dtype``) with forward hooks; keep float32 copies of the outputs of
    ``wanted`` modules, the normalisation of every BatchNorm that reads a convolution, and the model's output."""
    import torch
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm

    names = {id(m): n for n, m in module.named_modules()}
    cap = TorchCapture(outputs={}, calls={}, types={n: type(m).__name__ for n, m in module.named_modules()}, folds={})
    conv_out: dict[int, str] = {}
    bn_from: dict[str, str] = {}
    keep_alive: list[Any] = []  # conv outputs stay alive so that their ids are not reused within the pass
    counter = [0]
    handles = []

    def hook(mod: Any, inputs: tuple[Any, ...], out: Any) -> None:
        name = names.get(id(mod))
        if name is None:
            return
        counter[0] += 1
        if name == "":
            if isinstance(out, torch.Tensor):
                cap.root = (counter[0], _np(out))
            return
        cap.calls[name] = cap.calls.get(name, 0) + 1
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(out, torch.Tensor):
            conv_out[id(out)] = name
            keep_alive.append(out)
        if name in bn_from and inputs and isinstance(inputs[0], torch.Tensor) and name not in cap.normalised:
            with torch.inference_mode():
                y = _batch_norm_only(mod, inputs[0])
            if y is not None:
                cap.normalised[name] = (counter[0], _np(y))
        if name in wanted and isinstance(out, torch.Tensor):
            cap.outputs.setdefault(name, []).append((counter[0], _np(out)))

    def bn_pre(mod: Any, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and id(inputs[0]) in conv_out:
            conv = conv_out[id(inputs[0])]
            cap.folds.setdefault(conv, names[id(mod)])
            bn_from.setdefault(names[id(mod)], conv)

    for n, m in module.named_modules():
        handles.append(m.register_forward_hook(hook))
        if isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_pre))
    try:
        with torch.inference_mode():
            module(torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)))
    finally:
        for h in handles:
            h.remove()
    # A conv whose output is read by a BN twice, or a conv run twice, is not folded by deployinc's prepare.
    cap.folds = {c: b for c, b in cap.folds.items() if cap.calls.get(c) == 1 and cap.calls.get(b) == 1}
    return cap


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
    #: Where the value is an int8 graph's DequantizeLinear output whose QuantizeLinear stands for a Relu or Clip the
    #: quantizer removed: that activation's range, and the value is compared after it on both sides.
    folded: Clamp | None = None


def zero_floored(q: Any, inits: dict[str, Any]) -> bool:
    """Whether QuantizeLinear ``q`` clamps at exactly 0: its one zero point is its type's lowest value (uint8 0,
    int8 -128, 16-bit alike), so nothing below 0 survives it (what a ReLU before it would do). No zero point input
    means 0 of the ``output_dtype`` (uint8 by default); one that is not an initializer is unknown (False)."""
    from onnx import TensorProto, numpy_helper

    if len(q.input) < 3 or not q.input[2]:
        out = next((int(a.i) for a in q.attribute if a.name == "output_dtype"), 0)
        return out in (0, TensorProto.UINT8, TensorProto.UINT16)  # a zero point of 0 is the lowest of an unsigned type
    zp = inits.get(q.input[2])
    if zp is None:
        return False
    a = numpy_helper.to_array(zp)
    ints = (np.uint8, np.int8, np.uint16, np.int16)
    return a.size == 1 and a.dtype in ints and int(a.reshape(-1)[0]) == int(np.iinfo(a.dtype).min)


def recorded_folds(model: Any) -> dict[str, Clamp] | None:
    """The activations deployinc's quantizer recorded as folded into a QuantizeLinear (``folded_activations`` in
    the ``deployinc.int8`` metadata: name -> [low, high]); None where the file has no such record."""
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        rec = json.loads(meta.get("deployinc.int8", "null"))
    except ValueError:
        return None
    folds = rec.get("folded_activations") if isinstance(rec, dict) else None
    if not isinstance(folds, dict):
        return None
    return {str(k): (v[0], v[1]) for k, v in folds.items() if isinstance(v, list) and len(v) == 2}


def boundaries(model: Any, modules: set[str]) -> tuple[dict[str, list[Boundary]], int]:
    """Module path -> its output values in topological order; and the count of values with no module."""
    scopes = G.node_scopes(model, modules)
    cons = G.consumers(model)
    index = {id(n): i for i, n in enumerate(model.graph.node)}
    outs = {o.name for o in model.graph.output}
    inits = {t.name: t for t in model.graph.initializer}
    recorded = recorded_folds(model)
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
                folded: Clamp | None = None
                if len(readers) == 1 and readers[0].op_type == "QuantizeLinear":
                    dq = cons.get(readers[0].output[0], [])
                    if len(dq) == 1 and dq[0].op_type == "DequantizeLinear":
                        if recorded is not None:
                            folded = recorded.get(v)
                        elif n.op_type not in ("Relu", "Clip") and zero_floored(readers[0], inits):
                            folded = (0.0, None)
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
                        folded=folded,
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
    key: tuple[Any, ...] | None = None  # where the torch tensor sits in a TorchCapture (see _captured)
    folded: Clamp | None = None  # compare both sides after this clamp (see Boundary.folded)


def _fits(types: dict[str, tuple[int, list[int | str]]], value: str, arr: np.ndarray) -> bool:
    """Whether ONNX ``value`` can hold ``arr`` (same rank, same static dims; unknown and symbolic dims fit)."""
    dims = types.get(value, (0, []))[1]
    if not dims:
        return True
    if len(dims) != arr.ndim:
        return False
    return all(not isinstance(d, int) or d <= 0 or d == s for d, s in zip(dims[1:], arr.shape[1:]))


_Call = tuple[int, np.ndarray]  # (execution order, copy of the tensor)


def _choose(values: list[Boundary], calls: list[_Call], types: dict[str, Any]) -> list[tuple[Boundary, _Call]] | None:
    """Pair a module's ONNX output values with its torch calls: one call takes the last value of its shape; as many
    values as calls pair in order; anything else is not compared (None)."""
    if len(calls) == 1:
        fitting = [b for b in values if _fits(types, b.value, calls[0][1])]
        return [(fitting[-1], calls[0])] if fitting else []
    if len(calls) == len(values):
        return [(b, c) for b, c in zip(values, calls) if _fits(types, b.value, c[1])]
    return None


def _pairs_torch(
    model: Any, reference_module: Any, x: np.ndarray, types: dict[str, Any], floor: bool = False
) -> tuple[list[_Pair], int, list[str]]:
    """Map ONNX values to torch module outputs and capture the torch side.

    A value leaving module ``m``'s scope is ``m``'s output, except where ``m`` is a convolution whose BatchNorm the
    export folded into it (no BatchNormalization reads the value): then it is what that BN's normalisation computes
    (:class:`TorchCapture`), whatever the BN module's forward does after it. With ``floor``, each point also gets
    torch's own float32 error there (:func:`_noise_floor`).
    """
    modules = {n for n, _ in reference_module.named_modules() if n}
    by_module, unmapped = boundaries(model, modules)
    cap = capture_torch(reference_module, x, set(by_module))
    pairs: list[_Pair] = []
    notes: list[str] = []
    skipped_multi = []
    for scope, values in by_module.items():
        mtype = cap.types.get(scope, "?")
        target, label, calls, kind = scope, f"{scope} ({mtype})", cap.outputs.get(scope, []), "out"
        bn = cap.folds.get(scope)
        if bn is not None and not any(b.feeds_bn for b in values) and bn in cap.normalised:
            target, label, calls, kind = bn, f"{scope} ({mtype}, with {bn} folded in)", [cap.normalised[bn]], "norm"
        chosen = _choose(values, calls, types) if calls else []
        if chosen is None:
            skipped_multi.append(scope)
        if not chosen:
            unmapped += len(values)
            continue
        for k, (b, (order, arr)) in enumerate(chosen):
            suffix = f" call {k + 1}" if len(chosen) > 1 else ""
            pair = _pair(order, scope, label + suffix, mtype, b, target, arr)
            pair.key = (kind, target, next(i for i, c in enumerate(calls) if c[0] == order))
            pairs.append(pair)
    pairs += _output_pair(model, cap, types, {p.point.onnx_value for p in pairs})
    if floor:
        note = _noise_floor(reference_module, x, set(by_module), pairs)
        if note:
            notes.append(note)
    if skipped_multi:
        notes.append(
            f"{len(skipped_multi)} module(s) run a different number of times in torch and ONNX, not compared: "
            + ", ".join(sorted(skipped_multi)[:5])
        )
    pairs.sort(key=lambda p: p.point.order)
    return pairs, unmapped, notes


def _pair(order: int, module: str, label: str, mtype: str, b: Boundary, target: str, ref: np.ndarray | None) -> _Pair:
    point = Point(
        order=order, module=module, label=label, module_type=mtype, onnx_value=b.value, onnx_node=b.node_name,
        onnx_op=b.op, torch_module=target,
    )
    return _Pair(point=point, ref=ref, node_index=b.node_index, folded=b.folded)


def _output_pair(model: Any, cap: TorchCapture, types: dict[str, Any], paired: set[str]) -> list[_Pair]:
    """The model's output against the torch model's, when no module boundary already compares it: a departure
    is confirmed by reaching it (:func:`_confirm`)."""
    if cap.root is None or len(model.graph.output) != 1:
        return []
    out = model.graph.output[0].name
    if out in paired or not _fits(types, out, cap.root[1]):
        return []
    producer = next((i for i, n in enumerate(model.graph.node) if out in n.output), None)
    if producer is None:
        return []
    node = model.graph.node[producer]
    b = Boundary(out, producer, node.name or f"#{producer}", node.op_type, "", feeds_bn=False)
    pair = _pair(cap.root[0], "", "model output", "output", b, "", cap.root[1])
    pair.key = ("root", "", 0)
    return [pair]


def _captured(cap: TorchCapture, key: tuple[Any, ...]) -> np.ndarray | None:
    kind, name, k = key
    if kind == "root":
        return cap.root[1] if cap.root is not None else None
    if kind == "norm":
        return cap.normalised[name][1] if name in cap.normalised else None
    calls = cap.outputs.get(name, [])
    return calls[k][1] if k < len(calls) else None


def _noise_floor(module: Any, x: np.ndarray, wanted: set[str], pairs: list[_Pair]) -> str | None:
    """Set each point's ``noise_floor``: torch float32 against a float64 copy of the model at that point
    (max |fp32 - fp64| / max |fp64|). A deep network's float32 error grows layer by layer past a fixed 1e-4
    (timm inception_v4: ~2e-4 at the logits); an export is held to ``FLOOR_MULTIPLE`` times it, as its output is
    (:mod:`~deployinc.core.floor`). Returns a note where float64 does not run."""
    import copy

    try:
        m64 = copy.deepcopy(module).double().eval()
        cap = capture_torch(m64, x, wanted, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - ops without a double kernel, float32 tensors built in forward
        msg = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        return f"no float32 noise floor per layer (float64 does not run: {msg}); the layer budget applies alone"
    for p in pairs:
        y64 = _captured(cap, p.key) if p.key is not None else None
        if y64 is None or p.ref is None or y64.shape != p.ref.shape:
            continue
        ok = np.isfinite(y64) & np.isfinite(p.ref)
        scale = float(np.abs(y64[ok]).max()) if ok.any() else 0.0
        if scale > 0:
            p.point.noise_floor = float(np.abs(p.ref.astype(np.float64) - y64)[ok].max()) / scale
    return None


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
    ref_inits = {t.name: t for t in ref_model.graph.initializer}
    ref_acts = {n.output[0]: G.activation_range(n, ref_inits) for n in ref_model.graph.node if n.op_type in ("Relu", "Clip") and n.output}
    cons = G.consumers(model)
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
                    # a Relu or Clip of the reference that the int8 graph folded into the QuantizeLinear reading this value
                    folded=ref_acts.get(v) if n.op_type not in ("Relu", "Clip") and _only_quantized(v, cons) else None,
                )
            )
    return pairs, unmapped, []


def _bound(b: float | None, none: str) -> str:
    return none if b is None else f"{b:g}"


def _only_quantized(v: str, cons: dict[str, list[Any]]) -> bool:
    readers = cons.get(v, [])
    return len(readers) == 1 and readers[0].op_type == "QuantizeLinear"


def _compare(pair: _Pair, test: np.ndarray | None, budget: Tolerance) -> None:
    p = pair.point
    ref = pair.ref
    if p.noise_floor is not None and budget.max_rel is not None and FLOOR_MULTIPLE * p.noise_floor > budget.max_rel:
        budget = replace(budget, max_rel=FLOOR_MULTIPLE * p.noise_floor)
        p.max_rel_budget = budget.max_rel
    if test is None or ref is None:
        p.note = "no value from the backend" if test is None else "no reference value"
        return
    if tuple(ref.shape) != tuple(test.shape):
        p.note = f"shapes differ: reference {list(ref.shape)}, model {list(test.shape)}"
        return
    if pair.folded is not None and pair.folded != (None, None):  # the int8 graph's QuantizeLinear is the activation
        lo, hi = pair.folded
        clamped_ref, clamped_test = np.clip(ref, lo, hi), np.clip(test, lo, hi)
        if not (np.array_equal(clamped_ref, ref) and np.array_equal(clamped_test, test)) and FOLDED not in p.label:
            p.label += RELU_FOLDED if (lo, hi) == (0.0, None) else f" + Clip({_bound(lo, '-inf')}, {_bound(hi, 'inf')}){FOLDED}"
        ref, test = clamped_ref, clamped_test  # said only where the clamp changes a side
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
    noise_floor: bool = True,
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
        noise_floor: With a torch reference and an fp32-sized budget, widen each point's ``max_rel`` budget to
            ``FLOOR_MULTIPLE`` times torch's own float32 error there (a float64 run of the reference).
    """
    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    budget = layer_budget(tolerance)
    loc = Localization(backend=backend, method=method, budget=budget, samples=int(x.shape[0]))
    types = G.value_types(model)
    if reference_module is not None:
        floor = noise_floor and budget.max_rel is not None and budget.max_rel <= FLOOR_MAX_BUDGET
        pairs, unmapped, notes = _pairs_torch(model, reference_module, x, types, floor=floor)
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
    _conclude(model, pairs, loc)
    loc.seconds = time.perf_counter() - t0
    return loc


def _conclude(model: Any, pairs: list[_Pair], loc: Localization) -> None:
    """The first confirmed point over budget (in torch's execution order), the last agreeing one before it, and
    the ONNX nodes between them."""
    loc.points = [p.point for p in pairs]
    _confirm(model, pairs, pools_average=loc.budget.max_rel is None)  # int8's noise: only a cosine budget averages out
    if loc.mapping:
        loc.notes.append(_dropped_note(loc.mapping))
    if loc.averaged:
        loc.notes.append(
            f"averaged out: {len(loc.averaged)} point(s) over budget from {loc.averaged[0].label} on, whose error a pooling "
            "averages back within budget: a real error that differs from position to position (int8's rounding noise "
            "grows so through a deep network), not offered as the departure"
        )
    compared_in_order = [p for p in pairs if p.point.compared]
    first_idx = next((i for i, p in enumerate(compared_in_order) if p.point.failures and not p.point.dropped), None)
    if first_idx is None:
        return
    first = compared_in_order[first_idx]
    loc.first = first.point
    good = [p for p in compared_in_order[:first_idx] if p.point.passed]
    loc.last_good = good[-1].point if good else None
    upstream_ok: set[int] = set()
    for g in good:
        upstream_ok |= ancestors(model, g.point.onnx_value)
    suspects = sorted(ancestors(model, first.point.onnx_value) - upstream_ok)
    nodes = model.graph.node
    loc.suspects = [f"{nodes[i].name or '#' + str(i)} ({nodes[i].op_type})" for i in suspects][:20]


_EXIT = ""  # the post-dominator tree's root: past every graph output


def post_dominators(model: Any) -> dict[str, str | None]:
    """Value -> its immediate post-dominator: the nearest later value that every path from it to the graph's
    outputs goes through (``""`` past the outputs; None for a value that reaches no output).

    Shape and Size read no numbers, so their outputs are not paths of a tensor's values.
    """
    succ: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type in ("Shape", "Size"):
            continue
        outs = [o for o in n.output if o]
        for i in n.input:
            if i:
                succ.setdefault(i, []).extend(outs)
    ipdom: dict[str, str | None] = {}
    depth: dict[str, int] = {_EXIT: 0}
    graph_outs = {o.name for o in model.graph.output}

    def meet(a: str, b: str) -> str:
        while a != b:
            if depth[a] >= depth[b]:
                a = ipdom[a] or _EXIT
            else:
                b = ipdom[b] or _EXIT
        return a

    order = [gi.name for gi in model.graph.input] + [o for n in model.graph.node for o in n.output if o]
    for v in reversed(order):
        if v in ipdom:
            continue
        cands = ([_EXIT] if v in graph_outs else []) + [w for w in succ.get(v, []) if w in depth]
        if not cands:
            ipdom[v] = None
            continue
        m = cands[0]
        for w in cands[1:]:
            m = meet(m, w)
        ipdom[v] = m
        depth[v] = depth[m] + 1
    return ipdom


def _confirm(model: Any, pairs: list[_Pair], pools_average: bool = False) -> None:
    """Mark the points over budget that are no departure (``Point.dropped``).

    A wrong value propagates: what is computed from it is wrong too, up to the output. A point over budget with a
    later point that every path from it to the output goes through (a post-dominator: the activation after a
    convolution, the block's concatenation or residual sum) agreeing again is therefore a mapping error, where the
    torch tensor is not the ONNX value (a pre- against a post-activation tensor, say), or a difference the graph
    removes again (a normalisation); a point whose value reaches no output cannot make the output depart. Neither
    is named as the departure. On a correct export whose output agrees, every point over budget is dropped.
    With ``pools_average`` (a cosine-only budget: int8), a point whose agreeing post-dominator is a pooling is
    *averaged out* (``Point.averaged_by``): real noise that the average over positions shrinks back within budget.
    """
    compared = [p for p in pairs if p.point.compared]
    if not compared:
        return
    ipdom = post_dominators(model)
    outs = {o.name for o in model.graph.output}
    at: dict[str, list[Point]] = {}
    for p in compared:
        at.setdefault(p.point.onnx_value, []).append(p.point)
    for p in compared:
        if not p.point.failures:
            continue
        v: str | None = ipdom.get(p.point.onnx_value, None)
        if v is None and p.point.onnx_value not in outs:
            p.point.dropped = "its value does not reach the model's output"
            continue
        while v:
            agree = next((q for q in at.get(v, []) if q.passed), None)
            if agree is not None:
                if pools_average and (agree.onnx_op in POOLS or agree.module_type in POOLS):
                    p.point.averaged_by = agree.label
                    p.point.dropped = f"departs here, and {agree.label}, which every path from it goes through, averages it back within budget"
                else:
                    p.point.dropped = f"departs here, but {agree.label}, which every path from it goes through, agrees"
                break
            v = ipdom.get(v)


def _dropped_note(dropped: list[Point]) -> str:
    shown = ", ".join(p.label for p in dropped[:6]) + (f" and {len(dropped) - 6} more" if len(dropped) > 6 else "")
    return (
        f"dropped (mapping): {shown} — over budget, but a later point that every path from it goes through agrees "
        "again, or the output is never reached (a real departure propagates): the torch tensor compared there is "
        "not the ONNX value, or the graph removes the difference (a normalisation, a pooling); not offered as the "
        "departure"
    )


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
