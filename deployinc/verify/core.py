"""``verify``: run an ONNX file on several backends and batch sizes, compare each with the reference, judge.

The flow: read and check the file; parse what was asked (backends, batches) before any heavy work; build the inputs
(images from a folder, or seeded natural-image statistics, or noise on request) and check them against the model's
input; build the reference (torch from provenance or ``--reference``, or another ONNX file); run the reference once
over all samples; run every backend at every batch size over the same samples; compare per output with the
tolerance preset of the precision and backend (overridden by the export config, then by flags); check the
preprocessing; localise the first departing layer on request or on failure; record the environment.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import backends as B
from .. import isolate as isolation
from ..core import env, images, limits
from ..core import graph as G
from ..core.floor import RELATIVE_TO, budget_text, judge_fp64, measure, widen
from ..errors import BackendCrashed, BackendUnavailable, BadInputError
from ..io import load_onnx, save_onnx
from ..io.arrays import read_npy
from ..metadata import read_provenance
from ..models.loading import require_trusted_spec, seeded_init
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from ..runners.torch_runner import TorchRunner
from ..subject import Subject
from ..subject.inputs import load_inputs
from . import reference as R
from .accuracy import accuracy, class_count, load_labelled_folder
from .backends import FUSING_BACKENDS, ONNX_BACKENDS, family, make_onnx_runner, open_backend
from .checks import preprocessing
from .localize import Localization, localize
from .reference import no_reference_error
from .request import VerifyRequest
from .tensors import check_finite, load_run, save_run

#: Backends run in a subprocess by default (native GPU code that can crash or hang).
ISOLATED_BACKENDS = B.ISOLATED_BACKENDS
#: Seconds an isolated backend may take without --timeout: a TensorRT engine build (ort-trt, trt-engine) can take
#: many minutes; any other backend verifying a classifier over its samples takes seconds, so a hang ends sooner.
ISOLATED_TIMEOUT = 1800.0
ISOLATED_TIMEOUT_OTHERS = 300.0
ENGINE_BUILDERS = B.ENGINE_BACKENDS

from ..core.metrics import Tolerance, compare_outputs, preset
from ..core.precisions import FP16, FP32, INT8

DEFAULT_BATCHES = (1, 8)
DEFAULT_SAMPLES = 8
#: Samples localisation runs (the hooks keep a copy of every module output).
LOCALIZE_SAMPLES = 2
INPUT_KINDS = ("natural", "uniform", "normal")


@dataclass
class BatchResult:
    """One backend at one batch size: per-output comparisons."""

    batch: int
    samples: int
    outputs: list[Any]
    seconds: float
    #: fp32 with a measured floor: the first output's error against the float64 answer (see _rejudge).
    err_vs_fp64: float | None = None
    #: The max_rel check was passed against float64 (it was over its budget against torch fp32).
    judged_vs_fp64: bool = False

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "batch": self.batch,
            "samples": self.samples,
            "passed": self.passed,
            "seconds": round(self.seconds, 4),
        }
        if self.err_vs_fp64 is not None:  # only where computed (a measured floor)
            d.update(err_vs_fp64=self.err_vs_fp64, judged_vs_fp64=self.judged_vs_fp64)
        d["outputs"] = [c.to_dict() for c in self.outputs]
        return d


@dataclass
class BackendResult:
    """A backend that ran (``results``) or was skipped (``reason``)."""

    name: str
    status: str  # ran | skipped | crashed
    tolerance: Tolerance | None = None
    tolerance_source: str = ""
    budget_note: str = ""
    results: list[BatchResult] = field(default_factory=list)
    reason: str | None = None
    hint: str | None = None
    describe: dict[str, Any] = field(default_factory=dict)
    activate_seconds: float | None = None
    #: Where float64 decided its max_rel check: ``judged against float64: ...`` (passed) or ``over against float64
    #: too: ...`` (failed both ways); empty where torch fp32 decided it or no floor was measured.
    fp64_note: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "ran" and all(r.passed for r in self.results)

    @property
    def err_vs_fp64(self) -> float | None:
        """The worst error against the float64 answer over its batch sizes, where it was computed."""
        errs = [r.err_vs_fp64 for r in self.results if r.err_vs_fp64 is not None]
        return max(errs) if errs else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "backend": self.name,
            "status": self.status,
            "passed": self.passed if self.status != "skipped" else None,
            "reason": self.reason,
            "hint": self.hint,
            "tolerance": asdict(self.tolerance) if self.tolerance else None,
            "tolerance_source": self.tolerance_source,
            "budget_note": self.budget_note,
        }
        if self.err_vs_fp64 is not None:  # only where computed: a report without a floor has no such keys
            d.update(err_vs_fp64=self.err_vs_fp64, judged_vs_fp64=any(r.judged_vs_fp64 for r in self.results), fp64_note=self.fp64_note)
        d.update(runner=self.describe, activate_seconds=self.activate_seconds, results=[r.to_dict() for r in self.results])
        return d


@dataclass
class VerifyReport:
    """Everything ``deployinc verify`` measured and decided."""

    model: str
    precision: str
    precision_source: str
    reference: Any
    inputs: dict[str, Any]
    batches: list[int]
    backends: list[BackendResult]
    checks: list[Any] = field(default_factory=list)
    localization: Any = None
    diagnosis: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    floor: Any = None
    relative_to: str = ""
    allow_skip: bool = False
    accuracy: Any = None
    #: Why the comparison proves nothing although it passed (the reference's output ignores its input).
    inconclusive: list[str] = field(default_factory=list)

    @property
    def ran(self) -> list[BackendResult]:
        """Backends that ran (a crashed backend ran, and failed)."""
        return [b for b in self.backends if b.status in ("ran", "crashed")]

    @property
    def skipped(self) -> list[BackendResult]:
        return [b for b in self.backends if b.status == "skipped"]

    @property
    def complete(self) -> bool:
        """Every requested backend ran (or skipped backends were allowed with ``allow_skip``), and the comparison
        can tell a correct run from a wrong one (nothing :attr:`inconclusive`; ``allow_skip`` does not waive it)."""
        return (self.allow_skip or not self.skipped) and not self.inconclusive

    @property
    def failed_checks(self) -> list[Any]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def passed(self) -> bool:
        return bool(self.ran) and all(b.passed for b in self.ran) and not self.failed_checks

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL``, ``INCONCLUSIVE`` (passed, but the reference ignores its input) or ``INCOMPLETE``
        (passed, but a requested backend did not run)."""
        if not self.passed:
            return "FAIL"
        if self.inconclusive:
            return "INCONCLUSIVE"
        return "PASS" if self.complete else "INCOMPLETE"

    def failures(self) -> list[str]:
        """One line per failed comparison or check: ``ort-cpu batch 8 logits: max_rel 3.2e-02 > 1e-04``."""
        out = [f"{b.name} crashed: {b.reason}" for b in self.backends if b.status == "crashed"]
        for b in self.ran:
            for r in b.results:
                for c in r.outputs:
                    if c.failures:
                        out.append(f"{b.name} batch {r.batch} {c.name}: {'; '.join(c.failures)}")
        out += [c.message for c in self.failed_checks]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-safe (non-finite floats become the strings ``inf``, ``-inf``, ``nan``)."""
        return _json_safe(self._dict())

    def _dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "verdict": self.verdict.lower(),
            "failures": self.failures(),
            "diagnosis": self.diagnosis,
            "precision": self.precision,
            "precision_source": self.precision_source,
            "reference": self.reference.to_dict() if self.reference is not None else None,
            "inputs": self.inputs,
            "batches": self.batches,
            "backends": [b.to_dict() for b in self.backends],
            "checks": [c.to_dict() for c in self.checks],
            "localization": self.localization.to_dict() if self.localization is not None else None,
            "noise_floor": self.floor.to_dict() if self.floor is not None else None,
            "complete": self.complete,
            "skipped": [b.name for b in self.skipped],
            "inconclusive": self.inconclusive,
            "accuracy": self.accuracy.to_dict() if self.accuracy is not None else None,
            "relative_to": self.relative_to,
            "environment": self.environment,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
        }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else ("nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf"))
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


# tolerances --------------------------------------------------------------------------------------------------------


#: Budgets where a smaller value is stricter; the others (min_*) are stricter when larger.
_UPPER_BUDGETS = ("max_rel", "max_abs")
_BUDGET_KEYS = ("max_rel", "max_abs", "min_cosine", "min_top1", "min_top5")


def _stricter(key: str, value: Any, current: float | None) -> bool:
    """Whether a recorded budget is at least as strict as the one in force (``None``: not judged at all)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
        return False
    if current is None:
        return True
    return float(value) <= current if key in _UPPER_BUDGETS else float(value) >= current


