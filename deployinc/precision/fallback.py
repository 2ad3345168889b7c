"""Layer fallback: the few layers to keep in float so that a lower-precision model passes its check.

A whole-model int8 (or fp16) file often fails its preset because of a handful of layers: an early convolution
whose error the rest of the network amplifies, a layer reading an activation with an outlier channel. The search
finds such a set with the verifier's own comparison as its oracle, as NNCF's accuracy-controlled quantization,
onnxconverter-common's ``auto_mixed_precision`` and Polygraphy's ``debug precision`` do, but judged by deployinc's
presets (or the task rule when labels are given) against eager torch fp32 outputs:

1. **Judge the whole model.** If it passes, nothing is kept in float.
2. **Rank** every candidate layer (a Conv, ConvTranspose, Gemm or MatMul that runs at the lower precision) by what
   keeping it *alone* in float gains: the drop of the mean per-image relative error (``|y - ref| / |ref|``) of the
   outputs. One evaluation per layer, each a model built by graph surgery (no re-quantization, no re-calibration).
3. **Grow, then bisect** the prefix of that ranking: keep the top 1, 2, 4, 8, ... layers in float until the model
   passes, then bisect between the last failing and the first passing count. Then the same over the ranking by gain
   *per multiply-add* (where the layers' errors add up, the set of least float work for the gain needed is the
   greedy one by that ratio): the cheaper of the two passing prefixes goes on.
4. **Prune**: drop from the set, the costliest first (by multiply-adds: a layer kept in float costs time in
   proportion to its work, and an early high-resolution convolution can cost twenty small ones), every layer the
   model still passes without (a few more evaluations), so a set is neither larger nor slower than it must be.
   Then the passing set of least work among all those judged on the way wins (a layer that passed alone in the
   ranking, say, over a larger pruned set).

Every evaluation counts against a budget (``budget``; the ranking alone takes one per layer) and is recorded in a
state file when one is given, so a search killed half-way resumes where it stopped. The result names each layer
kept in float, with the torch module it came from and its measured effect.

Keeping an int8 layer in float means: it reads its inputs as fp32 computes them from the outputs of the layers
before it (no QuantizeLinear/DequantizeLinear pair on the way; the float pooling, Relu or Concat between them is
copied from the fp32 model), and its weights and bias are the fp32 model's own (the quantized ones dequantized where
the fp32 model is not at hand). Its output is quantized again wherever a quantized layer reads it. A layer before it
whose output now feeds float layers alone (it is "carried along": ONNX Runtime no longer fuses it into an int8
kernel) reads its weights as float constants, the dequantized int8 values: the numbers it computes are the same as
with the DequantizeLinear in front, but ONNX Runtime only gives a convolution of constant weights its blocked
(NCHWc) float kernel, 1.5x faster than the plain one on googlenet's 7x7 stem.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import MAX_ACCURACY_DROP, MIN_TASK_AGREEMENT, Tolerance, compare_outputs, preset, task_failures
from ..errors import BadInputError
from ..core.cache import read_regular
from ..core.graph import consumers, detect_precision, toposort_nodes
from ..io import atomic_write_text, load_onnx
from ._common import batches, cpu_session
from .fp16 import convert_to_fp16
from .int8 import quantize_int8
from ..core.precisions import FP16, FP32, INT8

#: Operator types a layer fallback can keep in float (the ones that carry weights and most of the time).
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: What ``--fallback`` takes.
FALLBACK_CHOICES = ("none", "auto")
#: The most layers ranked; beyond it the search keeps the first ones in graph order (a bound on its time).
MAX_RANKED = 256
#: Evaluations beyond the ranking (grow and bisect by gain, then by gain per multiply-add, prune, final check).
EXTRA_EVALUATIONS = 40
STATE_FORMAT = "deployinc-fallback/1"
#: The generated images an int8 layer search judges at least: verify's own set first, then more sets of as many of
#: the same seed (each judged on its own), so a float set that passes one draw of images by luck is not taken.
SEARCH_IMAGES = 96
#: The share of the int8 preset's cosine budget (1 - min_cosine) a layer search may spend on its images: a float set
#: at the very edge on them (resnet50: worst of 96 images 0.9903, median 0.9925) still leaves about 1% of other
#: images below 0.99, so the search keeps a tenth of the budget in hand. The artifact it makes is then verified by
#: the preset itself.
SEARCH_BUDGET_SHARE = 0.9


@dataclass
class TaskGoal:
    """The task rule, used when the user gives labelled images: a lower-precision model is accepted on its top-1
    accuracy against fp32 (at most ``max_drop`` points lower) and its top-1 agreement with fp32
    (:func:`deployinc.core.metrics.task_failures`)."""

    labels: np.ndarray
    max_drop: float = MAX_ACCURACY_DROP
    min_agreement: float = MIN_TASK_AGREEMENT


@dataclass
class Judgement:
    """One model judged: the verdict, the error the ranking uses, and a line for the log and the report."""

    passed: bool
    error: float
    line: str
    rule: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_relative_error(ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> float:
    """The mean over images of ``|y - ref| / |ref|`` (L2 norms per image), the worst output's; inf when non-finite."""
    worst = 0.0
    for (_, r), (_, t) in zip(ref.items(), test.items()):
        r2 = np.asarray(r, dtype=np.float64).reshape(len(r), -1)
        t2 = np.asarray(t, dtype=np.float64).reshape(len(t), -1)
        if not np.isfinite(t2).all():
            return float("inf")
        den = np.maximum(np.linalg.norm(r2, axis=1), 1e-30)
        worst = max(worst, float((np.linalg.norm(t2 - r2, axis=1) / den).mean()))
    return worst


