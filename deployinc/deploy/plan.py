"""Which candidates deploy tries, and which one it ships.

A candidate is an artifact (the fp32 export, its fp16 conversion, an int8 quantization for a backend) run on one
backend at one compute precision with a few session options. The plan follows the target:

* ``cpu``: ORT CPU at fp32 / fp16 / int8 (uint8 activations, the kind ORT's CPU kernels run fast; calibrated by
  percentile, and by minmax as a second candidate), and where the
  OpenVINO plugin is installed, ``ort-openvino`` at fp32, int8 and, on a CPU with native bf16 (AMX or AVX512-BF16),
  bf16. Where there is more than one CPU, ORT CPU fp32 and int8 are also timed with one thread (the session-option
  search; on a shared machine one thread can win at batch 1).
* ``cuda``: ORT CUDA at fp32 / fp16 (with and without a CUDA graph), plus the TensorRT ones where they can run.
* ``tensorrt``: ORT's TensorRT provider and native engines at fp32 / fp16 / int8 (symmetric int8, the kind
  TensorRT takes).

``--fallback auto`` (the default) adds, for each int8 candidate on a CPU provider, a *mixed* one: the same int8
model with the fewest layers kept in float that pass (:mod:`deployinc.precision.fallback`), made only where the
whole-model int8 fails (the search judges it first, and says "not needed" otherwise).

On a CPU with native bf16 (AMX or AVX512-BF16), the search also runs OpenVINO's mixed int8 candidate with the
layers it keeps in float computed in bf16 (``float: bf16``, what OpenVINO does by default on an AMX CPU): they cost
about half as much on AVX512-BF16, far less with AMX. bf16 adds its own error to the float layers, so the candidate
runs a file of its own (``int8-cpu-mixed-qdq-bf16``): the mixed file, with more of the search's ranked layers in
float where bf16 would spend the search's margin; the int8 preset judges it as it judges the others (a whole-model
int8 file has no float layers worth the candidate).

The choice: the fastest passing candidate for the objective; candidates within :data:`TIE` of the fastest are
a tie, which goes to fp32, then to the fewest dependencies. A candidate whose timing stayed unsteady when measured
again (bench's flags: rounds that disagree, a p50 over twice the minimum, a load average above the core count) is
ranked only when no steady one passed, and the reason for the choice says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import backends as B
from ..core.env import BF16_FLAGS, cpu_flags, isa_cap
from ..errors import BadInputError
from .request import DEPLOY_PRECISIONS, DeployRequest
from ..core.precisions import BF16, FP32, INT8, INT8_CPU, INT8_CPU_MIXED, INT8_CPU_MIXED_BF16, INT8_CPU_MIXED_QDQ, MIXED

#: Candidates whose objective is within this fraction of the best are tied.
TIE = 0.03
#: Fewer dependencies first: what a user must install and run next to the model (each backend's record's rank).
DEPENDENCY_RANK = {n: B.get(n).rank for n in B.ONNX_BACKENDS}


@dataclass
class Candidate:
    """One thing to verify and time."""

    precision: str
    backend: str
    artifact: str  # fp32 | fp16 | int8-cpu | int8-trt
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        extra = "".join(f"-{v}" if k in ("calibration", "fallback") else f"-{k}-{v}" if k == "float" else f"-{k}{'' if v is True else v}"
                        for k, v in sorted(self.options.items()))  # fmt: skip
        return f"{self.precision}-{self.backend}{extra}"

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.precision} on {self.backend}" + (f" ({opts})" if opts else "")


def artifact_for(precision: str, backend: str) -> str | None:
    """The artifact a (precision, backend) pair runs, or None when that backend cannot compute at that precision
    (its record's ``artifacts``: bf16 runs the fp32 file at a bf16 compute precision; int8 for TensorRT is
    symmetric (s8 activations), for the CPU providers uint8 activations)."""
    return B.get(backend).artifact(precision)


def choose_target(req: DeployRequest, problem: Any) -> tuple[str, str]:
    """The target to plan for and why (``--target auto``: a GPU target where ORT CUDA can run, else cpu)."""
    if req.target != "auto":
        return req.target, f"--target {req.target}"
    cuda = problem(B.targets("cuda")[0])
    if cuda is None:
        trt = problem(B.targets("tensorrt")[0])
        return "cuda", "auto: ORT CUDA can run here" + ("" if trt is None else f" (TensorRT cannot: {trt})")
    return "cpu", f"auto: ORT CUDA cannot run here: {cuda}"


def _backends_for(target: str) -> tuple[str, ...]:
    return B.targets(target)


def plan(req: DeployRequest, problem: Any, bf16_native: bool, cpus: int) -> tuple[list[Candidate], list[dict[str, str]], str, str]:
    """Candidates to try, the (backend, reason) pairs left out, the target and why.

    ``problem(backend)`` says why a backend cannot run here (None when it can).

    Raises:
        BadInputError: A required or listed backend cannot run here, or nothing can.
    """
    target, why = choose_target(req, problem)
    wanted = list(req.backends) if req.backends else list(_backends_for(target))
    if req.require_backend and req.require_backend not in wanted:
        wanted.append(req.require_backend)
    left_out: list[dict[str, str]] = []
    usable = []
    for b in wanted:
        reason = problem(b)
        if reason is None:
            usable.append(b)
        elif req.backends or b == req.require_backend:
            raise BadInputError(f"{b} cannot run here: {reason}", hint="drop it from --backends / --require-backend, or deploy on a machine that has it")
        else:
            left_out.append({"backend": b, "reason": reason})
    if not usable:
        raise BadInputError(f"no backend of target {target} can run here", hint="use --target cpu, or install what the reasons above name")
    precisions = list(req.precisions or DEPLOY_PRECISIONS)
    if req.require_precision and req.require_precision not in precisions:
        precisions.append(req.require_precision)
    out: list[Candidate] = []
    for p in precisions:
        for b in usable:
            art = artifact_for(p, b)
            if art is None:
                continue
            if p == BF16 and not bf16_native:
                cap = isa_cap()
                lacks = f"{cap} hides this CPU's native bf16 from OpenVINO" if cap and cpu_flags() & set(BF16_FLAGS) else "this CPU has no native bf16 (AMX or AVX512-BF16)"
                left_out.append({"backend": b, "reason": f"bf16: {lacks}; it would be emulated"})
                continue
            out.append(Candidate(p, b, art))
            if req.search and p == INT8:  # calibration: percentile (the default) and minmax
                out.append(Candidate(p, b, f"{art}-minmax", {"calibration": "minmax"}))
            if req.search and "threads" in B.get(b).search and p in (FP32, INT8) and cpus > 1 and req.threads is None:
                out.append(Candidate(p, b, art, {"threads": 1}))
            if req.search and "cuda_graph" in B.get(b).search:
                out.append(Candidate(p, b, art, {"cuda_graph": True}))
    if req.fallback == "auto":  # last: made only where the whole-model candidate fails (the search judges it first)
        for c in [c for c in out if c.precision == INT8 and c.artifact == INT8_CPU]:
            art = INT8_CPU_MIXED_QDQ if B.get(c.backend).int8_float_output else INT8_CPU_MIXED
            out.append(Candidate(c.precision, c.backend, art, {**c.options, "fallback": MIXED}))
    if bf16_native and req.search and (not req.precisions or BF16 in precisions):  # a mixed file's float layers in bf16
        out += [Candidate(c.precision, c.backend, INT8_CPU_MIXED_BF16, {**c.options, "float": BF16}) for c in list(out)
                if c.artifact == INT8_CPU_MIXED_QDQ and BF16 in B.get(c.backend).float_precisions and "threads" not in c.options]  # fmt: skip
    if not out:
        raise BadInputError(
            f"no candidate: none of the precisions {', '.join(precisions)} runs on {', '.join(usable)}",
            hint=f"bf16 needs {' or '.join(B.COMPUTE_PRECISION_BACKENDS[BF16])} (pip install 'deployinc[openvino]') on a CPU with AMX or AVX512-BF16; add fp32 to --precisions",
        )
    return out, left_out, target, why


def score(result: dict[str, Any], objective: str, batches: list[int]) -> float | None:
    """What the objective ranks by, larger is better: 1 / p50 at the first batch size (latency), or the best
    images/s over the batch sizes (throughput)."""
    timing = result.get("timing") or {}
    if objective == "latency":
        row = timing.get(str(batches[0]))
        return 1.0 / row["p50_ms"] if row and row.get("p50_ms") else None
    rates = [r["images_per_s"] for r in timing.values() if r and r.get("images_per_s")]
    return max(rates) if rates else None


def unsteady(result: dict[str, Any], objective: str, batches: list[int]) -> list[str]:
    """Why the timings the objective ranks ``result`` by are unsteady (bench's flags, after one re-measurement)."""
    timing = result.get("timing") or {}
    rows = [timing.get(str(batches[0]))] if objective == "latency" else list(timing.values())
    return [why for row in rows if row for why in row.get("unsteady") or []]


def eligible(result: dict[str, Any], req: DeployRequest) -> str | None:
    """Why a passing candidate cannot be chosen under the user's requirements (None when it can)."""
    if req.require_backend and result["backend"] != req.require_backend:
        return f"--require-backend {req.require_backend}"
    if req.require_precision and result["precision"] != req.require_precision:
        return f"--require-precision {req.require_precision}"
    floor = req.min_top1_agreement
    agree = (result.get("metrics") or {}).get("top1_agreement")
    if floor is not None and (agree is None or agree < floor):
        return f"top-1 agreement {'unknown' if agree is None else format(agree, '.4f')} < --min-top1-agreement {floor:g}"
    return None


def choose(results: list[dict[str, Any]], req: DeployRequest) -> tuple[dict[str, Any] | None, str]:
    """The chosen result and a sentence saying why (None and the reason when nothing qualifies)."""
    scored = []
    for r in results:
        if r.get("verdict") != "pass" or eligible(r, req) is not None:
            continue
        s = score(r, req.objective, list(req.batches))
        if s is not None:
            scored.append((s, r))
    if not scored:
        if results and all(r.get("verdict") in ("inconclusive", "skipped") for r in results) and any(r.get("verdict") == "inconclusive" for r in results):
            return None, ("no candidate can be verified: the reference gives the same output for every image (a model with "
                          "random weights whose classifier is zero?); deploy it from trained weights")
        return None, "no candidate passed" + (" and met the requirements" if (req.require_backend or req.require_precision) else "")
    steady = [(s, r) for s, r in scored if not unsteady(r, req.objective, list(req.batches))]
    shaky = ", ".join(r["id"] for _, r in scored if unsteady(r, req.objective, list(req.batches)))
    if steady and shaky:
        note = f"; not ranked, as their timings stayed unsteady when measured again: {shaky}"
    elif shaky:
        note = "; every passing candidate's timing was unsteady, even measured again, so this choice rests on unsteady figures: rerun on a quiet machine"
    else:
        note = ""
    scored = steady or scored
    best = max(s for s, _ in scored)
    tied = [(s, r) for s, r in scored if s >= best * (1 - TIE)]
    # a tie goes to fp32, then to fewer dependencies, then to float layers computed at fp32 (less error; a server
    # configuration that cannot set OpenVINO's hint runs them so)
    tied.sort(key=lambda sr: (sr[1]["precision"] != FP32, DEPENDENCY_RANK.get(sr[1]["backend"], 9), bool((sr[1].get("options") or {}).get("float")), -sr[0]))
    s, pick = tied[0]
    what = f"p50 at batch {req.batches[0]}" if req.objective == "latency" else "images/s"
    if len(tied) > 1:
        others = ", ".join(r["id"] for _, r in tied[1:])
        why = f"fastest passing by {what} within {TIE:.0%} of the best (tied with {others}; ties go to fp32, then fewer dependencies, then fp32 float layers)"
    else:
        why = f"fastest passing candidate by {what}"
    return pick, why + note
