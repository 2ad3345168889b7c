"""The reference's own float32 error: the same torch model run in float64 on the same inputs.

A fixed fp32 budget (``max_rel <= 1e-4``) sits below the float32 noise of deep networks: timm's inception_v4 with
random weights differs from its own float64 run by ~2e-4 of the logits' scale, so a correct export, whose error
against the exact answer is no larger than eager torch's, would fail. verify and export's quick check therefore
measure that floor and judge an fp32 backend against ``max(preset, FLOOR_MULTIPLE x floor)``; the report prints
both. Where float64 does not run (a model that builds float32 tensors inside ``forward``, an op without a double
kernel) or would take too long, the preset applies alone and the report says why.

fp16 and int8 presets are relative to the torch *fp32* reference (their own error is orders of magnitude above
the fp32 floor), so the floor does not change them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .metrics import Tolerance

#: An fp32 backend may differ from torch fp32 by this multiple of torch fp32's own distance from float64: two
#: independent float32 computations of the same function each carry about one floor of error.
FLOOR_MULTIPLE = 2.0
#: Seconds the float64 run may take; past this the floor comes from the samples done so far (at least one chunk).
FLOOR_BUDGET_S = 60.0

#: What each precision's preset is relative to, for the report.
RELATIVE_TO = {
    "fp32": "torch fp32 on the same inputs; max_rel budget max(preset, {k:g} x torch fp32's own error vs float64)",
    "fp16": "torch fp32 on the same inputs (fp16's 11-bit mantissa: ~1e-3 per op); the fp32 floor does not apply",
    "bf16": "torch fp32 on the same inputs (bf16's 8-bit mantissa); the fp32 floor does not apply",
    "int8": "torch fp32 on the same inputs, by agreement (cosine, top-1/top-5); no element budget",
}


@dataclass
class NoiseFloor:
    """torch float32 vs float64 on the inputs verify runs.

    Attributes:
        status: ``measured``, ``unsupported`` (float64 failed) or ``skipped`` (not asked / not a torch reference).
        max_rel: Per output: max |fp32 - fp64| / max |fp64|.
        max_abs: Per output: max |fp32 - fp64|.
        samples: Samples the float64 run covered.
        seconds: Time the float64 run took.
        reason: Why there is no floor (status other than ``measured``).
    """

    status: str
    max_rel: dict[str, float] = field(default_factory=dict)
    max_abs: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    reason: str | None = None
    multiple: float = FLOOR_MULTIPLE

    @property
    def worst_rel(self) -> float | None:
        return max(self.max_rel.values()) if self.max_rel else None

    def line(self) -> str:
        """``torch fp32 vs fp64: 2.1e-04 (8 samples, 3.2 s)`` or why it is missing."""
        if self.status != "measured" or self.worst_rel is None:
            return f"torch fp32 vs fp64: not measured ({self.reason}); the preset applies alone"
        return f"torch fp32 vs fp64: {self.worst_rel:.1e} ({self.samples} samples, {self.seconds:.1f} s)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "max_rel": self.max_rel,
            "max_abs": self.max_abs,
            "worst_rel": self.worst_rel,
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
            "multiple": self.multiple,
        }


def measure(
    module: Any,
    x: np.ndarray,
    ref_out: dict[str, np.ndarray],
    batch: int,
    budget_s: float = FLOOR_BUDGET_S,
) -> NoiseFloor:
    """Run a float64 copy of ``module`` on ``x`` and compare ``ref_out`` (its float32 outputs, in order) with it.

    ``module`` is not changed (a deep copy is converted). Never raises for the model's sake: a model that cannot
    run in float64 gives ``status="unsupported"`` with the reason.
    """
    import torch

    from .outputs import first_output

    t0 = time.perf_counter()
    names = list(ref_out)
    try:
        m64 = copy.deepcopy(module).double().eval()
    except Exception as exc:  # noqa: BLE001 - a module that cannot be copied or converted has no floor
        return NoiseFloor("unsupported", reason=f"the model cannot be converted to float64: {type(exc).__name__}")
    outs: list[np.ndarray] = []
    done = 0
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], max(1, batch)):
                y = first_output(m64(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float64))))
                if not isinstance(y, torch.Tensor):
                    return NoiseFloor("unsupported", reason=f"the float64 model returned {type(y).__name__}")
                outs.append(y.detach().cpu().numpy())
                done = i + y.shape[0]
                if time.perf_counter() - t0 > budget_s:
                    break
    except Exception as exc:  # noqa: BLE001 - ops without a double kernel, float32 tensors built in forward
        msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return NoiseFloor("unsupported", reason=f"float64 does not run: {msg}", seconds=time.perf_counter() - t0)
    finally:
        del m64
    y64 = np.concatenate(outs)
    ref32 = np.asarray(ref_out[names[0]])[:done].astype(np.float64)
    if y64.shape != ref32.shape:
        return NoiseFloor("unsupported", reason=f"float64 output shape {y64.shape} differs from float32 {ref32.shape}")
    ok = np.isfinite(y64) & np.isfinite(ref32)
    if not ok.any():
        return NoiseFloor("unsupported", reason="no finite outputs to compare")
    diff = float(np.abs(ref32 - y64)[ok].max())
    scale = float(np.abs(y64[ok]).max())
    rel = diff / scale if scale > 0 else 0.0
    note = None if done == x.shape[0] else f"{done} of {x.shape[0]} samples within the {budget_s:.0f} s budget"
    return NoiseFloor(
        "measured",
        max_rel={names[0]: rel},
        max_abs={names[0]: diff},
        samples=done,
        seconds=time.perf_counter() - t0,
        reason=note,
    )


def widen(tol: Tolerance, precision: str, floor: NoiseFloor | None) -> Tolerance:
    """The fp32 budget ``max(preset, multiple x floor)``; other precisions and a missing floor keep ``tol``."""
    if precision != "fp32" or floor is None or floor.status != "measured" or tol.max_rel is None:
        return tol
    worst = floor.worst_rel
    if worst is None or not np.isfinite(worst):
        return tol
    wide = floor.multiple * worst
    if wide <= tol.max_rel:
        return tol
    return replace(tol, max_rel=float(wide), name=f"{tol.name}+floor")


def budget_text(tol: Tolerance, base: Tolerance, floor: NoiseFloor | None) -> str:
    """``max(1e-04, 2 x floor) = 4.2e-04`` where the floor widened the budget, else the plain preset text."""
    if floor is None or floor.status != "measured" or floor.worst_rel is None or base.max_rel is None:
        return ""
    return f"budget max({base.max_rel:.0e}, {floor.multiple:g} x floor) = {tol.max_rel:.1e}"