@dataclass
class Oracle:
    """How a candidate model is judged: its outputs on ``inputs`` against the fp32 ``reference`` outputs (eager torch),
    by the precision's ``tolerance`` preset, or by the task rule when ``goal`` has labels."""

    inputs: np.ndarray
    input_name: str
    reference: dict[str, np.ndarray]
    tolerance: Tolerance
    goal: TaskGoal | None = None
    threads: int | None = None
    batch: int = 8
    #: Judge the inputs by the preset in consecutive sets of this many (each must pass, as verify would judge each
    #: set on its own); None: all at once.
    set_size: int | None = None
    #: Run the candidate on this ONNX backend instead of ORT CPU (None), with an int8 file's float layers in
    #: ``float_precision`` there (OpenVINO: bf16): the form a deploy candidate ships in.
    backend: str | None = None
    float_precision: str | None = None

    def describe(self) -> str:
        """``48 verification images (3 sets of 16, each judged on its own)``."""
        n, k = len(self.inputs), self.set_size
        sets = f" ({-(-n // k)} sets of {k}, each judged on its own)" if self.goal is None and k and n > k else ""
        return f"{n} verification images{sets}"

    def outputs(self, model: Any) -> dict[str, np.ndarray]:
        if self.backend is not None:
            return self._backend_outputs(model)
        sess = cpu_session(model, threads=self.threads)  # the CPU provider computes what ORT CPU ships
        names = [o.name for o in sess.get_outputs()]
        got: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for chunk in batches(self.inputs, self.batch):
            for k, v in zip(names, sess.run(None, {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)})):
                got[k].append(np.asarray(v))
        return {k: np.concatenate(v) for k, v in got.items()}

    def _backend_outputs(self, model: Any) -> dict[str, np.ndarray]:
        from ..factory import onnx_runner  # lazy: the factory loads the backend records; the search itself needs ORT only

        precision, _ = detect_precision(model)
        floats = self.float_precision
        if precision == FP32 and floats:  # every layer kept in float: the whole file computes at that precision
            precision, floats = floats, None
        runner = onnx_runner(str(self.backend), model.SerializeToString(), precision=precision, threads=self.threads, float_precision=floats)
        with runner:
            name = runner.input_names()[0]
            parts = [runner.infer({name: np.ascontiguousarray(chunk, dtype=np.float32)}) for chunk in batches(self.inputs, self.batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def judge(self, model: Any) -> Judgement:
        test = self.outputs(model)
        ref = dict(self.reference)
        test = dict(zip(ref, test.values())) if set(test) != set(ref) else test
        comps = compare_outputs(ref, test, self.tolerance)
        err = mean_relative_error(ref, test)
        cos = min(c.cosine for c in comps)
        top1s = [c.top1_raw for c in comps if c.top1_raw is not None]
        metrics: dict[str, Any] = {"cosine": cos, "max_rel": max(c.max_rel for c in comps), "mean_rel_error": err,
                                   "top1_agreement": min(top1s) if top1s else None}  # fmt: skip
        if self.goal is not None:
            first = next(iter(ref))
            labels = self.goal.labels
            ref_top1 = float((np.asarray(ref[first]).argmax(1) == labels).mean())
            test_top1 = float((np.asarray(test[first]).argmax(1) == labels).mean())
            metrics.update(top1_accuracy=test_top1, top1_reference=ref_top1)
            nonfinite = sum(c.nan + c.inf for c in comps)
            fails = task_failures(nonfinite, ref_top1, test_top1, metrics["top1_agreement"], self.goal.max_drop, self.goal.min_agreement)
            rule = f"task: accuracy drop <= {self.goal.max_drop:g} point(s), top-1 agreement >= {self.goal.min_agreement:g}"
            line = f"accuracy {test_top1:.2%} (fp32 {ref_top1:.2%}), agreement {metrics['top1_agreement']:.3f}, cosine {cos:.4f}"
        else:
            fails = self._preset_failures(ref, test, comps)
            rule = f"preset {self.tolerance.name}: {self.tolerance.describe()}"
            line = f"cosine {cos:.4f}" + (f", top-1 {min(c.top1 for c in comps if c.top1 is not None):.3f}" if top1s else "")
        line = ("PASS " if not fails else "FAIL ") + line + (f", mean error {err:.2e}" if np.isfinite(err) else ", non-finite")
        if fails:
            line += " (" + "; ".join(fails) + ")"
        return Judgement(passed=not fails, error=err, line=line, rule=rule, metrics=metrics)

    def _preset_failures(self, ref: dict[str, np.ndarray], test: dict[str, np.ndarray], comps: list[Any]) -> list[str]:
        """The preset's failures: of all inputs at once, or of each set of :attr:`set_size` (``set 2: ...``)."""
        k, n = self.set_size, len(self.inputs)
        if not k or n <= k:
            return [f for c in comps for f in c.failures]
        out = []
        for i, lo in enumerate(range(0, n, k)):
            part = compare_outputs({a: v[lo : lo + k] for a, v in ref.items()}, {a: v[lo : lo + k] for a, v in test.items()}, self.tolerance)
            out += [f"set {i + 1}: {f}" for c in part for f in c.failures]
        return out


# int8: keeping layers in float by graph surgery ---------------------------------------------------------------------


def layer_candidates(qmodel: Any) -> list[str]:
    """Names of the layers of a QDQ model that run in int8 (a :data:`LAYER_OPS` node reading a DequantizeLinear)."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    out = []
    for n in qmodel.graph.node:
        if n.op_type in LAYER_OPS and n.name and any((producer.get(i) is not None and producer[i].op_type == "DequantizeLinear") for i in n.input):
            out.append(n.name)
    return out


def runs_in_float(model: Any) -> list[str]:
    """The :data:`LAYER_OPS` nodes of a QDQ model that ONNX Runtime runs in float: a layer runs in int8 only when every
    input comes from a DequantizeLinear and its output goes to one QuantizeLinear alone (or out of the graph). A
    layer kept in float reads the float output of the layer before it, so that layer too may lose its int8 form."""
    readers = consumers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    out = []
    for n in model.graph.node:
        if n.op_type not in LAYER_OPS or not n.name:
            continue
        ins_q = all(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input[:2] if i)
        rs = readers.get(n.output[0], [])
        out_q = (len(rs) == 1 and rs[0].op_type == "QuantizeLinear") or (not rs and n.output[0] in outputs)
        if not (ins_q and out_q):
            out.append(n.name)
    return out


def layer_costs(model: Any) -> dict[str, int]:
    """Multiply-adds per image of each :data:`LAYER_OPS` node of ``model`` (fp32 or QDQ): what keeping it in float
    costs, in proportion. A shape ONNX cannot infer counts the weights alone; a node without weights counts 0."""
    import onnx  # lazy: onnx is heavy and only the search needs shape inference

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is best effort: costs then count weights only
        inferred = model
    g = inferred.graph
    dims = {t.name: list(t.dims) for t in g.initializer}
    for v in list(g.value_info) + list(g.output) + list(g.input):
        shape = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if shape and all(d > 0 for d in shape[1:]):
            dims.setdefault(v.name, shape)
    producer = {o: n for n in g.node for o in n.output}

    def weight_shape(name: str) -> list[int] | None:
        node = producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear":  # a QDQ weight: the quantized initializer's shape
            name = node.input[0]
        return dims.get(name) if name in {t.name for t in g.initializer} else None

    costs: dict[str, int] = {}
    for n in g.node:
        if n.op_type not in LAYER_OPS or not n.name:
            continue
        w = next((s for s in (weight_shape(i) for i in n.input[1:2] or n.input[:1]) if s), None)
        if w is None:
            costs[n.name] = 0
            continue
        out = dims.get(n.output[0]) if n.op_type == "Conv" else dims.get(n.input[0]) if n.op_type == "ConvTranspose" else None
        spatial = int(np.prod(out[2:])) if out and len(out) > 2 and all(d > 0 for d in out[2:]) else 1
        costs[n.name] = int(np.prod(w)) * spatial
    return costs


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if scale.ndim == 1 and q.ndim > 0:
        shape[axis % q.ndim] = -1
    s = scale.astype(np.float32).reshape(shape if scale.ndim == 1 else scale.shape)
    z = (zero.astype(np.float32).reshape(shape if zero.ndim == 1 else zero.shape)) if zero is not None else np.float32(0)
    return ((q.astype(np.float32) - z) * s).astype(np.float32)


def keep_float(qmodel: Any, names: Sequence[str], fp32: Any = None, constant_weights: bool = True) -> Any:
    """A copy of QDQ model ``qmodel`` with the layers ``names`` computing in float (see the module's docstring).

    ``fp32``: the float model ``qmodel`` was quantized from. A layer found there by name reads exactly the tensors
    it reads in fp32 (the quantizer may have folded a Relu into a QuantizeLinear: those nodes are put back) and its
    own fp32 weights. A layer not found there computes in float on its dequantized inputs and weights. Given a model
    an earlier ``keep_float`` made, it adds ``names`` to that model's set (reusing the float tensors it made).
    ``constant_weights``: the layers carried into float read their weights as float constants (ONNX Runtime's
    form); False keeps them behind their DequantizeLinear (OpenVINO's: it runs such a layer in int8 with a float
    output, where ONNX Runtime computes it in float).
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(qmodel)
    g = m.graph
    wanted = set(names)
    fp = _FloatSource(fp32, g)
    for node in g.node:
        if node.name not in wanted:
            continue
        twin = fp.nodes.get(node.name)
        if twin is not None and twin.op_type == node.op_type and len(twin.input) == len(node.input):
            for i, t in enumerate(twin.input):
                got = fp.provide(t) if t else None
                if got is not None:
                    node.input[i] = got
                    continue
                _dequantized_input(g, node, i, fp)
        else:
            for i in range(len(node.input)):
                _dequantized_input(g, node, i, fp)
    g.node.extend(fp.new_nodes)
    toposort_nodes(g)
    _drop_dead(g)
    if wanted and constant_weights:
        _constant_float_weights(m, fp)
    g.initializer.extend(fp.new_inits)
    _drop_dead(g)
    return m


def _constant_float_weights(m: Any, fp: _FloatSource) -> None:
    """Every layer of ``m`` that runs in float (:func:`runs_in_float`) reads its weights and bias as dequantized
    float constants rather than through a DequantizeLinear."""
    float_layers = set(runs_in_float(m))
    for node in m.graph.node:
        if node.name in float_layers:
            for i in range(1, len(node.input)):
                if node.input[i]:
                    _dequantized_input(m.graph, node, i, fp)


class _FloatSource:
    """Tensors of the fp32 model, made available in the quantized graph ``g`` under their own (or a new) name."""

    #: The longest chain of fp32 nodes copied to rebuild a float input from the layers before it.
    MAX_COPIED = 32

    def __init__(self, fp32: Any, g: Any) -> None:
        from onnx import numpy_helper

        self.nodes = {n.name: n for n in fp32.graph.node if n.name} if fp32 is not None else {}
        self.producer = {o: n for n in fp32.graph.node for o in n.output} if fp32 is not None else {}
        self.inits = {t.name: t for t in fp32.graph.initializer} if fp32 is not None else {}
        self.graph_inputs = {i.name for i in g.input}
        self.q_nodes = {n.name: n for n in g.node if n.name}
        self.q_inits = {t.name: t for t in g.initializer}
        self.q_producer = {o: n for n in g.node for o in n.output}
        self.new_nodes: list[Any] = []
        self.new_inits: list[Any] = []
        self.renamed: dict[str, str] = {}
        self.to_array = numpy_helper.to_array
        self.from_array = numpy_helper.from_array

    def provide(self, t: str, depth: int = 0) -> str | None:
        """The name under which fp32 tensor ``t`` exists in the quantized graph (copying what it takes), or None.

        A float layer reads its inputs as fp32 computes them from the layers before it: a layer's output is found
        through the node that makes it (same name and operator in both graphs: the quantizer keeps node names but
        may rename tensors, e.g. a Conv whose Relu it folded into the QuantizeLinear writes the Relu's output name);
        what lies between (Relu, pooling, Concat, Add: quantized in between, or folded away) is copied from the fp32
        graph under new output names.
        """
        import onnx

        if t in self.renamed:
            return self.renamed[t]
        if f"{t}_float" in self.q_inits or f"{t}_float" in self.q_producer:  # made by an earlier keep_float: the same values
            self.renamed[t] = f"{t}_float"
            return self.renamed[t]
        if t in self.inits:  # a weight: the fp32 values under a new name (the quantized graph may use the old one)
            init = onnx.TensorProto()
            init.CopyFrom(self.inits[t])
            init.name = self.renamed[t] = f"{t}_float"
            self.new_inits.append(init)
            return init.name
        p = self.producer.get(t)
        if p is None:
            return t if t in self.graph_inputs else None
        twin = self.q_nodes.get(p.name) if p.name else None
        if p.op_type in LAYER_OPS:  # a layer's output is float in the quantized graph too (before its QuantizeLinear)
            ok = twin is not None and twin.op_type == p.op_type and len(twin.output) == len(p.output)
            return str(twin.output[list(p.output).index(t)]) if ok else None
        if depth >= self.MAX_COPIED:
            return None
        ins = [self.provide(i, depth + 1) if i else "" for i in p.input]
        if any(x is None for x in ins):
            return None
        copy = onnx.NodeProto()
        copy.CopyFrom(p)
        copy.name = f"{p.name or p.op_type}_float"
        del copy.input[:]
        copy.input.extend(ins)  # type: ignore[arg-type]
        del copy.output[:]
        for o in p.output:
            self.renamed[o] = f"{o}_float" if o else ""
            copy.output.append(self.renamed[o])
        self.new_nodes.append(copy)
        return self.renamed[t]

    def dequantized(self, d: Any) -> str | None:
        """A float initializer holding the values DequantizeLinear ``d`` makes of a quantized initializer."""
        src = d.input[0]
        if src not in self.q_inits:
            return None
        if src not in self.renamed and f"{src}_float" in self.q_inits:  # made by an earlier keep_float
            self.renamed[src] = f"{src}_float"
        if src not in self.renamed:
            axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
            zero = self.to_array(self.q_inits[d.input[2]]) if len(d.input) > 2 and d.input[2] in self.q_inits else None
            arr = _dequantize(self.to_array(self.q_inits[src]), self.to_array(self.q_inits[d.input[1]]), zero, axis)
            self.renamed[src] = f"{src}_float"
            self.new_inits.append(self.from_array(arr, self.renamed[src]))
        return self.renamed[src]


def _dequantized_input(g: Any, node: Any, i: int, fp: _FloatSource) -> None:
    """Input ``i`` of ``node`` in float without the fp32 model: a weight dequantized; an activation stays the
    DequantizeLinear's output (float compute on the quantized values)."""
    d = fp.q_producer.get(node.input[i])
    if d is not None and d.op_type == "DequantizeLinear":
        name = fp.dequantized(d)
        if name is not None:
            node.input[i] = name


def _drop_dead(g: Any) -> None:
    """Remove nodes none of whose outputs is read (to a fixed point), then initializers nothing reads."""
    outputs = {o.name for o in g.output}
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [k for k, n in enumerate(g.node) if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for k in reversed(dead):
            del g.node[k]
    used = {i for n in g.node for i in n.input} | outputs
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def module_label(model: Any, node_name: str) -> str:
    """The torch module a node came from, as far as the file tells: the exporter's scope, else its weight's name."""
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None:
        return node_name
    for i in node.input:  # the exporters name weights after their module: conv2.conv.weight
        for suffix in (".weight_DequantizeLinear_Output", ".weight_quantized", ".weight"):
            if i.endswith(suffix):
                return i[: -len(suffix)]
    if node_name.startswith("/") and node_name.count("/") >= 2:
        return node_name.strip("/").rsplit("/", 1)[0].split("/")[-1]
    return node_name


# the search ------------------------------------------------------------------------------------------------------


@dataclass
class FallbackResult:
    """What the search found: the layers kept in float (by ONNX node and torch module), its judgement, its cost."""

    model: Any
    float_nodes: list[str]
    layers: list[dict[str, Any]]
    judgement: Judgement
    whole: Judgement
    evaluations: int
    budget: int
    seconds: float
    ranked: int
    candidates: int
    #: The share of the candidate layers' multiply-adds computed in float (what the fallback costs in work): the
    #: layers kept in float and those computed in float with them (:attr:`also_float`).
    float_share: float = 0.0
    #: Layers not chosen that run in float all the same: their output now feeds only float layers, so ONNX Runtime
    #: no longer fuses them into an int8 kernel (node, module, share of the work).
    also_float: list[dict[str, Any]] = field(default_factory=list)
    #: The same set kept in float with every int8 weight left behind its DequantizeLinear (``keep_float``'s
    #: ``constant_weights=False``), for a runtime that runs those layers in int8 (OpenVINO); None when not made.
    qdq_model: Any = None
    #: For that runtime, the passing set of least work *it* computes in float (the chosen layers alone count there,
    #: not those ONNX Runtime carries along), from every set judged: often the one above; with its rows and judgement.
    twin_nodes: list[str] = field(default_factory=list)
    twin_layers: list[dict[str, Any]] = field(default_factory=list)
    twin_judgement: Judgement | None = None
    #: Every ranked layer by its gain alone in float, most first (what :func:`widen` adds from).
    ranking: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.judgement.passed

    def summary(self) -> str:
        if not self.float_nodes:
            return f"no layer needs float: {self.judgement.line}"
        names = ", ".join(f"{x['module']} ({x['node']})" for x in self.layers[:8]) + (" ..." if len(self.layers) > 8 else "")
        also = f" (and {', '.join(x['module'] for x in self.also_float)} computed in float with them)" if self.also_float else ""
        return (f"{len(self.float_nodes)} of {self.candidates} layer(s) kept in float ({100 * self.float_share:.1f}% of the "
                f"layers' multiply-adds): {names}{also}; {self.judgement.line} "
                f"[{self.evaluations} evaluations of a budget of {self.budget}, {self.seconds:.0f} s]")  # fmt: skip

    def record(self) -> dict[str, Any]:
        """What goes into the file's metadata and the reports."""
        return {"float_nodes": self.float_nodes, "layers": self.layers, "judgement": self.judgement.to_dict(),
                "whole_model": self.whole.to_dict(), "evaluations": self.evaluations, "budget": self.budget,
                "candidates": self.candidates, "ranked": self.ranked, "seconds": round(self.seconds, 1),
                "float_share": round(self.float_share, 4), "also_float": self.also_float, "ranking": self.ranking}  # fmt: skip


class _Memo:
    """Judgements by the set of float layers, kept in a state file (atomic writes) so a killed search resumes."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path = path
        self.key = key
        self.data: dict[str, Any] = {}
        self.fresh = 0
        if path is not None and path.is_file():
            try:
                saved = json.loads(read_regular(path, limit=64 << 20))
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and saved.get("format") == STATE_FORMAT and saved.get("key") == key:
                self.data = dict(saved.get("judgements") or {})

    def get(self, nodes: Sequence[str]) -> Judgement | None:
        d = self.data.get("|".join(sorted(nodes)))
        return Judgement(**d) if isinstance(d, dict) else None

    def put(self, nodes: Sequence[str], j: Judgement) -> None:
        self.data["|".join(sorted(nodes))] = j.to_dict()
        self.fresh += 1
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"format": STATE_FORMAT, "key": self.key, "judgements": self.data}), force=True)


def search(
    qmodel: Any,
    oracle: Oracle,
    *,
    fp32: Any = None,
    build: Callable[[Sequence[str]], Any] | None = None,
    candidates: Sequence[str] | None = None,
    budget: int | None = None,
    state: Path | None = None,
    state_key: str = "",
    say: Callable[[str], None] | None = None,
    constant_weights: bool = True,
    whole_enough: Oracle | None = None,
) -> FallbackResult:
    """Find a small set of layers of ``qmodel`` to keep in float so that ``oracle`` passes it.

    Args:
        qmodel: The lower-precision model (a QDQ int8 model when ``build`` is None).
        oracle: How a model is judged.
        fp32: The float model ``qmodel`` was made from (its layers' own weights and inputs, see :func:`keep_float`).
        build: ``build(nodes)`` -> the model with ``nodes`` in float (default: :func:`keep_float` of ``qmodel``).
        candidates: Layer names to consider (default: :func:`layer_candidates`).
        budget: Most evaluations (default: the layers ranked + :data:`EXTRA_EVALUATIONS`).
        state: A JSON file of the judgements so far (a killed search resumes from it).
        state_key: What the judgements belong to (a digest of the model and the oracle's inputs): a state file of
            another key is ignored.
        say: Progress lines.
        whole_enough: Where ``oracle`` is stricter than the verdict the model will get (deploy's search keeps part
            of the budget in hand), the verdict's own judge: a whole model it passes needs no layer in float.

    Raises:
        BadInputError: The model has no layer to keep in float.
    """
    t0 = time.perf_counter()
    say = say or (lambda _line: None)
    int8 = build is None
    build = build or (lambda nodes: keep_float(qmodel, nodes, fp32, constant_weights))
    cands = list(candidates) if candidates is not None else layer_candidates(qmodel)
    if not cands:
        raise BadInputError("the model has no lower-precision layer to keep in float", hint="give the int8 (QDQ) or fp16 file deploy or quantize made")
    ranked_cands = cands[:MAX_RANKED]
    budget = int(budget) if budget is not None else len(ranked_cands) + EXTRA_EVALUATIONS
    memo = _Memo(state, state_key)
    count = {"n": 0}

    def judge(nodes: Sequence[str]) -> Judgement:
        hit = memo.get(nodes)
        if hit is None:
            count["n"] += 1
            hit = oracle.judge(build(list(nodes)))
            memo.put(nodes, hit)
        return hit

    whole = judge([])
    say(f"fallback: the whole model: {whole.line}")
    if not whole.passed and whole_enough is not None:
        plain = whole_enough.judge(qmodel)
        if plain.passed:
            say(f"fallback: the whole model passes the verdict's own judge ({plain.line}): no layer kept in float")
            whole = plain
    if whole.passed:
        return FallbackResult(qmodel, [], [], whole, whole, memo.fresh, budget, time.perf_counter() - t0, 0, len(cands))
    everything = judge(list(cands))
    if not everything.passed:
        say(f"fallback: even with every layer in float it fails ({everything.line}); no mixed model")
        return FallbackResult(build(list(cands)), list(cands), [], everything, whole, memo.fresh, budget, time.perf_counter() - t0, 0, len(cands), 1.0)
    costs = layer_costs(fp32 if fp32 is not None else qmodel)
    carried: dict[tuple[str, ...], list[str]] = {}

    def in_float(nodes: Sequence[str]) -> list[str]:  # what runs in float: the set, and for int8 the layers it carries along
        key = tuple(sorted(nodes))
        if key not in carried:
            carried[key] = sorted(set(key) | (set(runs_in_float(build(list(key)))) & set(cands) if int8 else set()))
        return carried[key]

    def cost(nodes: Sequence[str]) -> int:
        return sum(costs.get(n, 0) for n in nodes)

    def work(nodes: Sequence[str]) -> tuple[int, int]:  # what ONNX Runtime computes in float: the set and what it carries
        return cost(in_float(nodes)), len(nodes)

    gains = _rank(ranked_cands, judge, whole, say, budget)
    order = [n for n, _ in sorted(gains.items(), key=lambda kv: -kv[1])] + [n for n in cands if n not in gains]
    chosen = _grow_and_bisect(order, judge, say)
    thrifty = thrifty_order(gains, costs, cands)
    if set(thrifty[: len(chosen)]) != set(chosen) and memo.fresh < budget:  # the same gain for less work: each layer's gain per multiply-add
        cheap = _grow_and_bisect(thrifty, judge, say, "the layers of most gain per multiply-add")
        if work(cheap) < work(chosen):
            chosen = cheap
    chosen = _prune(chosen, gains, costs, judge, say, lambda: memo.fresh < budget)
    chosen = _cheapest_passing(memo, chosen, work, set(cands), say)
    final = judge(chosen)
    total = cost(cands) or 1

    def rows(nodes: Sequence[str]) -> list[dict[str, Any]]:
        return [{"node": n, "module": module_label(qmodel, n), "gain": gains.get(n), "alone": judge([n]).line if n in gains else None,
                 "share": round(costs.get(n, 0) / total, 4)} for n in nodes]  # fmt: skip

    also = [{"node": n, "module": module_label(qmodel, n), "share": round(costs.get(n, 0) / total, 4)} for n in in_float(chosen) if n not in chosen]
    share = cost(in_float(chosen)) / total
    with_them = f" and {len(also)} more computed in float with them ({', '.join(x['module'] for x in also)})" if also else ""
    say(f"fallback: {len(chosen)} layer(s) in float{with_them} ({100 * share:.1f}% of the layers' multiply-adds): {final.line}")
    # a runtime that runs the carried-along layers in int8 (OpenVINO) pays for the chosen layers alone: its cheapest set
    twin = _cheapest_passing(memo, chosen, lambda nodes: (cost(nodes), len(nodes)), set(cands), lambda _s: None) if int8 else chosen
    if twin != chosen:
        say(f"fallback: where the layers carried along stay int8 (OpenVINO): {len(twin)} layer(s) in float "
            f"({100 * cost(twin) / total:.1f}% of the multiply-adds): {judge(twin).line}")  # fmt: skip
    ranking = [{"node": n, "gain": gains[n]} for n in order if n in gains]
    return FallbackResult(build(chosen), chosen, rows(chosen), final, whole, memo.fresh, budget, time.perf_counter() - t0, len(gains), len(cands),
                          share, also, twin_nodes=list(twin), twin_layers=rows(twin), twin_judgement=judge(twin), ranking=ranking)  # fmt: skip


def _rank(cands: list[str], judge: Callable[[Sequence[str]], Judgement], whole: Judgement, say: Callable[[str], None], budget: int) -> dict[str, float]:
    """Each layer's gain when it alone is kept in float (the whole model's error minus that model's)."""
    gains: dict[str, float] = {}
    step = max(1, len(cands) // 10)
    for k, n in enumerate(cands, 1):
        j = judge([n])
        gains[n] = (whole.error - j.error) if np.isfinite(whole.error) else -j.error
        if k % step == 0 or k == len(cands):
            say(f"fallback: ranked {k}/{len(cands)} layers (budget {budget} evaluations)")
    return gains


def thrifty_order(gains: dict[str, float], costs: dict[str, int], cands: Sequence[str]) -> list[str]:
    """The layers by gain per multiply-add (the greedy answer to "most error removed for the least float work", where
    the layers' errors add up), those that gained nothing alone last, by gain."""
    useful = [n for n in gains if gains[n] > 0]
    rest = sorted((n for n in gains if gains[n] <= 0), key=lambda n: -gains[n])
    return sorted(useful, key=lambda n: -gains[n] / max(costs.get(n, 0), 1)) + rest + [n for n in cands if n not in gains]


def _grow_and_bisect(order: list[str], judge: Callable[[Sequence[str]], Judgement], say: Callable[[str], None],
                     what: str = "the most sensitive layer(s)") -> list[str]:  # fmt: skip
    """The shortest prefix of ``order`` that passes (:func:`_first_passing`); the full list passes (the search judged
    it first, so judging it again is a memo hit)."""
    chosen = _first_passing(order, judge) or order
    say(f"fallback: {what}: the first {len(chosen)} in float pass")
    return chosen


def _cheapest_passing(memo: _Memo, chosen: list[str], work: Callable[[Sequence[str]], tuple[int, int]], cands: set[str],
                      say: Callable[[str], None]) -> list[str]:  # fmt: skip
    """The passing set of least ``work`` among every set judged so far (the ranking judged each layer alone: one that
    passes alone and costs less than the pruned set wins)."""
    best, least = list(chosen), work(chosen)
    for key, d in memo.data.items():
        nodes = [n for n in key.split("|") if n]
        if nodes and set(nodes) <= cands and isinstance(d, dict) and d.get("passed") and (w := work(nodes)) < least:
            best, least = nodes, w
    if best != chosen:
        say(f"fallback: a cheaper passing set was judged on the way: {len(best)} layer(s)")
    return best


def _prune(chosen: list[str], gains: dict[str, float], costs: dict[str, int], judge: Callable[[Sequence[str]], Judgement],
           say: Callable[[str], None], budget_left: Callable[[], bool]) -> list[str]:  # fmt: skip
    """Drop, costliest first (least useful first among equal costs), each layer the set still passes without."""
    out = list(chosen)
    for n in sorted(chosen, key=lambda x: (-costs.get(x, 0), gains.get(x, 0.0))):
        if len(out) <= 1 or not budget_left():
            break
        rest = [x for x in out if x != n]
        if judge(rest).passed:
            out = rest
    if len(out) < len(chosen):
        say(f"fallback: pruned to {len(out)} layer(s)")
    return out


# entry points ----------------------------------------------------------------------------------------------------


def onnx_oracle(fp32: Any, images: np.ndarray, input_name: str, precision: str, threads: int | None = None) -> Oracle:
    """An oracle whose reference is the fp32 ONNX model itself on ORT CPU (``quantize`` and ``convert``, which
    have no torch model at hand; deploy judges against eager torch through :func:`deployinc.verify.core.reference_run`)."""
    ref = Oracle(images, input_name, {}, preset(precision, "cpu"), threads=threads).outputs(fp32)
    return Oracle(images, input_name, ref, preset(precision, "cpu"), threads=threads)


def search_image_count(set_size: int) -> int:
    """How many images an int8 search judges: whole sets of ``set_size`` (verify's images), :data:`SEARCH_IMAGES` at least."""
    return set_size * -(-SEARCH_IMAGES // set_size)


def search_tolerance(tol: Tolerance) -> Tolerance:
    """What an int8 layer search holds its candidates to: ``tol`` with :data:`SEARCH_BUDGET_SHARE` of its cosine budget."""
    if tol.min_cosine is None:
        return tol
    cos = round(1.0 - SEARCH_BUDGET_SHARE * (1.0 - tol.min_cosine), 6)
    return replace(tol, min_cosine=cos, name=f"{tol.name} with {1 - SEARCH_BUDGET_SHARE:.0%} of its cosine budget in hand")


def int8_search_oracles(oracle: Oracle, set_size: int) -> tuple[Oracle, Oracle]:
    """From an int8 oracle over :func:`search_image_count` images (the first ``set_size`` of them verify's own): the
    search's judge (each set of ``set_size`` on its own, :func:`search_tolerance`) and the verdict's own (the first
    set by the preset itself: a whole model it passes needs no search)."""
    search = replace(oracle, set_size=set_size, tolerance=search_tolerance(oracle.tolerance))
    plain = replace(oracle, inputs=oracle.inputs[:set_size], set_size=None, reference={k: v[:set_size] for k, v in oracle.reference.items()})
    return search, plain


def check_fallback(value: str, precision: str, model: Any) -> None:
    """Refuse an unknown ``--fallback`` value, or a fallback asked of a file that is not fp32 (its layers are already
    lower precision: the search starts from the fp32 model)."""
    if value not in FALLBACK_CHOICES:
        raise BadInputError(f"unknown --fallback value {value!r}", hint=f"use one of {', '.join(FALLBACK_CHOICES)}")
    found, _ = detect_precision(model)
    if value == "auto" and found != FP32:
        raise BadInputError(f"--fallback auto keeps layers of an fp32 model in float, and this file is already {found}",
                            hint=f"give the fp32 export; {precision} and the layers kept in float are made from it")  # fmt: skip


def stamp(model: Any, key: str, fallback: dict[str, Any]) -> None:
    """Record the fallback (a :meth:`FallbackResult.record`) in the file's metadata: ``deployinc.<key>`` (``int8``
    or ``fp16``) gains ``fallback``."""
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        record = json.loads(meta.get(f"deployinc.{key}", "{}"))
    except ValueError:
        record = {}
    record = record if isinstance(record, dict) else {}
    record["fallback"] = {k: v for k, v in fallback.items() if k not in ("whole_model", "ranking")}
    meta[f"deployinc.{key}"] = json.dumps(record)
    del model.metadata_props[:]
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v


def int8_with_fallback(
    fp32_path: str | Path, images: np.ndarray, oracle: Oracle, *, method: str = "percentile", target: str = "cpu",
    recipe: Any = None, spec: Any = None, data_source: dict[str, Any] | None = None, state: Path | None = None,
    state_key: str = "", say: Callable[[str], None] | None = None, weight_rounding: str = "gptq", twin: bool = False,
    whole_enough: Oracle | None = None,
) -> tuple[Any, FallbackResult]:  # fmt: skip
    """Quantize ``fp32_path`` (:func:`deployinc.precision.int8.quantize_int8`), then keep in float the fewest layers
    the oracle needs (:func:`search`). Returns the int8 result (its model the mixed one, stamped) and the search.

    For ``target="cpu"`` (ONNX Runtime's CPU provider) the layers carried into float read constant float weights
    (:func:`keep_float`); for ``tensorrt``, which like OpenVINO runs such a layer in int8, they keep their
    DequantizeLinear. ``twin``: also make :attr:`FallbackResult.qdq_model`, the ``cpu`` file's form for OpenVINO,
    with its own set (:attr:`FallbackResult.twin_nodes`: nothing is carried into float there, so the set of least
    work differs where ONNX Runtime would carry costly layers along), stamped with it.
    """
    res = quantize_int8(fp32_path, images, method=method, target=target, recipe=recipe, spec=spec, data_source=data_source,
                        weight_rounding=weight_rounding)  # fmt: skip
    fp32 = load_onnx(fp32_path).model
    constant = target == "cpu"
    found = search(res.model, oracle, fp32=fp32, state=state, state_key=state_key, say=say, constant_weights=constant,
                   whole_enough=whole_enough)  # fmt: skip
    if found.float_nodes and found.passed:
        meta = list(res.model.metadata_props)
        if twin and constant:
            found.qdq_model = keep_float(res.model, found.twin_nodes or found.float_nodes, fp32, constant_weights=False)
            _stamp_with(found.qdq_model, meta, twin_record(found))
        res.model = found.model
        _stamp_with(res.model, meta, found.record())
        res.report["fallback"] = found.record()
    return res, found


def twin_record(found: FallbackResult) -> dict[str, Any]:
    """The fallback record of :attr:`FallbackResult.qdq_model`: its own set (:attr:`FallbackResult.twin_nodes`), the
    chosen layers alone in float."""
    rec = found.record()
    if found.twin_nodes and found.twin_judgement is not None:
        rec.update(float_nodes=list(found.twin_nodes), layers=found.twin_layers, judgement=found.twin_judgement.to_dict())
    # the search judges every set on the ONNX Runtime form; the twin file itself is verified on its runtime by deploy
    rec["judged_on"] = "the ONNX Runtime form of this set (carried-along layers in float from their dequantized int8 weights)"
    return chosen_only(rec)


def chosen_only(record: dict[str, Any]) -> dict[str, Any]:
    """A fallback record (:meth:`FallbackResult.record`) as a runtime that runs the carried-along layers in int8
    (OpenVINO) sees it: only the chosen layers in float, and their share of the work."""
    share = sum(float(x.get("share") or 0.0) for x in record.get("layers") or [])
    return {**record, "also_float": [], "float_share": round(share, 4)}


#: Most layers :func:`widen` adds to a searched set (1, 2, 4, 8 more in each of its two orders, then bisection).
WIDEN_MOST = 8


@dataclass
class Widened:
    """A searched set widened to pass in the form it ships in (:func:`widen`)."""

    model: Any
    added: list[str]
    judgement: Judgement
    base: Judgement
    evaluations: int
    seconds: float

    @property
    def passed(self) -> bool:
        return self.judgement.passed


def widen(qmodel: Any, nodes: Sequence[str], ranking: Sequence[dict[str, Any]], oracle: Oracle, *, fp32: Any = None,
          state: Path | None = None, state_key: str = "", say: Callable[[str], None] | None = None, most: int = WIDEN_MOST) -> Widened:  # fmt: skip
    """``qmodel``, a mixed QDQ file whose layers ``nodes`` compute in float (:func:`keep_float`'s OpenVINO form), with
    the fewest more layers in float that ``oracle`` passes, taken from the search's ``ranking`` (each layer's gain
    alone in float: :attr:`FallbackResult.ranking`).

    The set was searched in one form (ONNX Runtime's, its float layers in fp32); a file shipped in another (OpenVINO
    with its float layers in bf16) adds that form's own error and may spend the margin the search kept. Judged: the
    file itself; then, in two orders as the search tries them (by gain, and by gain per multiply-add), 1, 2, 4... up
    to ``most`` more layers until one passes, and bisection below it; the passing addition of fewer multiply-adds
    wins (not passed, no model, when none does). A killed run resumes from ``state`` (judgements under ``state_key``).
    """
    t0 = time.perf_counter()
    say = say or (lambda _line: None)
    memo = _Memo(state, state_key)

    def judge(extra: Sequence[str]) -> Judgement:
        hit = memo.get(extra)
        if hit is None:
            hit = oracle.judge(keep_float(qmodel, list(extra), fp32, constant_weights=False))
            memo.put(extra, hit)
        return hit

    def done(model: Any, added: list[str], j: Judgement) -> Widened:
        return Widened(model, added, j, base, memo.fresh, time.perf_counter() - t0)

    base = judge([])
    say(f"widen: the file itself: {base.line}")
    if base.passed:
        return done(qmodel, [], base)
    gains = {r["node"]: float(r.get("gain") or 0.0) for r in ranking if r.get("node") and r["node"] not in set(nodes)}
    costs = layer_costs(fp32 if fp32 is not None else qmodel)
    orders = [list(gains)[: max(0, most)], thrifty_order(gains, costs, list(gains))[: max(0, most)]]
    found = [got for k, order in enumerate(orders) if order and order not in orders[:k] and (got := _first_passing(order, judge)) is not None]
    if not found:
        tried = orders[0]
        return done(None, tried, judge(tried) if tried else base)
    added = min(found, key=lambda a: (sum(costs.get(n, 0) for n in a), len(a)))
    say(f"widen: with {len(added)} more layer(s) in float: {judge(added).line}")
    return done(keep_float(qmodel, added, fp32, constant_weights=False), added, judge(added))


def _first_passing(order: list[str], judge: Callable[[Sequence[str]], Judgement]) -> list[str] | None:
    """The shortest prefix of ``order`` that passes, found by doubling (1, 2, 4... up to all of it) and bisection
    below the first passing one; None when none does (a longer prefix may do worse, so none is assumed to pass)."""
    lo, hi = 0, 1
    while not judge(order[:hi]).passed:
        if hi >= len(order):
            return None
        lo, hi = hi, min(2 * hi, len(order))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if judge(order[:mid]).passed else (mid, hi)
    return order[:hi]


def _stamp_with(model: Any, meta: list[Any], fallback: dict[str, Any]) -> None:
    del model.metadata_props[:]
    model.metadata_props.extend(meta)
    stamp(model, INT8, fallback)


def fp16_with_fallback(
    fp32: Any, oracle: Oracle, *, state: Path | None = None, state_key: str = "", say: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> tuple[Any, FallbackResult]:  # fmt: skip
    """Convert ``fp32`` (a ``ModelProto``) to fp16 with fp32 I/O, keeping in fp32 the fewest layers the oracle needs.
    Returns the converted model (stamped with the fallback) and the search."""
    def build(nodes: Sequence[str]) -> Any:
        return convert_to_fp16(fp32, keep_io_types=True, keep_fp32_nodes=list(nodes), threads=threads).model

    cands = [n.name for n in fp32.graph.node if n.op_type in LAYER_OPS and n.name]
    whole = build([])
    found = search(whole, oracle, build=build, candidates=cands, state=state, state_key=state_key, say=say)
    if found.float_nodes and found.passed:
        stamp(found.model, FP16, found.record())
    return found.model, found
