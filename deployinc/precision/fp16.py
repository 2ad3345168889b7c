"""fp16 conversion for ONNX Runtime CUDA and TensorRT, with a report of the layers fp16 cannot represent.

The conversion itself is ONNX Runtime's ``onnxruntime.transformers.float16.convert_float_to_float16`` (shipped in the
onnxruntime wheel): float initializers and activations become float16, with Cast nodes at the boundaries of what
stays float32. deployinc keeps the model's inputs and outputs float32 unless asked (``keep_io_types``), and keeps
float32 the operators of ORT's default block list plus any the user names (``keep_fp32_ops``) and any nodes by name
(``keep_fp32_nodes``).

Why a report: float16's largest finite value is 65504. A layer whose float32 activations exceed it produces inf in
float16, and everything after it is garbage. :func:`overflow_report` runs the float32 model on ONNX Runtime's CPU
provider with every intermediate float tensor exposed as an output, over sample images, and names each node whose
output's largest magnitude exceeds 65504. Those layers can be kept in float32 (``keep_overflow_fp32``): the
producer of an overflowing tensor and every consumer of it stay float32, so the out-of-range values never pass
through a float16 Cast.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.fp16 import check_convertible, float16_graph, remove_cast_roundtrips  # noqa: F401 - remove_cast_roundtrips re-exported
from ..errors import CheckFailed
from ..subject.inputs import input_spec
from ._common import batches, cpu_session

FP16_MAX = 65504.0


@dataclass
class LayerRange:
    """The largest |value| a node's output took over the samples."""

    node: str
    op: str
    tensor: str
    max_abs: float
    finite: bool = True

    def line(self) -> str:
        v = f"{self.max_abs:.6g}" if self.finite else "non-finite"
        return f"{self.node} ({self.op}) output {self.tensor}: max |x| = {v}"