def _file_budgets(precision: str, fam: str, config: dict[str, Any]) -> dict[str, Any]:
    """The budgets a file records for this precision and backend family: a table per precision, or flat keys
    (fp32 on the CPU, as the bundled configs document)."""
    over: dict[str, Any] = {}
    per = config.get(precision)
    if isinstance(per, dict):
        over.update(per)
    elif precision == FP32 and fam == "cpu":
        over.update({k: v for k, v in config.items() if not isinstance(v, dict)})
    return {k: v for k, v in over.items() if k in _BUDGET_KEYS}


def tolerance_for(
    precision: str,
    backend: str,
    config: dict[str, Any] | None,
    flags: dict[str, Any] | None,
    trust_file: bool = False,
    notes: list[str] | None = None,
    floor: Any = None,
) -> tuple[Tolerance, str]:
    """The preset of a precision and backend family, then the budgets recorded in the file, then the user's flags.

    A file is data from whoever wrote it, so it cannot set its own pass mark: a recorded budget applies only where
    it is at least as strict as the preset, unless ``trust_file`` (``--file-tolerances``) says to honour it as it
    is. Looser recorded budgets are named in ``notes``. For fp32, a measured float32 noise floor (see
    :mod:`deployinc.core.floor`) then widens ``max_rel`` to ``max(budget, multiple x floor)``. Flags always apply.
    """
    tol = preset(precision, family(backend))
    source = tol.name
    if config:
        fam = family(backend)
        recorded = _file_budgets(precision, fam, config)
        base = asdict(tol)
        used = {k: v for k, v in recorded.items() if trust_file or _stricter(k, v, base.get(k))}
        used = {k: float(v) for k, v in used.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        ignored = {k: v for k, v in recorded.items() if k not in used}
        if used:
            tol = tol.with_overrides(**used)
            tol = Tolerance(**{**asdict(tol), "name": f"{preset(precision, fam).name}+config"})
            source += " + export config" + (" (--file-tolerances)" if trust_file else "")
        if ignored and notes is not None:
            msg = (
                f"budgets recorded in the file and looser than the {preset(precision, fam).name} preset were ignored: "
                + ", ".join(f"{k}={v}" for k, v in ignored.items())
                + " (a file cannot set its own pass mark; pass them as flags, or --file-tolerances, to use them)"
            )
            if msg not in notes:
                notes.append(msg)
    if floor is not None:
        wide = widen(tol, precision, floor)
        if wide is not tol:
            tol = wide
            source += " + float32 noise floor"
    if flags:
        f = {k: v for k, v in flags.items() if v is not None}
        if f:
            base_name = tol.name
            tol = tol.with_overrides(**f)
            tol = Tolerance(**{**asdict(tol), "name": f"{base_name}+flags"})
            source += " + flags"
    return tol, source


# inputs ------------------------------------------------------------------------------------------------------------


def isolated_timeout(name: str, timeout: float | None) -> float:
    """Seconds isolated backend ``name`` may take: ``timeout`` when given, else its default."""
    if timeout is not None:
        return timeout
    return ISOLATED_TIMEOUT if name in ENGINE_BUILDERS else ISOLATED_TIMEOUT_OTHERS


def _load_npy(path: str) -> np.ndarray:
    return read_npy(path, "--inputs", "save one N x C x H x W array of normalised floats with numpy.save")


def _load_npz_input(path: str) -> np.ndarray:
    return load_inputs(path)


def make_inputs(
    kind: str,
    gi: G.GraphInput,
    chw: tuple[int, ...],
    mean: Sequence[float],
    std: Sequence[float],
    samples: int,
    seed: int,
    data: str | None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(normalised float32 inputs, raw [0, 1] images or None, description)."""
    desc: dict[str, Any] = {"shape": list(chw), "mean": list(mean), "std": list(std), "seed": seed}
    raw = None
    if data is not None:
        raw, rep = images.load_image_folder_with_report(data, chw, None, None, limit=samples)

        x = images.normalize(raw, list(mean)[: chw[0]], list(std)[: chw[0]])
        desc.update(source="data", folder=str(data), used=rep["used"], skipped=rep["skipped"][:20])
    elif kind == "natural":
        raw = images.natural_images(samples, chw, None, None, seed=seed)

        x = images.normalize(raw, list(mean)[: chw[0]], list(std)[: chw[0]])
        desc.update(source="natural", note="seeded images with natural-image statistics (1/f spectrum, edges, colour)")
    elif kind in ("uniform", "normal"):
        x = images.noise(samples, chw, kind, seed=seed)
        desc.update(source=kind, note=f"{kind} noise, on request (not normalised)")
    else:
        arr = _load_npy(kind) if not str(kind).endswith(".npz") else _load_npz_input(kind)
        if arr.ndim == 3:
            arr = arr[None]
        G.check_feed(G.GraphInput(gi.name, [gi.dims[0], *chw], 1), arr.astype(np.float32) if arr.dtype.kind == "f" else arr, what=f"--inputs {kind}")
        x = arr.astype(np.float32)
        desc.update(source="file", file=str(kind), note="used as given (already normalised)")
    desc["samples"] = int(x.shape[0])
    check_finite(x, "the inputs")
    return np.ascontiguousarray(x, dtype=np.float32), raw, desc


def _fit_samples(x: np.ndarray, n: int) -> np.ndarray:
    """Tile ``x`` along N to at least ``n`` samples (a small --data folder and a large batch)."""
    if x.shape[0] >= n:
        return x
    reps = math.ceil(n / x.shape[0])
    return np.concatenate([x] * reps)[: max(n, x.shape[0])]


# running -----------------------------------------------------------------------------------------------------------


def _cast_for(gi: G.GraphInput, x: np.ndarray) -> np.ndarray:
    if gi.elem_type == 10:
        return x.astype(np.float16)
    if gi.elem_type == 11:
        return x.astype(np.float64)
    return x


def _run_chunks(runner: Any, name: str, x: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, x.shape[0], batch):
        got = runner.infer({name: np.ascontiguousarray(x[i : i + batch])})
        for k, v in got.items():
            outs.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in outs.items()}


def verify(model: str | os.PathLike[str], **options: Any) -> VerifyReport:
    """Verify an ONNX file against its reference; the library form of ``deployinc verify``.

    ``options`` are the fields of :class:`~deployinc.verify.request.VerifyRequest`:

    Args:
        model: The ONNX file.
        reference: ``package.module:function`` (or a registry name) to build the torch reference from, instead of
            the file's provenance.
        weights: Checkpoint for ``reference`` (or a moved checkpoint for the provenance's model).
        against: Another ONNX file as the reference (run on ORT CPU; no torch).
        load_outputs: An ``.npz`` written by ``save_outputs``: its inputs and reference outputs replace both (a
            replay on another machine, without torch).
        providers: ``cpu,cuda,tensorrt`` (also ``torch-cuda``, ``torch-fused``).
        precision: ``fp32``, ``fp16`` or ``int8`` (the tolerance preset; TensorRT's build precision); default: what
            the file holds. A looser preset than the file's own precision is refused where no backend builds at it.
        batches: Batch sizes to run (default 1 and 8; a static batch runs at its size).
        samples: Number of input samples.
        data: A folder of images (resized and normalised as the metadata says).
        labels: With ``data`` in ImageFolder layout (one sub-folder per class): True for class indices from the
            sorted folder names, or a labels file (one class name per line, in index order). Every image of the
            folder then runs, and top-1/top-5 accuracy of the reference and of each backend is reported.
        inputs: ``natural`` (default), ``uniform``, ``normal``, or an ``.npy``/``.npz`` file of normalised inputs.
        seed: Seed of generated inputs.
        input_shape: ``N,C,H,W`` or ``C,H,W`` (must agree with the model's static dims).
        mean: Normalisation mean (default: the metadata's, else ImageNet's).
        std: Normalisation std.
        num_classes: Class count for ``reference`` (default: the model's output size).
        tolerance: Budget overrides (max_rel, max_abs, min_cosine, min_top1, min_top5).
        localize: True to localise always, False never, None on failure.
        localize_method: ``auto`` (bisection on TensorRT, all outputs elsewhere), ``all`` or ``bisect``.
        threads: Intra-op threads of torch and ONNX Runtime (default: the usable CPUs).
        use_cache: Use the BatchNorm-statistics cache for random-weight references.
        isolate: Run ONNX backends in a subprocess, so that a crash or hang in native code is that backend failing
            (status ``crashed``), not the end of the run. True: every ONNX backend; False: none; None (default): the
            GPU backends (ort-cuda, ort-trt, trt-engine) always, and ort-cpu too when deployinc did not write the
            file (it has no deployinc provenance).
        trust_model_code: Rebuild a ``module:function`` reference recorded in the file's metadata (it imports and
            runs that code). Without it such a file needs ``reference`` naming the same spec; registry names
            (built-in, torchvision, ``timm/...``) are always rebuilt.
        file_tolerances: Honour budgets recorded in the file even where they are looser than the preset. By
            default a recorded budget applies only where it is stricter: a file cannot set its own pass mark.
        fp64_floor: For fp32 against a torch reference, measure torch's own float32 error (a float64 run of the
            same model on the same inputs) and judge with ``max(preset, 2 x floor)``; a backend over that against
            torch fp32 is judged on its own error against the float64 outputs, with the same budget.
        timeout: Seconds one backend may take (its session, every batch); a backend past it is stopped and
            reported as failed. It implies ``isolate`` for every ONNX backend, since only a subprocess can be
            stopped (default for an isolated backend: 1800 s for ort-trt and trt-engine, which build an engine, 300 s
            for the others; none in process).
        allow_skip: Backends that cannot run here do not make the report incomplete (``report.complete``).
        save_inputs: Write the normalised inputs to this ``.npz`` (``input``), for ``--inputs`` elsewhere.
        save_outputs: Write the inputs, the reference outputs and every backend's outputs to this ``.npz``.
        force: Overwrite ``save_inputs`` / ``save_outputs``.
        log: ``callable(str)`` for progress lines.

    Raises:
        BadInputError: Bad file, flags, data or shapes (exit 2).
        ModelSpecError, WeightsError: The reference cannot be built.
    """
    return run(VerifyRequest(model=model, **options))


@dataclass
class _Subject:
    """The file under test and what was decided from it and the request before any heavy work."""

    model: Any
    path: Path
    prov: Any
    gi: G.GraphInput
    out_dims: list[Any]
    precision: str
    precision_source: str
    chw: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batches: list[int]
    static: int | None
    backends: list[str]
    threads: int
    isolate: bool | None
    float_precision: str | None = None  # what an int8 file's float layers compute in (None: fp32)


def run(req: Any, subject: Subject | None = None) -> VerifyReport:
    """The stages of verify, in order, for a :class:`~deployinc.verify.request.VerifyRequest`.

    ``subject``: a :class:`~deployinc.subject.Subject` whose torch reference (built on first use, and its outputs)
    stands in for the one the file's provenance would rebuild, when it is the same (deploy verifies every candidate
    against one reference)."""
    say = req.log or (lambda _m: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []

    t = time.perf_counter()
    subj = open_subject(req, notes)
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    x, raw, in_desc, labels = build_inputs(req, subj, notes)
    timings["inputs"] = time.perf_counter() - t

    t = time.perf_counter()
    ref, ref_model = build_reference(req, subj, say, subject)
    timings["reference"] = time.perf_counter() - t

    t = time.perf_counter()
    ref_out = reference_outputs(req, subj, ref, ref_model, x, subject)
    timings["reference_run"] = time.perf_counter() - t
    outputs: dict[str, Any] = {}
    results = run_backends(req, subj, ref, x, ref_out, None, notes, timings, say, outputs)
    if ref.module is not None and any(not r.passed for r in results if r.status in ("ran", "crashed")):
        check_batch_independent(ref.module, x, ref_out, max(subj.batches), subj.threads)
    floor = None
    if subj.precision == FP32 and ref.module is not None and req.fp64_floor and _over_max_rel(results):
        # Only a backend over the preset's max_rel needs torch's own float32 error: measure it, and judge again
        # against max(preset, 2 x floor) on the outputs already computed.
        t = time.perf_counter()
        say("over the fp32 preset: measuring the reference's own float32 error (a float64 run of the same model)")
        floor = measure(ref.module, x, ref_out, max(subj.batches))
        timings["fp64_floor"] = time.perf_counter() - t
        _rejudge(req, subj, results, ref_out, outputs, floor, notes)
    report = assemble(subj, ref, in_desc, results, notes, floor, req.allow_skip)
    report.inconclusive = input_blind_outputs(ref_out, x)
    if labels is not None:
        report.accuracy = accuracy(labels, ref_out, outputs, subj.batches)
    check_preprocessing(report, subj, ref, raw, timings)
    localize_step(req, report, subj, ref, ref_model, x, timings, say)
    _diagnose(report)
    if req.save_inputs is not None or req.save_outputs is not None:
        save_run(req, x, ref_out, outputs, subj.model.graph.output[0].name)
    report.environment = env.environment(ort_threads=subj.threads)
    timings["total"] = time.perf_counter() - t_start
    report.timings = timings
    return report


def reference_run(req: Any, subject: Subject | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None, str]:
    """verify's inputs and reference outputs for ``req``, without running a backend: (inputs, reference outputs by
    name, labels of the inputs or None, the input's name). What a layer-fallback search judges its models against,
    with the same inputs, reference and labels as the verify run that judges the result (``subject`` as in
    :func:`run`)."""
    notes: list[str] = []
    subj = open_subject(req, notes)
    x, _raw, _desc, labels = build_inputs(req, subj, notes)
    ref, ref_model = build_reference(req, subj, req.log or (lambda _m: None), subject)
    ref_out = reference_outputs(req, subj, ref, ref_model, x, subject)
    if labels is not None:  # only the labelled images, not the repeats that fill a batch
        n = len(labels)
        x, ref_out = x[:n], {k: v[:n] for k, v in ref_out.items()}
    return x, ref_out, labels, subj.gi.name


def open_subject(req: Any, notes: list[str]) -> _Subject:
    """Check the request, read and check the file, decide precision, geometry and batch sizes; nothing heavy."""
    backend_names = req.check()
    threads = int(req.threads) if req.threads else (env.usable_cpus() or 1)
    isolate = True if req.timeout is not None else req.isolate
    onnx_file = load_onnx(req.model)
    mproto, path = onnx_file.model, onnx_file.path
    prov = read_provenance(mproto)
    gi = G.image_input(mproto, str(path))
    if prov is None and req.reference is None and req.against is None and req.load_outputs is None:
        raise no_reference_error(path)
    if prov is not None and req.reference is None and req.against is None and req.load_outputs is None:
        require_trusted_spec(prov.model_spec, req.trust_model_code)  # before any work, and before anything is imported
    detected, why = G.detect_precision(mproto)
    prec = req.precision or detected
    _check_precision_request(req.precision, detected, backend_names, path)
    fp = B.float_precision_problem(req.float_precision, prec, backend_names)
    if fp is not None:
        raise BadInputError(f"{path.name}: {fp[0]}", hint=fp[1])
    chw = _geometry(req, gi, prov)
    mean, std = _normalisation(req, prov, chw)
    batches, static = _batches(req, gi, notes)

    limits.check_input_memory("--samples", req.samples, max(req.samples, *batches), chw)  # before any is made
    return _Subject(
        model=mproto, path=path, prov=prov, gi=gi, out_dims=[G.dims_of(o) for o in mproto.graph.output],
        precision=prec, chw=chw,
        precision_source=("--precision" if req.precision else f"detected: {why}") + _float_note(req.float_precision),
        mean=mean, std=std, batches=batches, static=static, backends=backend_names, threads=threads, isolate=isolate,
        float_precision=req.float_precision,
    )  # fmt: skip


def _float_note(float_precision: str | None) -> str:
    """The precision source's note on ``--float-precision``: the int8 file's float layers computed in it."""
    return f"; its float layers in {float_precision} (--float-precision)" if float_precision not in (None, FP32) else ""


#: Backends that build at a precision of their own (an fp32 file runs as fp16 there when asked).
_BUILDING_BACKENDS = B.ENGINE_BACKENDS
_LOOSENESS = {FP32: 0, FP16: 1, INT8: 2}


def _check_precision_request(asked: str | None, detected: str, backends: list[str], path: Path) -> None:
    """Refuse ``--precision`` looser than what the file computes in, unless a backend builds at that precision:
    on ONNX Runtime an fp32 file runs in fp32, and the fp16 preset would only loosen its check."""
    if asked is None or _LOOSENESS.get(asked, 0) <= _LOOSENESS.get(detected, 0):
        return
    if any(b in _BUILDING_BACKENDS for b in backends):
        return
    raise BadInputError(
        f"--precision {asked}, but {path.name} computes in {detected}: its backends run it in {detected}, and the "
        f"{asked} budget would only loosen the check",
        hint=f"convert it first (deployinc convert {path.name} --precision fp16, or deployinc quantize), or drop --precision",
    )


def _geometry(req: Any, gi: G.GraphInput, prov: Any) -> tuple[int, ...]:
    chw = gi.chw
    if req.input_shape is not None:
        dims = list(req.input_shape)
        if len(dims) == 3:
            dims = [1, *dims]
        if len(dims) != 4:
            raise BadInputError(f"--input-shape {list(req.input_shape)} must be N,C,H,W", hint="e.g. 1,3,224,224")
        want = tuple(dims[1:])
        if chw is not None and tuple(chw) != want:
            raise BadInputError(
                f"--input-shape {dims} does not fit the model: its input {gi.name!r} expects {gi.shape_text()}",
                hint=f"use --input-shape 1,{','.join(str(c) for c in chw)} (or leave it out: it is read from the file)",
            )
        chw = want
    if chw is None:
        if prov is None:
            raise BadInputError(
                f"the model's input {gi.name!r} has symbolic dimensions {gi.shape_text()} besides the batch",
                hint="pass --input-shape N,C,H,W",
            )
        chw = tuple(prov.input_shape[1:])
    return tuple(chw)


def _normalisation(req: Any, prov: Any, chw: tuple[int, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = tuple(req.mean) if req.mean is not None else (tuple(prov.mean) if prov is not None else IMAGENET_MEAN)
    std = tuple(req.std) if req.std is not None else (tuple(prov.std) if prov is not None else IMAGENET_STD)
    if len(mean) not in (1, chw[0]) or len(std) not in (1, chw[0]):
        raise BadInputError(f"mean/std have {len(mean)}/{len(std)} values for {chw[0]} input channels", hint="give one value per channel")
    mean = mean * chw[0] if len(mean) == 1 else mean
    std = std * chw[0] if len(std) == 1 else std
    if any(not math.isfinite(v) for v in (*mean, *std)):
        raise BadInputError(f"mean {list(mean)} / std {list(std)} hold a value that is not a finite number", hint="give finite numbers, e.g. --std 0.229,0.224,0.225")
    if any(s <= 0 for s in std):
        raise BadInputError(f"std {list(std)} holds a value <= 0", hint="std values must be positive")
    return mean, std


def _batches(req: Any, gi: G.GraphInput, notes: list[str]) -> tuple[list[int], int | None]:
    static = gi.static_batch
    if req.batches is None:
        if static:
            notes.append(f"the model has a static batch of {static}; it runs at that size only")
        return ([static] if static else list(DEFAULT_BATCHES)), static
    batch_list = sorted(dict.fromkeys(int(b) for b in req.batches))
    if any(b < 1 for b in batch_list):
        raise BadInputError(f"--batch {batch_list} must hold sizes >= 1", hint="e.g. --batch 1,8")
    if static and batch_list != [static]:
        raise BadInputError(
            f"--batch {','.join(map(str, batch_list))} does not fit the model: its input {gi.name!r} has a static "
            f"batch, shape {gi.shape_text()}",
            hint=f"use --batch {static}, or export with a dynamic batch",
        )
    return batch_list, static


def build_inputs(req: Any, subj: _Subject, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], Any]:
    """(normalised inputs filling the largest batch, raw [0, 1] images or None, description, labels or None)."""
    labels = None
    if req.load_outputs is not None:
        x, _ = load_run(req.load_outputs)
        raw, in_desc = None, {"source": "file", "file": str(req.load_outputs), "samples": int(x.shape[0]), "note": "inputs saved with the outputs"}
    elif req.labels:
        raw, labels, in_desc = load_labelled_folder(req.data, subj.chw, req.labels, outputs=class_count(subj.out_dims))

        x = images.normalize(raw, list(subj.mean), list(subj.std))
    else:
        x, raw, in_desc = make_inputs(req.inputs, subj.gi, subj.chw, subj.mean, subj.std, req.samples, req.seed, str(req.data) if req.data else None)
    in_desc.setdefault("shape", list(subj.chw))
    in_desc.setdefault("mean", list(subj.mean))
    in_desc.setdefault("std", list(subj.std))
    n_needed = max(subj.batches)
    if x.shape[0] < n_needed:
        notes.append(f"{x.shape[0]} input sample(s) repeated to fill a batch of {n_needed}")
        x = _fit_samples(x, n_needed)
        if raw is not None:
            raw = _fit_samples(raw, n_needed)
    in_desc["samples_run"] = int(x.shape[0])
    G.check_feed(subj.gi, _cast_for(subj.gi, x[: subj.batches[0]]), what="the input batch")
    return x, raw, in_desc, labels


def build_reference(req: Any, subj: _Subject, say: Callable[[str], None], shared: Subject | None = None) -> tuple[Any, Any]:
    """The reference: saved outputs, another ONNX file, a torch model from ``--reference``, or the provenance (the
    ``shared`` subject's, built once, when it stands for this file's)."""
    prov = subj.prov
    if req.against is None and req.load_outputs is None:  # an ONNX or saved reference needs no torch at all
        import torch

        torch.set_num_threads(subj.threads)
    if req.load_outputs is not None:
        return R.from_saved(req.load_outputs), None
    if req.against is not None:
        ref, ref_model = R.from_onnx(req.against)
        rgi = G.image_input(ref_model, str(req.against))
        if rgi.chw is not None and tuple(rgi.chw) != tuple(subj.chw):
            raise BadInputError(
                f"--against {req.against} expects input {rgi.shape_text()}, {subj.path} expects {subj.gi.shape_text()}",
                hint="compare two exports of the same model",
            )
        return ref, ref_model
    if req.reference is not None and prov is not None and req.reference == prov.model_spec and req.num_classes is None:
        # the user named the recorded spec: rebuild exactly what was exported (weights, seed, statistics)
        say(f"rebuilding the reference {prov.model_spec} from the file's metadata (confirmed by --reference)")
        return R.from_provenance(prov, weights=req.weights, use_cache=req.use_cache, trust_code=True), None
    if req.reference is not None:
        ncls = req.num_classes
        od = subj.out_dims
        if ncls is None and od and len(od[0]) == 2 and isinstance(od[0][1], int):
            ncls = int(od[0][1])
        seed = prov.seed if prov else 0
        return R.from_spec(req.reference, req.weights, subj.chw, ncls, subj.mean, subj.std, seed=seed), None
    if shared is not None and shared.stands_for(prov, req.weights, req.use_cache):
        return shared.reference(say), None
    say(f"rebuilding the reference {prov.model_spec} from the file's metadata")
    return R.from_provenance(prov, weights=req.weights, use_cache=req.use_cache, trust_code=req.trust_model_code), None


def reference_outputs(req: Any, subj: _Subject, ref: Any, ref_model: Any, x: np.ndarray, shared: Subject | None = None) -> dict[str, np.ndarray]:
    """The reference's outputs over every sample, once, at the largest batch (once per ``shared`` subject, when the
    reference is its own)."""
    ref_batch = max(subj.batches)
    if ref.kind == "saved":
        _, outs = load_run(req.load_outputs)
        return outs
    if ref.kind == "onnx":
        rrunner = make_onnx_runner(B.REFERENCE, ref.onnx_path, precision=FP32, threads=subj.threads, batches=subj.batches, static_batch=bool(subj.static))
        rgi = G.image_input(ref_model)
        rrunner.activate()
        try:
            return _run_chunks(rrunner, rgi.name, _cast_for(rgi, x), ref_batch)
        finally:
            rrunner.deactivate()

    out_name = subj.model.graph.output[0].name
    if shared is not None and shared.reference_built and ref is shared.reference():
        return shared.reference_outputs(x, ref_batch, subj.threads, out_name, lambda: _torch_outputs(subj, ref, x, ref_batch, out_name))
    return _torch_outputs(subj, ref, x, ref_batch, out_name)


def _torch_outputs(subj: _Subject, ref: Any, x: np.ndarray, ref_batch: int, out_name: str) -> dict[str, np.ndarray]:
    with TorchRunner(ref.module, device="cpu", precision=FP32, threads=subj.threads, output_name=out_name) as tr:
        try:
            return _run_chunks(tr, "input", x, ref_batch)
        except RuntimeError as exc:
            raise BadInputError(
                f"the reference model rejects inputs of shape {[ref_batch, *subj.chw]}: {str(exc).splitlines()[0][:200]}",
                hint="check --input-shape and that the reference is the model the file was exported from",
            ) from exc


#: An image's reference output alone and within a batch differ by float32 rounding (far below this, relative to
#: the output's scale); a model that normalises with batch statistics moves it by far more.
BATCH_DEPENDENCE_MAX_REL = 1e-3


def check_batch_independent(module: Any, x: np.ndarray, ref_out: dict[str, np.ndarray], ref_batch: int, threads: int | None) -> None:
    """Refuse a reference whose output for an image depends on the other images in its batch (a BatchNorm with
    ``track_running_stats=False`` normalises with each batch's own statistics, even in eval mode): the reference
    is run at one batch size, so a backend at another cannot match it, however right the file is. Compares the
    reference on the first image alone with the same image within the batch the reference ran (a batch of up to 8
    images when that batch was 1).

    Raises:
        BadInputError: The outputs differ beyond float32 rounding.
    """
    n = min(len(x), 8) if ref_batch == 1 else 1
    if len(x) < 2 or n > len(x) or (ref_batch == 1 and n < 2):
        return
    name = next(iter(ref_out))
    with TorchRunner(module, device="cpu", precision=FP32, threads=threads, output_name=name) as tr:
        got = tr.infer({"input": np.ascontiguousarray(x[:n])})[name]
    want = np.asarray(ref_out[name][:n])
    scale = float(np.abs(want).max()) or 1.0
    rel = float(np.abs(np.asarray(got, dtype=np.float64) - want).max()) / scale
    if not rel > BATCH_DEPENDENCE_MAX_REL:
        return
    alone, within = ("image 0 alone", f"in a batch of {ref_batch}") if ref_batch > 1 else (f"images 0-{n - 1} in one batch", "one at a time")
    raise BadInputError(
        f"batch-dependent reference: the model's output for an image depends on the other images in its batch "
        f"({alone} vs {within}: max_rel {rel:.1e}), so a comparison at another batch size fails whatever the file "
        "computes; this is the model, not the export (a BatchNorm with track_running_stats=False normalises with each "
        "batch's own statistics, even in eval mode)",
        hint="give the model's BatchNorm layers running statistics (track_running_stats=True) and export again; "
        "or verify at a single batch size equal to --samples (--batch N --samples N)",
    )


def run_backends(
    req: Any,
    subj: _Subject,
    ref: Any,
    x: np.ndarray,
    ref_out: dict[str, np.ndarray],
    floor: Any,
    notes: list[str],
    timings: dict[str, float],
    say: Callable[[str], None],
    outputs: dict[str, Any],
) -> list[BackendResult]:
    """Every requested backend at every batch size over the same samples, compared with the reference."""
    cfg_tol = subj.prov.tolerances if subj.prov is not None else None
    results: list[BackendResult] = []
    for name in subj.backends:
        tol, tol_src = tolerance_for(subj.precision, name, cfg_tol, req.tolerance, trust_file=req.file_tolerances, notes=notes, floor=floor)
        t = time.perf_counter()
        if name in B.TORCH_BACKENDS and name != B.BASELINE and ref.module is None:
            br = BackendResult(name, "skipped", tol, tol_src, reason=f"{name} needs a torch reference (not --against or --load-outputs)")
        elif _isolated(name, subj.isolate, subj.prov is not None):
            br = _run_isolated(name, subj, x, ref_out, tol, tol_src, say, req.timeout, outputs)
        else:
            br = _run_in_process(name, subj, ref, x, ref_out, tol, tol_src, say, outputs)
        timings[f"backend:{name}"] = time.perf_counter() - t
        results.append(br)
    return results


def _over_max_rel(results: list[BackendResult]) -> bool:
    """Whether some comparison missed its max_rel budget (the only budget the float32 floor can widen)."""
    return any(f.startswith("max_rel") for r in results for b in r.results for c in b.outputs for f in c.failures)


def _rejudge(req: Any, subj: _Subject, results: list[BackendResult], ref_out: dict[str, np.ndarray], outputs: dict[str, Any], floor: Any, notes: list[str]) -> None:
    """Judge every backend that ran again, with the tolerance the measured floor gives, on its saved outputs; where
    one is still over that max_rel against torch fp32, judge it against the float64 answer (:func:`_judge_fp64`)."""
    cfg_tol = subj.prov.tolerances if subj.prov is not None else None
    by_flag = (req.tolerance or {}).get("max_rel") is not None  # the user's max_rel decides, against torch fp32
    for r in results:
        if r.status != "ran":
            continue
        tol, src = tolerance_for(subj.precision, r.name, cfg_tol, req.tolerance, trust_file=req.file_tolerances, notes=notes, floor=floor)
        r.tolerance, r.tolerance_source = tol, src
        for br in r.results:
            got = outputs.get(f"{r.name}/b{br.batch}")
            if got is not None:
                ref_n = {k: v[: br.samples] for k, v in ref_out.items()}
                br.outputs = compare_outputs(ref_n, got, tol)
                if not by_flag:
                    _judge_fp64(r, br, ref_n, got, floor, notes)


def _judge_fp64(r: BackendResult, br: BatchResult, ref_n: dict[str, np.ndarray], got: dict[str, np.ndarray], floor: Any, notes: list[str]) -> None:
    """Record the first output's error against the float64 answer; where its max_rel check failed against torch
    fp32, the check is decided against float64 instead, with the same budget (max(preset, multiple x floor)).

    Two float32 computations are each about one floor from the exact answer, so their difference can be twice
    that or more on a correct export; the backend's own error against float64 is what the budget bounds. Only the
    max_rel failure can be lifted: cosine, top-1/top-5 and non-finite values keep their verdicts.
    """
    if not br.outputs or r.tolerance is None or floor is None or getattr(floor, "output", None) not in ref_n:
        return
    c = br.outputs[0]  # compare_outputs keeps the reference's order: the first is the floor's output
    test = got[c.name] if c.name in got else next(iter(got.values()))
    check = judge_fp64(test, ref_n[floor.output], floor, r.tolerance.max_rel)
    if check is None:
        return
    br.err_vs_fp64 = check.err
    rel_fails = [f for f in c.failures if f.startswith("max_rel")]
    if not rel_fails:
        return
    base = preset(FP32, family(r.name)).max_rel
    where = f"{r.name} batch {br.batch} {c.name}"
    if check.passed:
        c.failures = [f for f in c.failures if not f.startswith("max_rel")]
        earlier = [b.err_vs_fp64 for b in r.results if b is not br and b.judged_vs_fp64 and b.err_vs_fp64 is not None]
        br.judged_vs_fp64 = True
        if not r.fp64_note.startswith("over") and all(e <= check.err for e in earlier):  # the worst batch speaks
            r.fp64_note = f"judged against float64: {check.line(base)}"
        notes.append(
            f"{where}: max_rel {c.max_rel:.2e} against torch fp32 is over {check.budget:.2e}, but that compares two float32 "
            f"computations; against the float64 answer it is within the budget ({check.line(base)}): passed against float64"
        )
    else:
        c.failures = [f"{f} (against float64 too: {check.line(base)})" if f in rel_fails else f for f in c.failures]
        if not r.fp64_note.startswith("over"):
            r.fp64_note = f"over against float64 too: {check.line(base)}"


def _run_in_process(
    name: str, subj: _Subject, ref: Any, x: np.ndarray, ref_out: dict[str, np.ndarray], tol: Tolerance, tol_src: str,
    say: Callable[[str], None], outputs: dict[str, Any],
) -> BackendResult:  # fmt: skip
    opened = open_backend(
        name, onnx_path=subj.path, onnx_bytes=None, reference=ref, precision=subj.precision, threads=subj.threads,
        batches=subj.batches, static_batch=bool(subj.static), float_precision=subj.float_precision,
    )  # fmt: skip
    if opened.skipped:
        say(f"{name}: skipped ({opened.reason})")
        return BackendResult(name, "skipped", tol, tol_src, reason=opened.reason, hint=opened.hint)
    runner = opened.runner
    br = BackendResult(name, "ran", tol, tol_src, describe=runner.describe(), activate_seconds=runner.activate_seconds)
    try:
        in_name = runner.input_names()[0] if name in ONNX_BACKENDS else "input"
        for b in subj.batches:
            n = (x.shape[0] // b) * b
            tb = time.perf_counter()
            feed = _cast_for(subj.gi, x[:n]) if name in ONNX_BACKENDS else x[:n]
            got = _run_chunks(runner, in_name, feed, b)
            outputs[f"{name}/b{b}"] = got
            cmp = compare_outputs({k: v[:n] for k, v in ref_out.items()}, got, tol)
            br.results.append(BatchResult(batch=b, samples=n, outputs=cmp, seconds=time.perf_counter() - tb))
            say(f"{name} batch {b}: {'within' if all(c.passed for c in cmp) else 'over'} its budget (verdict below)")
    finally:
        runner.deactivate()
    return br


def assemble(subj: _Subject, ref: Any, in_desc: dict[str, Any], results: list[BackendResult], notes: list[str], floor: Any, allow_skip: bool) -> VerifyReport:
    """The report of what ran; refuses a run where nothing could."""
    ran = [r for r in results if r.status in ("ran", "crashed")]
    if not ran:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in results)
        raise BackendUnavailable(
            f"none of the requested backends can run here ({reasons})",
            hint="add --providers cpu, or run on a machine with the GPU and libraries they need",
        )

    report = VerifyReport(
        model=str(subj.path), precision=subj.precision, precision_source=subj.precision_source, reference=ref,
        inputs=in_desc, batches=subj.batches, backends=results, notes=notes, floor=floor, allow_skip=allow_skip,
    )  # fmt: skip
    report.relative_to = RELATIVE_TO.get(subj.precision, "").format(k=floor.multiple if floor is not None else 2)
    for r in results:
        if floor is not None and r.tolerance is not None and "flags" not in r.tolerance_source:
            r.budget_note = budget_text(r.tolerance, preset(subj.precision, family(r.name)), floor)
        if r.fp64_note:
            r.budget_note = f"{r.budget_note}; {r.fp64_note}" if r.budget_note else r.fp64_note
    return report


def input_blind_outputs(ref_out: dict[str, np.ndarray], x: np.ndarray) -> list[str]:
    """Why the comparison proves nothing: every floating reference output is the same for each of several different
    input images (a classifier initialised to zero outputs zeros from any features), so any backend passes it. One
    reason per output; empty when some output depends on the input (or there are fewer than two different images).
    """
    n = len(x)
    if n < 2 or not np.any(x != x[:1]):
        return []
    floats = {k: np.asarray(v) for k, v in ref_out.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}
    blind = {k: r for k, r in floats.items() if r.ndim and len(r) == n and r.size and bool(np.all(r == r[:1]))}
    if not blind or len(blind) < len(floats):  # an output that follows the input still tests the computation
        return []
    out = []
    for name, r in blind.items():
        flat = r[:1].ravel()
        value = f"all {flat[0]:.4g}" if np.all(flat == flat[0]) else "the same values"
        out.append(f"the reference's {name!r} is the same for all {n} different input images ({value}), so the "
                   "comparison cannot tell a correct export from a wrong one")
    return out


def check_preprocessing(report: VerifyReport, subj: _Subject, ref: Any, raw: np.ndarray | None, timings: dict[str, float]) -> None:
    """Does the file's mean/std agree with the export config and the registry (torch references with provenance)."""
    prov = subj.prov
    if prov is None or ref.module is None:
        return

    t = time.perf_counter()
    recal_from_meta = bool(prov.bn_recalibrated) and ref.kind == "provenance"
    report.checks.append(preprocessing(prov, subj.mean, subj.std, ref.module, raw[:8] if raw is not None else None, recal_from_meta))
    timings["checks"] = time.perf_counter() - t


def localize_step(req: Any, report: VerifyReport, subj: _Subject, ref: Any, ref_model: Any, x: np.ndarray, timings: dict[str, float], say: Callable[[str], None]) -> None:
    """Localise the first departing layer on request, or when parity failed (ONNX backends, torch references)."""
    ran = report.ran
    parity_failed = any(not r.passed for r in ran)
    candidates = [r for r in ran if r.status == "ran"] or ran
    target = next((r for r in candidates if not r.passed), candidates[0])
    if not (req.localize or (req.localize is None and parity_failed)):
        return
    if ref.kind == "saved":
        report.notes.append("localisation needs the reference model; saved outputs hold only its final outputs")
        return
    if target.name not in ONNX_BACKENDS:
        report.notes.append(f"localisation runs on ONNX backends; {target.name} is a torch backend")
        return
    t = time.perf_counter()
    method = req.localize_method if req.localize_method != "auto" else ("bisect" if target.name in FUSING_BACKENDS else "all")
    say(f"localising on {target.name} ({method})")
    report.localization = _localize(
        subj.model, subj.path, ref, ref_model, x[: (subj.static or LOCALIZE_SAMPLES)], subj.gi, target, subj.precision,
        subj.threads, subj.batches, bool(subj.static), method, say, subj.float_precision,
    )  # fmt: skip
    timings["localize"] = time.perf_counter() - t


def _isolated(name: str, isolate: bool | None, ours: bool) -> bool:
    """Whether backend ``name`` runs in a subprocess (see ``isolate`` in :func:`verify`)."""
    if not B.get(name).onnx:
        return False
    if isolate is None:
        return name in ISOLATED_BACKENDS or not ours
    return isolate


def _run_isolated(
    name: str,
    subj: _Subject,
    x: np.ndarray,
    ref_out: dict[str, np.ndarray],
    tol: Tolerance,
    tol_src: str,
    say: Callable[[str], None],
    timeout: float | None = None,
    outputs: dict[str, Any] | None = None,
) -> BackendResult:
    """One GPU backend in a subprocess: skipped (with the reason) when it cannot run, crashed when it dies."""
    problem = env.cuda_driver_problem() if name in ISOLATED_BACKENDS else None  # spares a subprocess without a GPU
    if problem is not None:
        reason = f"{name} cannot run: {problem}"
        say(f"{name}: skipped ({reason})")
        return BackendResult(name, "skipped", tol, tol_src, reason=reason, hint="run on a machine with an NVIDIA GPU")
    try:
        got = isolation.call_isolated(
            "deployinc.verify.backends:run_isolated_outputs",
            name,
            str(subj.path),
            x,
            subj.batches,
            precision=subj.precision,
            threads=subj.threads,
            static_batch=bool(subj.static),
            input_elem_type=subj.gi.elem_type,
            float_precision=subj.float_precision,
            timeout=isolated_timeout(name, timeout),
            label=name,
        )
    except BackendUnavailable as exc:
        say(f"{name}: skipped ({exc.message})")
        return BackendResult(name, "skipped", tol, tol_src, reason=exc.message, hint=exc.hint)
    except BackendCrashed as exc:
        say(f"{name}: crashed ({exc.message})")
        return BackendResult(name, "crashed", tol, tol_src, reason=exc.message, hint=exc.hint)
    br = BackendResult(name, "ran", tol, tol_src, describe=got["describe"], activate_seconds=got["activate_seconds"])
    for b in subj.batches:
        n = (x.shape[0] // b) * b
        if outputs is not None:
            outputs[f"{name}/b{b}"] = got["outputs"][b]
        cmp = compare_outputs({k: v[:n] for k, v in ref_out.items()}, got["outputs"][b], tol)
        br.results.append(BatchResult(batch=b, samples=n, outputs=cmp, seconds=got["seconds"][b]))
        say(f"{name} batch {b}: {'within' if all(c.passed for c in cmp) else 'over'} its budget (verdict below)")
    br.describe["isolated"] = True
    return br


def _localize(
    mproto: Any,
    path: Path,
    ref: Any,
    ref_model: Any,
    x: np.ndarray,
    gi: G.GraphInput,
    target: BackendResult,
    prec: str,
    threads: int,
    batch_list: list[int],
    static: bool,
    method: str,
    say: Callable[[str], None],
    float_precision: str | None = None,
) -> Any:
    scratch: list[Any] = []  # a temporary folder for truncated models, removed on return

    def runner_for(model_proto: Any, backend: str) -> Any:
        if backend in FUSING_BACKENDS:  # TensorRT options and engines are keyed on a file
            import tempfile

            if not scratch:
                scratch.append(tempfile.TemporaryDirectory(prefix="deployinc-localize-"))
            p = Path(scratch[0].name) / f"part{len(list(Path(scratch[0].name).iterdir()))}.onnx"
            save_onnx(model_proto, p, force=True)
            return make_onnx_runner(backend, p, precision=prec, threads=threads, batches=batch_list, static_batch=static, onnx_path=p)
        data = model_proto.SerializeToString()
        floats = float_precision if backend == target.name else None  # the reference backend runs the graph as it is
        return make_onnx_runner(backend, data, precision=prec, threads=threads, batches=batch_list, static_batch=static, float_precision=floats)

    def run_on(backend: str, model_proto: Any, names: list[str], feed_gi: G.GraphInput) -> dict[str, np.ndarray]:
        r = runner_for(model_proto, backend)
        r.activate()
        try:
            outs = r.infer({feed_gi.name: _cast_for(feed_gi, x)})
        finally:
            r.deactivate()
        return {n: outs[n] for n in names if n in outs}

    try:
        if ref.kind == "onnx":
            rgi = G.image_input(ref_model)
            return localize(
                mproto,
                x,
                tolerance=target.tolerance,
                run_exposed=lambda m, names: run_on(target.name, m, names, gi),
                reference_model=ref_model,
                run_reference_exposed=lambda m, names: run_on(B.REFERENCE, G.with_outputs(m, names, G.value_types(m)), names, rgi),
                method=method,
                backend=target.name,
                log=say,
            )
        if target.name != B.REFERENCE:
            # First the graph itself, on the CPU, all points at once: if it departs there, the file is at fault
            # and the GPU backend has nothing to add.
            cpu = localize(
                mproto,
                x,
                tolerance=target.tolerance,
                run_exposed=lambda m, names: run_on(B.REFERENCE, m, names, gi),
                reference_module=ref.module,
                method="all",
                backend=B.REFERENCE,
                log=say,
            )
            if cpu.first is not None:
                cpu.notes.append(
                    f"the graph departs on ORT CPU as well, so the file itself differs from the reference; "
                    f"{target.name} was not bisected"
                )
                return cpu
            say(f"the graph agrees with the reference on ORT CPU; localising on {target.name}")
        return localize(
            mproto,
            x,
            tolerance=target.tolerance,
            run_exposed=lambda m, names: run_on(target.name, m, names, gi),
            reference_module=ref.module,
            method=method,
            run_proxy_exposed=(lambda m, names: run_on(B.REFERENCE, m, names, gi)) if target.name != B.REFERENCE else None,
            backend=target.name,
            log=say,
        )
    except BackendUnavailable as exc:
        loc = Localization(backend=target.name, method=method, budget=target.tolerance)
        loc.notes.append(f"localisation could not run: {exc.message}")
        return loc
    finally:
        for d in scratch:
            d.cleanup()


def _diagnose(report: VerifyReport) -> None:
    """Name the likely cause in one line each: a planted/perturbed layer, a skipped fold, preprocessing, fp16."""
    loc = report.localization
    pre = next((c for c in report.checks if c.name == "preprocessing"), None)
    failed = any(not b.passed for b in report.ran)
    ref = report.reference
    if failed and ref is not None and ref.kind == "spec" and ref.weights in (None, "", "none"):
        what = "random weights" if seeded_init(ref.info.source if ref.info is not None else "user", ref.weights) else "the weights its factory returns"
        report.diagnosis.append(
            f"the reference has {what} (no --weights): a file exported from a checkpoint cannot match it, "
            "so this failure and its localisation say nothing about the export; pass --weights CHECKPOINT"
        )
        return
    if loc is not None and loc.first is not None:
        first = loc.first
        at_input = loc.last_good is None
        line = f"the model departs from the reference at {first.label}"
        if first.fp16_overflow:
            line += "; its activations exceed fp16's range (65504) there"
        report.diagnosis.append(line)
        recal = report.reference is not None and report.reference.kind == "provenance" and any(
            "recalibrated" in n or "cache" in n for n in [report.reference.description, *report.reference.notes]
        )
        if at_input and failed and recal and not (pre is not None and pre.details.get("expected_source")):
            report.diagnosis.append(
                "possible preprocessing mismatch: the reference, whose BatchNorm statistics are recalibrated on inputs "
                "normalised with the metadata's mean/std, departs from the very first layer; the mean/std recorded "
                "in the file are probably not those the model was exported with"
            )
        if pre is not None and pre.status == "warn" and pre.details.get("expected_source") and at_input and failed:
            pre.status = "fail"
            pre.message = pre.message.replace("preprocessing mismatch?", "preprocessing mismatch:") + (
                f"; the rebuilt reference departs from the very first layer ({first.label}), as it does when its "
                "BatchNorm statistics were recalibrated from a different normalisation than the exported model's"
            )
    elif loc is not None and failed:
        report.diagnosis.append(loc.summary())
    if pre is not None and pre.status in ("fail", "warn"):
        report.diagnosis.append(pre.message)
    if loc is not None and loc.overflow and (loc.first is None or not loc.first.fp16_overflow):
        names = ", ".join(p.label for p in loc.overflow[:5])
        report.diagnosis.append(f"activations beyond fp16's 65504 at {names}")
