"""Parity metrics and tolerance presets: the one comparison code path of deployinc.

Every comparison (export's quick check, ``deployinc verify``, the simplifier's re-check, localisation) goes
through :func:`compare_arrays`. Metrics, per output:

- ``max_abs``: max |test - ref|.
- ``max_rel``: ``max_abs / max|ref|``, the error relative to the output's scale. Element-wise relative error is
  meaningless for logits near zero; the scale of the output is what a user compares an error with.
- ``cosine``: the smallest per-sample cosine similarity of the flattened outputs.
- ``top1``: fraction of samples whose arg-max agrees. ``top1`` in the verdict is *tie-aware*: a sample whose
  reference top-1 and the test's choice are closer in the reference than twice that sample's error (capped at the
  error the precision's budget allows one logit: ``max_rel`` x scale, or for int8 the RMS error its cosine budget
  allows, relative to the logits' spread, :func:`tie_cap`) is a tie that no implementation can be blamed for, and
  does not count as a disagreement. Raw agreement is reported too.
- ``top5``: fraction of samples whose reference top-1 class is among the test's top 5.
- ``nan`` / ``inf``: non-finite values in the test output (and the reference, reported apart).

Tolerances are presets per precision and backend (:data:`PRESETS`), printed with the verdict, overridable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..errors import BadInputError
from . import precisions as P
from .precisions import BF16, FP16, FP32, INT8


@dataclass(frozen=True)
class Tolerance:
    """Budgets a comparison must meet. ``None`` means the metric is reported but not judged."""

    max_rel: float | None = 1e-4
    max_abs: float | None = None
    min_cosine: float | None = 0.99999
    min_top1: float | None = 1.0
    min_top5: float | None = None
    name: str = "custom"

    def with_overrides(self, **kw: Any) -> Tolerance:
        """A copy with the given budgets replaced (``None`` values are ignored)."""
        valid = {f.name for f in fields(self)}
        unknown = set(kw) - valid
        if unknown:
            raise BadInputError(
                f"unknown tolerance key(s) {sorted(unknown)}", hint=f"known: {', '.join(sorted(valid - {'name'}))}"
            )
        changes = {k: v for k, v in kw.items() if v is not None}
        return replace(self, **changes, name=f"{self.name}+override") if changes else self

    def describe(self) -> str:
        """``max_rel<=1e-04 cos>=0.99999 top1>=1.00``."""
        parts = []
        if self.max_rel is not None:
            parts.append(f"max_rel<={_sci(self.max_rel)}")
        if self.max_abs is not None:
            parts.append(f"max_abs<={_sci(self.max_abs)}")
        if self.min_cosine is not None:
            parts.append(f"cos>={self.min_cosine:g}")
        if self.min_top1 is not None:
            parts.append(f"top1>={self.min_top1:.2f}")
        if self.min_top5 is not None:
            parts.append(f"top5>={self.min_top5:.2f}")
        return " ".join(parts)


def _sci(v: float) -> str:
    """``1e-04`` for a round budget, ``4.5e-04`` for a computed one (never rounded to a different number)."""
    short = f"{v:.0e}"
    return short if float(short) == v else f"{v:.1e}"


#: (precision, backend family) -> preset. Backend family: cpu, cuda, tensorrt.
PRESETS: dict[tuple[str, str], Tolerance] = {
    (FP32, "cpu"): Tolerance(max_rel=1e-4, min_cosine=0.99999, min_top1=1.0, min_top5=1.0, name="fp32-cpu"),
    # cuDNN may pick TF32 or Winograd kernels: allow a little more.
    (FP32, "cuda"): Tolerance(max_rel=1e-3, min_cosine=0.9999, min_top1=1.0, min_top5=1.0, name="fp32-cuda"),
    (FP32, "tensorrt"): Tolerance(max_rel=5e-3, min_cosine=0.9999, min_top1=0.99, min_top5=1.0, name="fp32-tensorrt"),
    # fp16 has an 11-bit mantissa: ~1e-3 per op, accumulating through depth.
    (FP16, "cpu"): Tolerance(max_rel=5e-2, min_cosine=0.999, min_top1=0.99, min_top5=0.99, name=FP16),
    (FP16, "cuda"): Tolerance(max_rel=5e-2, min_cosine=0.999, min_top1=0.99, min_top5=0.99, name=FP16),
    (FP16, "tensorrt"): Tolerance(max_rel=5e-2, min_cosine=0.999, min_top1=0.99, min_top5=0.99, name=FP16),
    # bf16 has an 8-bit mantissa (~4e-3 relative per op): judged on agreement, with a loose element budget (it also
    # sizes the top-1 ties). Measured with ort-openvino at bf16 against torch fp32 on seeded random-weight models
    # (64-256 natural-statistics images): max_rel 7e-3 (resnet18) to 9e-2 (mobilenet_v2, mobilenet_v3_large),
    # cosine >= 0.989 (inception_v3; torch's own bf16 autocast there: 0.987), top-5 >= 0.984, tie-aware top-1 1.0.
    # One conv's weights x1.1 in the first layer: max_rel 0.20-0.41, cosine 0.86-0.982 (fails); deeper down the
    # same fault departs by 6-14%, inside bf16's own error on mobilenet_v2: no fixed budget tells them apart.
    (BF16, "cpu"): Tolerance(max_rel=0.2, min_cosine=0.98, min_top1=0.95, min_top5=0.8, name=BF16),
    (BF16, "cuda"): Tolerance(max_rel=0.2, min_cosine=0.98, min_top1=0.95, min_top5=0.8, name=BF16),
    (BF16, "tensorrt"): Tolerance(max_rel=0.2, min_cosine=0.98, min_top1=0.95, min_top5=0.8, name=BF16),
    # int8 is judged on agreement, not on element error.
    (INT8, "cpu"): Tolerance(max_rel=None, min_cosine=0.99, min_top1=0.95, min_top5=0.99, name=INT8),
    (INT8, "cuda"): Tolerance(max_rel=None, min_cosine=0.99, min_top1=0.95, min_top5=0.99, name=INT8),
    (INT8, "tensorrt"): Tolerance(max_rel=None, min_cosine=0.99, min_top1=0.95, min_top5=0.99, name=INT8),
}

PRECISIONS = P.PRECISIONS
#: The largest reference gap (relative to the output's scale) that counts as a tie when the budget has neither
#: max_rel nor a cosine.
TIE_REL_DEFAULT = 0.01
#: A cosine budget looser than this sizes ties as this one does (int8's preset): ``--min-cosine 0.9`` loosens the
#: cosine check, not what counts as a tie.
TIE_MIN_COSINE = 0.99


def tie_cap(tolerance: Tolerance, scale: float, ref: np.ndarray) -> np.ndarray:
    """Per sample of ``ref`` (N x K logits), the largest error the budget allows one logit: what a top-1 tie is
    measured against.

    With ``max_rel``, that share of the output's ``scale``. Without it (int8), the error the cosine budget allows:
    a test ``r + e`` with ``e`` orthogonal to ``r`` has cosine ``1 / sqrt(1 + |e|^2 / |r|^2)``, so ``min_cosine``
    allows ``|e| = sqrt(1 / min_cosine^2 - 1) |r|``, spread over K logits an RMS error of that factor times the
    sample's logit spread (0.1425x its standard deviation at cosine 0.99; the spread, not the RMS, so that an offset
    shared by every logit, which changes no class, widens no tie; never wider than at :data:`TIE_MIN_COSINE`).
    Flat logits (random weights) have top-2 gaps of that order, and a model well inside its cosine budget swaps
    such near-ties at random; a trained model's gaps are far wider.
    """
    n = len(ref)
    if tolerance.max_rel is not None:
        return np.full(n, tolerance.max_rel * scale)
    c = tolerance.min_cosine
    if c is None or c <= 0.0:
        return np.full(n, TIE_REL_DEFAULT * scale)
    c = min(max(c, TIE_MIN_COSINE), 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.nan_to_num(ref.reshape(n, -1).std(axis=1), nan=0.0, posinf=0.0)
    return float(np.sqrt(1.0 / (c * c) - 1.0)) * spread


def preset(precision: str, backend: str = "cpu") -> Tolerance:
    """The tolerance preset for a precision on a backend (``ort-cpu`` / ``cpu`` / ``cuda`` / ``tensorrt``...)."""
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    fam = "tensorrt" if ("trt" in backend or "tensorrt" in backend) else ("cuda" if "cuda" in backend else "cpu")
    return PRESETS[(precision, fam)]


@dataclass
class OutputComparison:
    """Metrics of one output of one backend against the reference, and the verdict."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ref_scale: float
    cosine: float
    top1: float | None
    top1_raw: float | None
    top5: float | None
    nan: int
    inf: int
    ref_nonfinite: int
    tolerance: Tolerance
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["tolerance"] = asdict(self.tolerance)
        return d