@dataclass
class OverflowReport:
    """Which layers leave the float16 range on the sample inputs.

    Attributes:
        samples: Number of sample images run.
        tensors_checked: Intermediate float32 tensors measured.
        tensors_unchecked: Node outputs without an inferred float32 type (not measured).
        overflowing: Layers whose output exceeds :data:`FP16_MAX` (largest first).
        nonfinite_fp32: Layers already producing inf/NaN in float32.
        largest: The ten largest activations, for context.
    """

    samples: int
    tensors_checked: int
    tensors_unchecked: int
    overflowing: list[LayerRange] = field(default_factory=list)
    nonfinite_fp32: list[LayerRange] = field(default_factory=list)
    largest: list[LayerRange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.overflowing and not self.nonfinite_fp32

    def layer_names(self) -> list[str]:
        return [r.node for r in self.overflowing + self.nonfinite_fp32]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _exposed(model: Any) -> tuple[Any, dict[str, tuple[str, str]], int]:
    """A copy of ``model`` whose float32 intermediate tensors are graph outputs; tensor -> (node, op); unchecked."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {vi.name: vi for vi in inferred.graph.value_info}
    for vi in list(inferred.graph.output):
        types.setdefault(vi.name, vi)
    m = copy.deepcopy(model)
    existing = {o.name for o in m.graph.output}
    producers: dict[str, tuple[str, str]] = {}
    unchecked = 0
    for i, node in enumerate(m.graph.node):
        for out in node.output:
            if not out:
                continue
            vi = types.get(out)
            if vi is None or vi.type.tensor_type.elem_type != TensorProto.FLOAT:
                if vi is None:
                    unchecked += 1
                continue
            producers[out] = (node.name or f"<node {i}>", node.op_type)
            if out not in existing:
                m.graph.output.append(vi)
                existing.add(out)
    return m, producers, unchecked


def activation_ranges(
    model: Any, images: np.ndarray, *, threads: int | None = None, batch: int = 4
) -> tuple[dict[str, float], dict[str, tuple[str, str]], int]:
    """Largest |value| of every float32 node output over ``images`` (N x C x H x W), on ORT's CPU provider.

    Returns:
        tensor -> max |x| (inf when non-finite values appeared), tensor -> (node, op), number of unchecked outputs.
    """
    spec = input_spec(model)
    exposed, producers, unchecked = _exposed(model)
    sess = cpu_session(exposed, threads=threads, optimization="basic")
    names = [o.name for o in sess.get_outputs()]
    if spec.static_batch is not None:
        batch = spec.static_batch
        if len(images) % batch:
            raise CheckFailed(
                f"{len(images)} sample images do not split into batches of the model's static batch {batch}",
                hint=f"use a multiple of {batch} images",
            )
    maxima: dict[str, float] = {}
    for chunk in batches(images.astype(np.float32, copy=False), batch):
        outs = sess.run(None, {spec.name: chunk})
        for name, arr in zip(names, outs):
            if name not in producers:
                continue
            a = np.asarray(arr)
            if a.size == 0:
                continue
            if not np.isfinite(a).all():
                m = float("inf")
            else:
                m = float(np.abs(a).max())
            maxima[name] = max(maxima.get(name, 0.0), m)
    return maxima, producers, unchecked


def overflow_report(model: Any, images: np.ndarray, *, threads: int | None = None, batch: int = 4) -> OverflowReport:
    """Name the layers whose float32 activations leave the float16 range on ``images``; see the module docstring."""
    maxima, producers, unchecked = activation_ranges(model, images, threads=threads, batch=batch)
    rows = [
        LayerRange(node=producers[t][0], op=producers[t][1], tensor=t, max_abs=m, finite=bool(np.isfinite(m)))
        for t, m in maxima.items()
    ]
    rows.sort(key=lambda r: -r.max_abs)
    return OverflowReport(
        samples=int(len(images)),
        tensors_checked=len(rows),
        tensors_unchecked=unchecked,
        overflowing=[r for r in rows if r.finite and r.max_abs > FP16_MAX],
        nonfinite_fp32=[r for r in rows if not r.finite],
        largest=rows[:10],
    )


def nodes_to_keep_for(model: Any, report: OverflowReport) -> list[str]:
    """Producers and consumers of every overflowing tensor: the nodes to keep float32 so no Cast overflows."""
    bad = {r.tensor for r in report.overflowing + report.nonfinite_fp32}
    keep = []
    for i, node in enumerate(model.graph.node):
        if bad.intersection(node.output) or bad.intersection(node.input):
            if not node.name:
                raise CheckFailed(
                    f"node {i} ({node.op_type}) has no name and cannot be kept in fp32 by name",
                    hint="give every node a name (re-export), or keep its operator type with --keep-fp32-op",
                )
            keep.append(node.name)
    return keep


@dataclass
class Fp16Result:
    """The converted model and what was decided."""

    model: Any
    keep_io_types: bool
    kept_fp32_ops: list[str]
    kept_fp32_nodes: list[str]
    overflow: OverflowReport | None = None
    parity: dict[str, float] | None = None


def parity_fp16(model32: Any, model16: Any, images: np.ndarray, *, threads: int | None = None) -> dict[str, float]:
    """fp32 vs fp16 model on ORT CPU over ``images``: max |diff|, max |ref|, min per-sample cosine, top-1 agreement.

    ORT's CPU provider runs float16 nodes without float16 kernels through inserted Casts, so these numbers measure
    the fp16 rounding of weights and activations, not a GPU's fp16 arithmetic.
    """
    spec = input_spec(model32)
    s32, s16 = cpu_session(model32, threads=threads), cpu_session(model16, threads=threads)
    in16 = s16.get_inputs()[0]
    b = spec.static_batch or 8
    ref, test = [], []
    for chunk in batches(images.astype(np.float32), b):
        ref.append(np.asarray(s32.run(None, {spec.name: chunk})[0], dtype=np.float64))
        x16 = chunk.astype(np.float16) if "float16" in in16.type else chunk
        test.append(np.asarray(s16.run(None, {in16.name: x16})[0], dtype=np.float64))
    r, t = np.concatenate(ref), np.concatenate(test)
    rf, tf = r.reshape(len(r), -1), t.reshape(len(t), -1)
    denom = np.linalg.norm(rf, axis=1) * np.linalg.norm(tf, axis=1)
    cos = np.where(denom > 0, (rf * tf).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return {
        "samples": float(len(r)),
        "max_abs": float(np.abs(r - t).max()),
        "max_abs_ref": float(np.abs(r).max()),
        "min_cosine": float(cos.min()),
        "top1_agreement": float((rf.argmax(axis=1) == tf.argmax(axis=1)).mean()) if rf.shape[1] > 1 else 1.0,
    }


def convert_to_fp16(
    model: Any,
    *,
    keep_io_types: bool = True,
    keep_fp32_ops: Sequence[str] = (),
    keep_fp32_nodes: Sequence[str] = (),
    images: np.ndarray | None = None,
    keep_overflow_fp32: bool = False,
    threads: int | None = None,
) -> Fp16Result:
    """Convert a float32 ``onnx.ModelProto`` to float16 (the input is not modified).

    Args:
        model: The float32 model.
        keep_io_types: Keep graph inputs and outputs float32 (Casts inside the model).
        keep_fp32_ops: Operator types to keep float32, on top of ORT's default block list.
        keep_fp32_nodes: Node names to keep float32.
        images: Sample inputs (N x C x H x W, normalised). With them, the overflow report runs first and the
            converted model is compared with the float32 one.
        keep_overflow_fp32: Keep the overflowing layers (and their consumers) float32 instead of failing.
        threads: ORT CPU threads for the report and the comparison.

    Raises:
        CheckFailed: Layers overflow float16 on the samples (named in the message) and ``keep_overflow_fp32`` is off;
            or the model has no float32 tensors to convert.
    """
    check_convertible(model, keep_fp32_nodes)
    nodes = list(dict.fromkeys(keep_fp32_nodes))
    report = None
    if images is not None:
        report = overflow_report(model, images, threads=threads)
        if not report.ok:
            bad = report.overflowing + report.nonfinite_fp32
            if not keep_overflow_fp32:
                shown = "; ".join(r.line() for r in bad[:8]) + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
                raise CheckFailed(
                    f"{len(bad)} layer(s) exceed the fp16 range (|x| > {FP16_MAX:g}) on {report.samples} sample "
                    f"image(s): {shown}",
                    hint="keep them in fp32 with --keep-overflow-fp32 (or --keep-fp32-node NAME), or fix the model's "
                    "scale (random weights without BatchNorm recalibration overflow)",
                )
            nodes.extend(n for n in nodes_to_keep_for(model, report) if n not in nodes)

    m16 = float16_graph(model, keep_io_types=keep_io_types, keep_fp32_ops=keep_fp32_ops, keep_fp32_nodes=nodes)
    result = Fp16Result(
        model=m16,
        keep_io_types=keep_io_types,
        kept_fp32_ops=[o for o in keep_fp32_ops],
        kept_fp32_nodes=nodes,
        overflow=report,
    )
    if images is not None:
        result.parity = parity_fp16(model, m16, images, threads=threads)
    return result
