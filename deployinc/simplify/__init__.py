"""Simplify an exported ONNX graph (onnxsim by default, onnxslim on request) and prove it still computes the same.

The simplified graph runs on ONNX Runtime's CPU provider next to the unsimplified one on seeded natural images
at batch 1 and 2; if they differ beyond float32 noise, or the simplifier fails, the unsimplified graph is kept
and the report says why. Node counts by op type before and after are part of the report.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

from ..core.graph import INPUT_NAME, node_counts
from ..core.images import natural_images
from ..core.metrics import compare_outputs, one_line, preset
from ..errors import BackendUnavailable, BadInputError
from ..lazy import require
from ..runners.ort import OrtRunner
from ..core.precisions import FP32

SIMPLIFIERS = ("onnxsim", "onnxslim")


@dataclass
class SimplifyReport:
    """What the simplifier did to the graph."""

    simplifier: str
    kept: str  # "simplified" or "original"
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    check: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def applied(self) -> list[str]:
        return [self.simplifier] if self.kept == "simplified" else []

    def summary(self) -> str:
        nb, na = sum(self.before.values()), sum(self.after.values())
        changes = []
        for op in sorted(set(self.before) | set(self.after)):
            b, a = self.before.get(op, 0), self.after.get(op, 0)
            if a != b:
                changes.append(f"{op} {b}->{a}")
        s = f"simplify ({self.simplifier}): {nb} -> {na} nodes"
        if changes:
            s += " [" + ", ".join(changes) + "]"
        if self.kept != "simplified":
            s += f"; kept the unsimplified graph: {'; '.join(self.notes)}"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {
            "simplifier": self.simplifier,
            "kept": self.kept,
            "before": self.before,
            "after": self.after,
            "check": self.check,
            "notes": self.notes,
        }


def _run_simplifier(model: Any, simplifier: str) -> Any:
    if simplifier == "onnxsim":
        onnxsim = require("onnxsim", "--simplifier onnxsim")
        with contextlib.redirect_stdout(io.StringIO()):
            simplified, ok = onnxsim.simplify(model, check_n=0)
        if not ok:
            raise RuntimeError("onnxsim reported that its own check failed")
        return simplified
    onnxslim = require("onnxslim", "--simplifier onnxslim")
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(model)


def simplify(
    model: Any,
    simplifier: str = "onnxsim",
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    threads: int | None = None,
) -> tuple[Any, SimplifyReport]:
    """Simplify ``model``, re-check it against the original on ORT CPU, keep whichever is right.

    Returns:
        The model to use (simplified, or the original with the reason in the report) and the report.
    """
    import numpy as np

    if simplifier not in SIMPLIFIERS:
        raise BadInputError(f"unknown simplifier {simplifier!r}", hint=f"use one of {', '.join(SIMPLIFIERS)} or --no-simplify")
    report = SimplifyReport(simplifier=simplifier, kept="original", before=node_counts(model))
    try:
        simplified = _run_simplifier(model, simplifier)
    except Exception as exc:  # noqa: BLE001 - simplifiers fail in many ways; the original stays usable
        if isinstance(exc, BackendUnavailable):
            raise
        report.notes.append(f"{simplifier} failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
        report.after = report.before
        return model, report
    # Simplifiers drop node metadata (the dynamo exporter's module scopes, which verify's localisation maps to
    # torch modules): copy it back onto the node that produces the same output.
    scopes = {o: n.metadata_props for n in model.graph.node if n.metadata_props for o in n.output}
    for node in simplified.graph.node:
        if not node.metadata_props:
            src = next((scopes[o] for o in node.output if o in scopes), None)
            if src is not None:
                node.metadata_props.extend(src)
    # Simplifiers may drop model metadata and bump the IR version; keep what the original had.
    del simplified.metadata_props[:]
    simplified.metadata_props.extend(model.metadata_props)
    simplified.ir_version = min(simplified.ir_version, model.ir_version)
    report.after = node_counts(simplified)
    dims = [d for d in model.graph.input[0].type.tensor_type.shape.dim]
    dynamic = bool(dims) and not dims[0].HasField("dim_value")
    batches = (1, 2) if dynamic else (input_shape[0],)
    x = natural_images(sum(batches), input_shape[1:], seed=99)
    comparisons = []
    try:
        with OrtRunner(model.SerializeToString(), "cpu", threads=threads) as a, OrtRunner(
            simplified.SerializeToString(), "cpu", threads=threads
        ) as b:
            start = 0
            for n in batches:
                feed = {INPUT_NAME: np.ascontiguousarray(x[start : start + n])}
                start += n
                comparisons += compare_outputs(a.infer(feed), b.infer(feed), preset(FP32, "cpu"))
    except Exception as exc:  # noqa: BLE001 - a simplified graph ORT cannot run is a simplifier failure
        report.notes.append(f"the simplified graph does not run on ONNX Runtime: {str(exc).splitlines()[0][:200]}")
        return model, report
    report.check = one_line(comparisons)
    if not all(c.passed for c in comparisons):
        report.notes.append(f"the simplified graph differs from the original ({report.check})")
        return model, report
    report.kept = "simplified"
    return simplified, report