def _cosines(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    r = ref.reshape(ref.shape[0], -1).astype(np.float64)
    t = test.reshape(test.shape[0], -1).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite outputs arrive here as huge values
        num = (r * t).sum(axis=1)
        # sqrt(|r|^2 |t|^2), not |r| |t|: identical outputs then give exactly 1.0 (sqrt(fl(a*a)) == a)
        den = np.sqrt((r * r).sum(axis=1) * (t * t).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(np.abs(r).sum(1) == np.abs(t).sum(1), 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def compare_arrays(name: str, ref: np.ndarray, test: np.ndarray, tolerance: Tolerance) -> OutputComparison:
    """Compare one output; classification metrics when the output is N x classes.

    Raises:
        BadInputError: The shapes differ.
    """
    ref = np.asarray(ref)
    test = np.asarray(test)
    if ref.shape != test.shape:
        raise BadInputError(
            f"output {name!r} has shape {tuple(test.shape)}, the reference {tuple(ref.shape)}",
            hint="the two models do not compute the same thing; check the model spec and input shape",
        )
    r64, t64 = ref.astype(np.float64), test.astype(np.float64)
    nan = int(np.isnan(t64).sum())
    inf = int(np.isinf(t64).sum())
    ref_bad = int((~np.isfinite(r64)).sum())
    finite = np.isfinite(r64) & np.isfinite(t64)
    diff = np.abs(t64 - r64)
    max_abs = float(diff[finite].max()) if finite.any() else float("inf")
    if nan or inf:
        max_abs = float("inf")
    scale = float(np.abs(r64[np.isfinite(r64)]).max()) if np.isfinite(r64).any() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    cos = float(_cosines(np.nan_to_num(r64), np.nan_to_num(t64)).min()) if ref.size and ref.ndim >= 1 else 1.0
    top1 = top1_raw = top5 = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        ra, ta = r64.argmax(1), t64.argmax(1)
        agree = ra == ta
        top1_raw = float(agree.mean())
        # A disagreement is a tie when the reference itself barely separates the two classes: by less than twice
        # the sample's own error, and never by more than the precision's error budget allows (else a broken model,
        # whose errors are large, would turn every disagreement into a "tie").
        gap = r64[np.arange(len(ra)), ra] - r64[np.arange(len(ta)), ta]
        sample_err = np.where(finite, diff, 0.0).reshape(len(ra), -1).max(axis=1)
        cap = tie_cap(tolerance, scale, np.where(np.isfinite(r64), r64, 0.0))
        if tolerance.max_abs is not None:
            cap = np.minimum(cap, tolerance.max_abs)
        ties = (~agree) & (gap <= 2 * np.minimum(sample_err, cap))
        top1 = float((agree | ties).mean())
        k = min(5, ref.shape[1])
        t_top = np.argsort(-t64, axis=1)[:, :k]
        top5 = float(np.mean([ra[i] in t_top[i] for i in range(len(ra))]))
    cmp = OutputComparison(
        name=name,
        shape=tuple(int(s) for s in ref.shape),
        max_abs=max_abs,
        max_rel=max_rel,
        ref_scale=scale,
        cosine=cos,
        top1=top1,
        top1_raw=top1_raw,
        top5=top5,
        nan=nan,
        inf=inf,
        ref_nonfinite=ref_bad,
        tolerance=tolerance,
    )
    cmp.failures = judge(cmp, tolerance)
    return cmp


def judge(c: OutputComparison, tol: Tolerance) -> list[str]:
    """Which budgets a comparison misses, each as ``metric value vs budget``."""
    out = []
    if c.nan or c.inf:
        out.append(f"non-finite values: {c.nan} NaN, {c.inf} Inf")
    if tol.max_rel is not None and not c.max_rel <= tol.max_rel:
        out.append(f"max_rel {c.max_rel:.2e} > {tol.max_rel:.0e}")
    if tol.max_abs is not None and not c.max_abs <= tol.max_abs:
        out.append(f"max_abs {c.max_abs:.2e} > {tol.max_abs:.0e}")
    if tol.min_cosine is not None and not c.cosine >= tol.min_cosine:
        out.append(f"cosine {c.cosine:.6f} < {tol.min_cosine:g}")
    if tol.min_top1 is not None and c.top1 is not None and not c.top1 >= tol.min_top1:
        out.append(f"top1 {c.top1:.3f} < {tol.min_top1:.2f}")
    if tol.min_top5 is not None and c.top5 is not None and not c.top5 >= tol.min_top5:
        out.append(f"top5 {c.top5:.3f} < {tol.min_top5:.2f}")
    return out


#: The task rule's defaults (``deploy --accuracy-data``): at most this many points of top-1 accuracy below fp32,
#: and at least this top-1 agreement with fp32 (Olive's metric goals, NNCF's ``max_drop``).
MAX_ACCURACY_DROP = 1.0
MIN_TASK_AGREEMENT = 0.99


def task_failures(nonfinite: int, ref_top1: float | None, test_top1: float | None, agreement: float | None,
                  max_drop: float = MAX_ACCURACY_DROP, min_agreement: float = MIN_TASK_AGREEMENT) -> list[str]:  # fmt: skip
    """What a lower-precision model fails of the task rule (labelled images): NaN/Inf outputs, a top-1 accuracy
    more than ``max_drop`` points below fp32's, a top-1 agreement with fp32 below ``min_agreement``, or a figure
    that is unknown. Cosine and max_rel are reported beside it, not judged."""
    out = []
    if nonfinite:
        out.append(f"non-finite values: {nonfinite}")
    if ref_top1 is None or test_top1 is None:
        out.append("top-1 accuracy unknown")
    elif 100.0 * (ref_top1 - test_top1) > max_drop + 1e-9:
        out.append(f"top-1 accuracy {test_top1:.2%} is {100 * (ref_top1 - test_top1):.2f} points below fp32's {ref_top1:.2%} (allowed: {max_drop:g})")
    if agreement is None:
        out.append("top-1 agreement unknown")
    elif agreement < min_agreement:
        out.append(f"top-1 agreement {agreement:.4f} < {min_agreement:g}")
    return out


def compare_outputs(
    ref: dict[str, np.ndarray], test: dict[str, np.ndarray], tolerance: Tolerance
) -> list[OutputComparison]:
    """Compare every reference output with the test output of the same name (or position, if names differ)."""
    ref_names, test_names = list(ref), list(test)
    if len(ref_names) != len(test_names):
        raise BadInputError(
            f"the test model has {len(test_names)} output(s), the reference {len(ref_names)}",
            hint="remove auxiliary outputs from the model (deployinc export does) or compare matching models",
        )
    pairs = (
        [(n, n) for n in ref_names]
        if set(ref_names) == set(test_names)
        else list(zip(ref_names, test_names))
    )
    return [compare_arrays(tn, ref[rn], test[tn], tolerance) for rn, tn in pairs]


def one_line(comparisons: list[OutputComparison]) -> str:
    """``PASS max_rel=3.1e-07 cos=1.000000 top1=1.00 [fp32-cpu: max_rel<=1e-04 ...]``."""
    worst_rel = max(c.max_rel for c in comparisons)
    worst_cos = min(c.cosine for c in comparisons)
    top1s = [c.top1 for c in comparisons if c.top1 is not None]
    verdict = "PASS" if all(c.passed for c in comparisons) else "FAIL"
    s = f"{verdict} max_rel={worst_rel:.1e} cos={worst_cos:.6f}"
    if top1s:
        s += f" top1={min(top1s):.2f}"
    tol = comparisons[0].tolerance
    s += f" [{tol.name}: {tol.describe()}]"
    fails = [f for c in comparisons for f in c.failures]
    if fails:
        s += " failed: " + "; ".join(fails)
    return s
