"""The reference's own float32 error: the same torch model run in float64 on the same inputs.

A fixed fp32 budget (``max_rel <= 1e-4``) sits below the float32 noise of deep networks: timm's inception_v4 with
random weights differs from its own float64 run by ~2e-4 of the logits' scale, so a correct export, whose error
against the exact answer is no larger than eager torch's, would fail. verify and export's quick check therefore
measure that floor and judge an fp32 backend against ``max(preset, FLOOR_MULTIPLE x floor)``; the report prints
both. Where float64 does not run (a model that builds float32 tensors inside ``forward``, an op without a double
kernel) or would take too long, the preset applies alone and the report says why.

Comparing two float32 computations with each other adds their errors: a correct export whose logits are one floor
from the exact answer on one side, while torch's are one floor off on the other, is two floors (or a little more)
from torch fp32. So where an fp32 backend is over ``max(preset, FLOOR_MULTIPLE x floor)`` against torch fp32,
verify judges it once more against the float64 outputs this module keeps (:func:`judge_fp64`): it passes the
max_rel check when ``max|backend - y64| / max|y64| <= max(preset, FLOOR_MULTIPLE x floor)``, i.e. when it is as
close to the exact answer as torch's own float32 is, times the multiple. A real fault (a conv's weights x1.1) is
orders of magnitude past that either way.

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
from .outputs import first_output
from .precisions import FP32, TABLE

#: An fp32 backend may differ from torch fp32 by this multiple of torch fp32's own distance from float64: two
#: independent float32 computations of the same function each carry about one floor of error. Where it is over
#: that, it may still be this multiple of the floor from the float64 answer itself (:func:`judge_fp64`).
FLOOR_MULTIPLE = 2.0
#: Seconds the float64 run may take; past this the floor comes from the samples done so far (at least one chunk).
FLOOR_BUDGET_S = 60.0

#: What each precision's preset is relative to, for the report.
RELATIVE_TO = {p.name: p.relative_to for p in TABLE.values()}


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
        output: The output the floor was measured on (the first).
        y64: The float64 model's outputs for ``output`` on the first ``samples`` inputs (logits: small), kept so
            that a backend can be judged against the exact answer (:func:`judge_fp64`); not in :meth:`to_dict`.
    """

    status: str
    max_rel: dict[str, float] = field(default_factory=dict)
    max_abs: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    reason: str | None = None
    multiple: float = FLOOR_MULTIPLE
    output: str | None = None
    y64: np.ndarray | None = field(default=None, repr=False, compare=False)

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
        output=names[0],
        y64=y64,
    )


def widen(tol: Tolerance, precision: str, floor: NoiseFloor | None) -> Tolerance:
    """The fp32 budget ``max(preset, multiple x floor)``; other precisions and a missing floor keep ``tol``."""
    if precision != FP32 or floor is None or floor.status != "measured" or tol.max_rel is None:
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


@dataclass
class Fp64Check:
    """One fp32 backend output judged against the float64 answer instead of torch fp32.

    Attributes:
        err: ``max|test - y64| / max|y64|`` over the samples the float64 run covered (``inf`` for a non-finite test).
        budget: The max_rel budget it is held to: ``max(preset, multiple x floor)``, the same number as against
            torch fp32.
        floor: torch fp32's own error against float64 (the floor).
        multiple: The floor multiple.
        samples: Samples compared with float64.
        rest: Where the float64 run covered fewer samples than the backend ran, max_rel of the remaining samples
            against torch fp32 (they are judged as before: the budget applies to them unchanged).
        rest_samples: How many samples that is.
    """

    err: float
    budget: float
    floor: float
    multiple: float
    samples: int
    rest: float | None = None
    rest_samples: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.err <= self.budget) and (self.rest is None or bool(self.rest <= self.budget))

    def line(self, base: float | None = None) -> str:
        """``err vs fp64 1.31e-04 <= max(1e-04, 2 x floor 1.18e-04) = 2.36e-04`` (``>`` where it is over)."""
        op = "<=" if self.err <= self.budget else ">"
        bound = f"{self.multiple:g} x floor {self.floor:.2e}"
        bound = f"max({base:.0e}, {bound})" if base is not None else bound
        s = f"err vs fp64 {self.err:.2e} {op} {bound} = {self.budget:.2e} ({self.samples} samples)"
        if self.rest is not None:
            op = "<=" if self.rest <= self.budget else ">"
            s += f"; the other {self.rest_samples} samples vs torch fp32: max_rel {self.rest:.2e} {op} {self.budget:.2e}"
        return s


def _max_rel(test: np.ndarray, ref: np.ndarray, scale: float | None = None) -> float:
    """``max|test - ref| / scale`` over finite reference elements, the scale ``max|ref|`` unless given, as
    :func:`~deployinc.core.metrics.compare_arrays` does (``inf`` where the test has a non-finite value)."""
    t, r = test.astype(np.float64), ref.astype(np.float64)
    fin = np.isfinite(r)
    if not fin.any() or not np.isfinite(t).all():
        return float("inf")
    diff = float(np.abs(t - r)[fin].max())
    scale = float(np.abs(r[fin]).max()) if scale is None else scale
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def judge_fp64(test: np.ndarray, ref32: np.ndarray, floor: NoiseFloor | None, budget: float | None) -> Fp64Check | None:
    """Judge ``test`` (a backend's first output, samples in the reference's order) against the float64 outputs kept
    in ``floor``, with ``budget`` (the widened fp32 max_rel budget).

    ``ref32`` is torch fp32's output on the same samples: samples past the float64 run's (a run stopped by its time
    budget) are judged against it, with the same budget, as before. ``None`` where there is nothing to judge with
    (no measured floor, no float64 outputs, no budget, or shapes that do not line up).
    """
    if floor is None or floor.status != "measured" or floor.y64 is None or budget is None or floor.worst_rel is None:
        return None
    test, ref32, y64 = np.asarray(test), np.asarray(ref32), floor.y64
    n = min(test.shape[0], y64.shape[0]) if test.ndim and y64.ndim else 0
    if n == 0 or test.shape[1:] != y64.shape[1:] or ref32.shape != test.shape:
        return None
    check = Fp64Check(
        err=_max_rel(test[:n], y64[:n]), budget=float(budget), floor=float(floor.worst_rel), multiple=floor.multiple, samples=n
    )
    if test.shape[0] > n:
        fin = np.isfinite(ref32)  # the scale of all of torch fp32's output, as the comparison with it uses
        scale = float(np.abs(ref32[fin].astype(np.float64)).max()) if fin.any() else 0.0
        check.rest, check.rest_samples = _max_rel(test[n:], ref32[n:], scale), int(test.shape[0] - n)
    return check
