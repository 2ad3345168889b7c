"""The benchmark matrix: backends x batch sizes x precisions, timed with :func:`~deployinc.bench.timing.measure`.

For each precision, each backend is built once (its activation time is its first-run cost: session creation,
engine build, compilation) and reused across batch sizes, except where a shape is baked in at build time (CUDA
graphs, TensorRT engines), where it is built once per batch size. A backend that cannot run here is recorded as
skipped with the reason; it never stops the run.

Thread counts are set explicitly, the same for torch (``torch.set_num_threads``) and ONNX Runtime (intra-op
threads, one inter-op thread, sequential execution), and recorded.

With ``rounds > 1`` each (batch size, precision) cell interleaves the backends: every backend takes its share of
the iterations in turn, round after round, so a slow spell on a shared machine falls on all of them alike and the
ratios between backends stay fair. Warm-up runs once, before the first round (later rounds re-warm with one call).

Precision: by default the ONNX backends run the file at what it computes in (detected as verify does: an fp16 file
at fp16, a quantized one at int8), and the eager torch rows, the baseline of "vs eager", run the PyTorch model in
fp32 (as a user runs it). ``precisions`` asks for others (an fp32 file converted to fp16 on the fly...).

Bounded time: with ``timeout_s`` (``--timeout``) each ONNX backend's measurement at one batch size (session
creation, warm-up and every round) runs in its own subprocess (:func:`deployinc.isolate.call_isolated`), which
is stopped past the bound and reported as failed, with the reason, instead of hanging the run; its rounds then
run back to back in that process rather than interleaved with the other backends. ``max_time_s`` alone implies
such a bound of ``max(IMPLIED_TIMEOUT_FACTOR x max_time_s, IMPLIED_TIMEOUT_MIN_S)``, since one call can outlast
any sampling budget. Without either, everything runs in this process, as it always did. The eager torch rows
always run in this process (their module lives here).
"""

from __future__ import annotations

import datetime as _dt
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import isolate
from .. import backends as B
from ..backends import BACKENDS, COMPUTE_PRECISION_BACKENDS, TORCH_BACKENDS, float_precision_problem, precision_problem
from ..core import env
from ..core.limits import BATCH_MAX, MAX_TIME_S_MAX, THREADS_MAX
from ..errors import BackendCrashed, BackendUnavailable, BadInputError, DeployincError
from ..factory import onnx_runner
from ..precision import fp16
from ..runners.ort import OrtRunner
from ..runners.steps import TimedSteps
from ..runners.torch_runner import TorchRunner
from . import subject as bench_subject
from .cpu_link import cpu_round_trip_ns
from .environment import bench_environment
from .report import BenchReport, BenchRow
from .subject import PRECISIONS, BenchModel
from .timing import check_counts, measure, stretch_p50s, summarize
from ..core.precisions import BF16, FP32, INT8

#: Backends whose shapes are fixed when they are built (one build per batch size).
_PER_BATCH = B.ENGINE_BACKENDS
#: ``max_time_s`` without ``timeout_s`` bounds each isolated measurement at this multiple of it...
IMPLIED_TIMEOUT_FACTOR = 10.0
#: ... and at least this many seconds (session creation and warm-up come on top of the sampling).
IMPLIED_TIMEOUT_MIN_S = 60.0


def quiet_torch_logs() -> None:
    """Drop torch's "No CUDA runtime is found, using CUDA_HOME=..." warning.

    ``torch.utils.cpp_extension`` logs it when it is imported (``torch.compile``'s inductor imports it) on a
    machine with a CUDA toolkit (an ``nvcc`` on the PATH) but no GPU: a stray ``W1201 ... cpp_extension.py:183]``
    line in the middle of bench's output that says nothing about the run. A filter on that logger (torch's own
    log set-up resets levels and handlers, not filters) drops that one message and nothing else.
    """
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeFilter) for f in log.filters):
        log.addFilter(_NoCudaRuntimeFilter())


class _NoCudaRuntimeFilter:
    def filter(self, record: Any) -> bool:
        try:
            return not str(record.msg).startswith("No CUDA runtime is found")
        except Exception:  # noqa: BLE001 - a log filter must never raise
            return True


def default_threads() -> int:
    """The CPUs this process may run on (affinity), which is what both runtimes get unless told otherwise."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_precisions(precisions: list[str]) -> list[str]:
    """Refuse unknown precision names.

    Raises:
        BadInputError: A name is not fp32, fp16, bf16 or int8.
    """
    out = []
    for p in precisions:
        p = p.strip().lower()
        if not p:
            continue
        if p not in PRECISIONS:
            raise BadInputError(f"unknown precision {p!r}", hint=f"known: {', '.join(PRECISIONS)}")
        if p not in out:
            out.append(p)
    if not out:
        raise BadInputError("no precision given", hint=f"known: {', '.join(PRECISIONS)}")
    return out


@dataclass
class BenchSettings:
    """How to run the matrix (see :func:`benchmark`)."""

    backends: list[str]
    batches: list[int]
    precisions: list[str] | None = None  # None: what the file computes in (see the module docstring)
    warmup: int = 10
    iters: int = 100
    threads: int | None = None
    device: str = "auto"
    cuda_graph: bool = False
    float_precision: str | None = None  # an int8 file's float layers on a backend that offers it (OpenVINO: bf16)
    rounds: int = 1
    max_time_s: float | None = None
    keep_samples: bool = True
    tf32: bool = False
    timeout_s: float | None = None
    #: Sample other processes' CPU use (0.2 s) and time a cache-line round trip between two CPUs before and after
    #: (a forked probe): for studying a VM's placement of CPUs, not part of a user's benchmark by default.
    machine_probes: bool = False

    def measurement_timeout(self) -> float | None:
        """Seconds one isolated measurement may take: ``timeout_s``, else the bound ``max_time_s`` implies, else
        None (no bound: everything runs in this process)."""
        if self.timeout_s is not None:
            return self.timeout_s
        if self.max_time_s is not None:
            return max(IMPLIED_TIMEOUT_FACTOR * self.max_time_s, IMPLIED_TIMEOUT_MIN_S)
        return None

    def validate(self) -> None:
        check_counts(self.warmup, self.iters)
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise BadInputError(f"unknown backend {unknown[0]!r}", hint=f"known: {', '.join(BACKENDS)}")
        if not self.batches or any((not isinstance(b, int)) or b < 1 or b > BATCH_MAX for b in self.batches):
            raise BadInputError(f"batch sizes {self.batches} must be positive integers", hint=f"allowed: 1..{BATCH_MAX}; e.g. --batch 1,8,32")
        if self.precisions is not None:
            self.precisions = check_precisions(self.precisions)
            _check_compute_precisions(self.precisions, self.backends)
        onnx_backends = [b for b in self.backends if b not in TORCH_BACKENDS]
        if self.float_precision not in (None, FP32) and not onnx_backends:
            raise BadInputError("--float-precision applies to an ONNX backend's int8 file, and only eager torch was asked",
                                hint="add the backend to --backends, e.g. --backends torch,openvino")  # fmt: skip
        for p in self.precisions or [None]:
            fp = float_precision_problem(self.float_precision, p, onnx_backends)
            if fp is not None:
                raise BadInputError(fp[0], hint=fp[1])
        if self.threads is not None and not 1 <= self.threads <= THREADS_MAX:
            raise BadInputError(
                f"--threads {self.threads} must be from 1 to {THREADS_MAX}", hint=f"allowed: 1..{THREADS_MAX}; this machine has {default_threads()} usable CPUs"
            )
        if self.rounds < 1 or self.rounds > self.iters:
            raise BadInputError(f"--rounds {self.rounds} must be between 1 and --iters ({self.iters})", hint="e.g. --rounds 3")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BadInputError(f"unknown device {self.device!r}", hint="auto, cpu or cuda")
        if self.max_time_s is not None and not 0 < self.max_time_s <= MAX_TIME_S_MAX:  # NaN fails this too
            raise BadInputError(
                f"--max-time {self.max_time_s} must be a positive, finite number of seconds",
                hint=f"allowed: (0, {MAX_TIME_S_MAX:g}] seconds of sampling per measurement; e.g. --max-time 30",
            )
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not 0 < self.timeout_s <= MAX_TIME_S_MAX
        ):
            raise BadInputError(
                f"--timeout {self.timeout_s} must be a positive, finite number of seconds",
                hint=f"allowed: (0, {MAX_TIME_S_MAX:g}] seconds per backend measurement; e.g. --timeout 600",
            )


def _check_compute_precisions(precisions: list[str], backends: list[str]) -> None:
    """Refuse a compute precision (bf16) that none of the ONNX backends asked for computes in; the others get a
    skipped row at it (eager torch, the baseline, runs fp32 in that pass, as for int8).

    Raises:
        BadInputError: bf16 asked, and no backend of ``backends`` computes in it.
    """
    for p in precisions:
        able = COMPUTE_PRECISION_BACKENDS.get(p)
        if able is None or any(b in able for b in backends):
            continue
        onnx = [b for b in backends if b not in TORCH_BACKENDS] or backends
        raise BadInputError(
            f"--precision {precision_problem(p, onnx)}",
            hint=f"{p} runs on {', '.join(able)}: --backends torch,{able[0]} --precision fp32,{p}",
        )


# --------------------------------------------------------------------------------------------------------------------
# Building runners


def _torch_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise BackendUnavailable("torch sees no CUDA device here", hint="run on a machine with an NVIDIA GPU, or --device cpu")
    return "cpu"


class _Builder:
    """Builds (and caches per precision) the runner of each backend."""

    def __init__(self, model: BenchModel, s: BenchSettings, log: Callable[[str], None]):
        self.model, self.s, self.log = model, s, log
        self._fp16_bytes: bytes | None = None

    def torch_runner(self, backend: str, precision: str, example: np.ndarray) -> Any:
        rec = B.get(backend)
        device = "cuda" if rec.device == "gpu" else _torch_device(self.s.device)
        module = self.model.torch_module(fused=bool(rec.options.get("prepared")))
        return TorchRunner(
            module,
            device=device,
            precision=precision,
            threads=self.s.threads,
            compile=bool(rec.options.get("compile")),
            name=backend,
            example=example if rec.options.get("compile") else None,
            tf32=self.s.tf32,
        )

    def onnx_source(self, backend: str, precision: str) -> Any:
        """The ONNX model to run for ``precision``: the file itself, or its fp16 conversion (bf16 is a compute
        precision: the fp32 file, which ort-openvino computes in bf16)."""
        fp = self.model.file_precision
        if fp != FP32:
            if precision != fp:
                raise BackendUnavailable(
                    f"{self.model.path.name} is already {fp}; it cannot be run at {precision}",
                    hint=f"bench it with --precision {fp}, and bench its fp32 export for fp32 numbers",
                )
            return str(self.model.path)
        if precision == FP32 or precision in B.get(backend).from_fp32 or precision == BF16:
            return str(self.model.path)  # TensorRT lowers precision itself, from builder flags; OpenVINO from a hint
        if precision == INT8:
            raise BackendUnavailable(
                f"{backend} int8 needs a quantized model", hint="quantize it first (deployinc quantize) and bench that file"
            )
        if self._fp16_bytes is None:
            self.log("converting the model to fp16 for ONNX Runtime (deployinc.precision.fp16, I/O kept fp32)")
            self._fp16_bytes = fp16.convert_to_fp16(self.model.onnx, keep_io_types=True).model.SerializeToString()
        return self._fp16_bytes

    def onnx_runner(self, backend: str, precision: str, batch: int) -> Any:
        """The ONNX backend's runner from the one factory (:func:`deployinc.factory.onnx_runner`): TensorRT's
        profile for this batch size (the model's own when its batch is static), CUDA graphs and TF32 as set."""
        return onnx_runner(
            backend, self.onnx_source(backend, precision), precision=precision, threads=self.s.threads, path=self.model.path,
            trt_batch=str(batch) if self.model.static_batch is None else None, cuda_graph=self.s.cuda_graph, tf32=self.s.tf32,
            float_precision=self.s.float_precision if precision == INT8 else None,
        )  # fmt: skip

    def build(self, backend: str, precision: str, batch: int) -> Any:
        if backend in TORCH_BACKENDS:
            return self.torch_runner(backend, precision, self.model.inputs(batch))

        problem = precision_problem(precision, [backend])
        if problem is not None:  # a skipped row: another backend of this run computes in it (the reason names it)
            raise BackendUnavailable(problem)
        return self.onnx_runner(backend, precision, batch)


def open_steps(model: BenchModel, s: BenchSettings, backend: str, precision: str, batch: int) -> tuple[Any, Any]:
    """An activated runner of ``model`` on ``backend`` at ``precision`` and its timed steps for a batch of ``batch``:
    what the matrix times, for a caller that interleaves measurements of its own (deploy's run-off). The caller
    deactivates the runner."""
    runner = _Builder(model, s, lambda _m: None).build(backend, precision, batch)
    runner.activate()
    try:
        return runner, _steps(runner, model.inputs(batch), s.cuda_graph)
    except BaseException:
        runner.deactivate()
        raise


def _steps(runner: Any, x: np.ndarray, cuda_graph: bool) -> Any:
    """The runner's timed steps; a runner without ``bench_steps`` is timed through ``infer`` (end to end)."""
    if isinstance(runner, TorchRunner):
        return runner.bench_steps(x, cuda_graph=cuda_graph)
    if isinstance(runner, OrtRunner):
        inputs = runner.session.get_inputs()
        if len(inputs) != 1:
            raise BadInputError(f"the model has {len(inputs)} inputs; bench feeds one image batch", hint="export a single-input classifier")
        feed = x.astype(np.float16) if "float16" in inputs[0].type else x
        return runner.bench_steps({inputs[0].name: feed})
    if hasattr(runner, "bench_steps"):
        return runner.bench_steps({runner.input_names()[0]: x})
    feeds = {runner.input_names()[0]: x}
    return TimedSteps(e2e=lambda: runner.infer(feeds), sync=runner.synchronize if runner.device != "cpu" else None, notes=["timed through infer()"])


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall seconds, busy CPU-seconds of the whole machine, CPU-seconds of this process) from /proc."""
    import time

    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as f:
            mine = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait
    busy = sum(fields[:3]) + sum(fields[5:8])
    # utime + stime of every thread of this process, and of its children once waited for (compilers run by
    # torch.compile), which are this benchmark's own work, not another process's
    own = sum(int(v) for v in mine[11:15])
    return time.perf_counter(), busy / hz, own / hz


def _others_since(start: tuple[float, float, float] | None) -> float | None:
    end = _cpu_snapshot()
    if start is None or end is None or end[0] - start[0] <= 0:
        return None
    return round(max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0])), 2)


def other_cpu_use(seconds: float = 0.2) -> float | None:
    """How many CPUs other processes kept busy over the next ``seconds`` (None where /proc is not readable)."""
    import time

    start = _cpu_snapshot()
    if start is None:
        return None
    time.sleep(seconds)
    return _others_since(start)


def _round_trip() -> float | None:
    """The CPUs' round trip for the report; a probe that fails in any way costs the number, never the run."""
    try:
        return cpu_round_trip_ns()
    except Exception:  # noqa: BLE001 - an environment record must not break a benchmark
        return None


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DeployincError):
        return exc.message + (f" ({exc.hint})" if exc.hint else "")
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


# --------------------------------------------------------------------------------------------------------------------
# The matrix


@dataclass
class _Cell:
    backend: str
    runner: Any
    steps: Any
    device: str
    activate_s: float | None
    precision: str = FP32
    isolated: bool = False
    samples: dict[str, list[float]] = field(default_factory=dict)
    first: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    skip: str | None = None  # an isolated backend that turned out unavailable
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)
    load: float | None = None  # the 1-minute load average around its measurement (the larger reading)


def resolve_precisions(model: BenchModel, s: BenchSettings) -> tuple[list[str], str]:
    """The precisions to run and where they come from: ``s.precisions``, or (None) what the file computes in.

    Raises:
        BadInputError: A precision other than a non-fp32 file's, asked of its ONNX backends (they run the file
            as it is: an fp16 file at fp16, a quantized one at int8).
    """
    fp = model.file_precision
    why = model.file_precision_why or "detected"
    if s.precisions is None:
        floats = float_precision_problem(s.float_precision, fp, [b for b in s.backends if b not in TORCH_BACKENDS])
        if floats is not None:
            raise BadInputError(f"{model.path.name}: {floats[0]}", hint=floats[1])
        return [fp], f"the file's ({fp}: {why})"
    wrong = [p for p in s.precisions if p != fp]
    if fp != FP32 and wrong and any(b not in TORCH_BACKENDS for b in s.backends):
        raise BadInputError(
            f"--precision {','.join(s.precisions)}, but {model.path.name} computes in {fp} ({why}): its ONNX backends "
            f"run it at {fp} only",
            hint=f"drop --precision (the file is benched at {fp}, eager torch at fp32), or bench its fp32 export for "
            f"{wrong[0]} numbers",
        )
    return list(s.precisions), "--precision"


def torch_precision(precision: str, from_file: bool) -> str:
    """What the eager torch rows run at in the ``precision`` pass: fp32 where torch has no such path (int8, and
    bf16, a compute precision of ort-openvino) or where the precision is the file's own (an fp16 or int8 file is
    compared with the model as the user runs it)."""
    if precision in (INT8, BF16) or (from_file and precision != FP32):
        return FP32
    return precision


def benchmark(
    model: BenchModel,
    settings: BenchSettings,
    *,
    progress: Callable[[str, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    debug: bool = False,
) -> BenchReport:
    """Run the matrix and return the report (speedups filled in; environment recorded).

    Args:
        model: The model under test (:func:`~deployinc.bench.subject.open_onnx` / :func:`deployinc.api.resolve_model`).
        settings: Backends, batch sizes, precisions, counts, threads.
        progress: ``callable(description, advance)`` called as cells complete.
        log: ``callable(str)`` for notes (conversions). Skipped and failed backends are not logged: they are
            rows of the report, listed under its table.
        debug: Re-raise unexpected exceptions instead of recording the backend as failed.

    Raises:
        BadInputError: Bad settings, a batch size the model's static batch refuses, or a precision the file
            cannot run at (before anything runs).
    """
    s = settings
    s.validate()
    model.check_batches(s.batches)
    precisions, precision_source = resolve_precisions(model, s)
    from_file = s.precisions is None
    say = log or (lambda _m: None)
    tick = progress or (lambda _d, _n: None)
    if s.threads is None:
        s.threads = default_threads()
    timeout = s.measurement_timeout()
    torch_cuda = _setup_torch(s)
    builder = _Builder(model, s, say)
    load_before = _loadavg()
    others_before = other_cpu_use(0.2) if s.machine_probes else None
    if others_before is not None and others_before >= 0.25:
        say(
            f"warning: other processes are using {others_before:.1f} of {os.cpu_count()} CPUs: latencies will be noisy "
            "and ratios unfair (eager torch's OpenMP threads suffer most when descheduled)"
        )
    probe_link = s.machine_probes and int(s.threads) >= 2
    link_before = _round_trip() if probe_link else None
    cpu_start = _cpu_snapshot()
    report = _start_report(model, s, precisions, precision_source, timeout, torch_cuda)

    measured_torch: set[tuple[str, str]] = set()  # (backend, precision) of eager rows already measured
    for precision in precisions:
        shared: dict[str, Any] = {}  # backend -> activated runner reused across batch sizes
        skipped: dict[str, str] = {}  # backend -> reason, for every batch size
        stopped: dict[str, str] = {}  # backend -> why it is not tried again (timed out at a smaller batch size)
        tp = torch_precision(precision, from_file)
        for batch in s.batches:
            x = model.inputs(batch)
            cells: list[_Cell] = []
            for backend in s.backends:
                bp = tp if backend in TORCH_BACKENDS else precision
                if backend in TORCH_BACKENDS and (backend, bp) in measured_torch:
                    tick(f"{backend} {bp} b{batch}: measured already", s.rounds)  # at an earlier precision's pass
                    continue
                if backend in skipped:
                    tick(f"{backend} {bp} b{batch}: skipped", s.rounds)
                    continue
                if backend in stopped:
                    report.rows.append(BenchRow(backend, bp, batch, None, "failed", reason=stopped[backend]))
                    tick(f"{backend} {bp} b{batch}: not run", s.rounds)
                    continue
                if timeout is not None and backend not in TORCH_BACKENDS:
                    cells.append(_Cell(backend, None, None, "cpu", None, precision=bp, isolated=True))
                    continue
                per_batch = backend in _PER_BATCH or (s.cuda_graph and B.get(backend).cuda_graph and B.get(backend).onnx)
                runner = shared.get(backend)
                activate_s = None  # paid once, reported on the row of the batch size that built the runner
                try:
                    if runner is None:
                        tick(f"{backend} {bp}: building", 0)
                        runner = builder.build(backend, bp, batch)
                        runner.activate()
                        activate_s = runner.activate_seconds
                        if not per_batch:
                            shared[backend] = runner
                    steps = _steps(runner, x, s.cuda_graph and B.get(backend).cuda_graph)
                except BackendUnavailable as exc:
                    reason = _reason(exc)
                    if batch == s.batches[0]:  # unavailable from the start: skipped for every batch size
                        skipped[backend] = reason
                        report.rows.append(BenchRow(backend, bp, None, None, "skipped", reason=reason))
                    else:
                        report.rows.append(BenchRow(backend, bp, batch, None, "skipped", reason=reason))
                    tick(f"{backend} {bp} b{batch}: skipped", s.rounds)
                    if runner is not None and not per_batch:
                        shared.pop(backend, None)
                        runner.deactivate()
                    continue
                except Exception as exc:  # noqa: BLE001 - a runtime failing on one backend must not stop the others
                    if debug:
                        raise
                    reason = _reason(exc)
                    report.rows.append(BenchRow(backend, bp, batch, None, "failed", reason=reason, notes=[traceback.format_exc(limit=3)]))
                    tick(f"{backend} {bp} b{batch}: failed", s.rounds)
                    if runner is not None and backend not in shared:
                        runner.deactivate()
                    continue
                cells.append(_Cell(backend, runner, steps, getattr(runner, "device", "cpu"), activate_s, precision=bp))

            _measure_cells(cells, s, batch, tick, debug, model=model, x=x, timeout=timeout)
            _record(report, cells, s, batch, skipped, stopped, shared)
        for r in shared.values():
            r.deactivate()
        measured_torch |= {(b, tp) for b in s.backends if b in TORCH_BACKENDS}

    _finish_report(report, s, load_before, others_before, cpu_start, link_before if probe_link else False)
    return report


def _remeasurable(report: BenchReport) -> list[str]:
    """Labels of the measured rows that a new measurement may steady: unsteady for a reason other than the load
    average (a minute's average: measuring again at once does not move it)."""
    return [r.label() for r in report.ok_rows() if any(not x.startswith("load average") for x in r.unsteady_reasons())]


def benchmark_steady(model: BenchModel, settings: BenchSettings, *, retries: int = 1, **kwargs: Any) -> BenchReport:
    """:func:`benchmark`, run again (up to ``retries`` times) while a measured row is unsteady for a reason a new
    measurement can change (its rounds disagree, its p50 is over twice its minimum). Keeps the run with the fewer
    unsteady rows (the later one on a tie); ``config["remeasured"]`` says what was measured again, and a row still
    unsteady says so in its notes, so a figure that stays unsteady is marked, never passed off as steady."""
    report = benchmark(model, settings, **kwargs)
    for _ in range(retries):
        shaky = _remeasurable(report)
        if not shaky:
            break
        again = benchmark(model, settings, **kwargs)
        still = _remeasurable(again)
        if len(still) <= len(shaky):
            report = again
        report.config["remeasured"] = f"measured again once, as {', '.join(shaky)} {'was' if len(shaky) == 1 else 'were'} unsteady; kept the steadier run"
    for r in report.ok_rows():
        if r.unsteady_reasons() and "remeasured" in report.config:
            r.notes.append("measured again once: still unsteady")
    return report


def _finish_report(report: BenchReport, s: BenchSettings, load_before: Any, others_before: Any, cpu_start: Any, link_before: Any) -> None:
    """Speedups over eager torch, the machine's state before and after (``link_before`` False: not probed), and
    the environment."""
    report.compute_speedups(B.BASELINE)
    report.config["load_average"] = {"before": load_before, "after": _loadavg()}
    if s.machine_probes:
        report.config["other_cpu_use"] = {"before": others_before, "during": _others_since(cpu_start)}
    if link_before is not False:
        report.config["cpu_round_trip_ns"] = {"before": link_before, "after": _round_trip()}

    report.environment = bench_environment(s.threads)


def _setup_torch(s: BenchSettings) -> dict[str, Any]:
    """Threads and TF32 for the eager rows; the CUDA settings in force (empty when no torch backend runs)."""
    if not any(b in TORCH_BACKENDS for b in s.backends):
        return {}
    import torch

    quiet_torch_logs()
    torch.set_num_threads(int(s.threads or 1))
    # fp32 means fp32 on both sides: torch lets cuDNN convolutions use TF32 by default, ORT does not.
    torch.backends.cudnn.allow_tf32 = s.tf32
    torch.backends.cuda.matmul.allow_tf32 = s.tf32
    return {"cudnn_allow_tf32": s.tf32, "matmul_allow_tf32": s.tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}


def _start_report(model: BenchModel, s: BenchSettings, precisions: list[str], precision_source: str, timeout: float | None, torch_cuda: dict[str, Any]) -> BenchReport:
    """An empty report carrying what was asked."""
    return BenchReport(
        model=model.info(),
        config={
            "backends": list(s.backends),
            "batches": list(s.batches),
            "precisions": list(precisions),
            "precision_source": precision_source,
            "warmup": s.warmup,
            "iters": s.iters,
            "rounds": s.rounds,
            "threads": s.threads,
            "device": s.device,
            "cuda_graph": s.cuda_graph,
            "max_time_s": s.max_time_s,
            "timeout_s": s.timeout_s,
            "isolated_timeout_s": timeout,
            "tf32": s.tf32,
            "float_precision": s.float_precision,
            "torch_cuda_settings": torch_cuda,
            "timer": "time.perf_counter",
            "inputs": model.inputs_desc,
        },
        environment={},
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _record(report: BenchReport, cells: list[_Cell], s: BenchSettings, batch: int, skipped: dict[str, str], stopped: dict[str, str], shared: dict[str, Any]) -> None:
    """Rows for measured cells (a skip, a failure, or one row per timing mode), and runners released."""
    for c in cells:
        if c.skip is not None:
            if batch == s.batches[0]:
                skipped[c.backend] = c.skip
                report.rows.append(BenchRow(c.backend, c.precision, None, None, "skipped", reason=c.skip))
            else:
                report.rows.append(BenchRow(c.backend, c.precision, batch, None, "skipped", reason=c.skip))
            continue
        if c.error is not None:
            report.rows.append(BenchRow(c.backend, c.precision, batch, None, "failed", reason=c.error, device=c.device))
            if c.timed_out:
                stopped[c.backend] = f"not run: it timed out at batch {batch}"
            continue
        notes = list(c.notes) + (list(c.steps.notes) if c.steps is not None else [])
        for mode, samples in c.samples.items():
            report.rows.append(
                BenchRow(
                    backend=c.backend,
                    precision=c.precision,
                    batch=batch,
                    mode=mode,
                    status="ok",
                    device=c.device,
                    stats=summarize(samples, batch),
                    samples_ms=[round(v * 1e3, 6) for v in samples] if s.keep_samples else None,
                    stretch_p50_ms=stretch_p50s(samples, s.rounds if s.rounds > 1 else 3),
                    load_average=c.load,
                    cpus=os.cpu_count(),
                    activate_s=c.activate_s,
                    first_call_s=c.first.get(mode),
                    cuda_graph=bool(s.cuda_graph and any("CUDA graph" in n for n in notes)),
                    notes=notes + ([] if c.device != "cpu" else ["CPU: no host-device copies; compute = end to end"]),
                )
            )
        if c.isolated:
            continue
        if c.steps.close is not None:
            c.steps.close()
        if c.backend not in shared:
            c.runner.deactivate()


def _per_round(s: BenchSettings) -> list[int]:
    return [s.iters // s.rounds + (1 if r < s.iters % s.rounds else 0) for r in range(s.rounds)]


def _measure_round(c: _Cell, s: BenchSettings, n: int, r: int, budget: float | None) -> None:
    """Round ``r`` of cell ``c``: ``n`` samples of each of its modes (warm-up first in round 0)."""
    for mode, step in c.steps.modes().items():
        m = measure(
            step,
            iters=n,
            warmup=s.warmup if r == 0 else 1,
            sync=c.steps.sync,
            max_time_s=budget,
            min_iters=max(1, 5 // s.rounds),
            time_first=r == 0,
        )
        c.samples.setdefault(mode, []).extend(m.samples)
        if r == 0:
            c.first[mode] = m.first_call_s


def _measure_cells(
    cells: list[_Cell],
    s: BenchSettings,
    batch: int,
    tick: Callable[[str, int], None],
    debug: bool,
    *,
    model: BenchModel | None = None,
    x: np.ndarray | None = None,
    timeout: float | None = None,
) -> None:
    """Time every cell of one (precision, batch size), interleaving backends over ``s.rounds`` rounds; an
    isolated cell runs all its rounds in its own process, in its turn of the first round."""
    per_round = _per_round(s)
    budget = s.max_time_s / s.rounds if s.max_time_s is not None else None
    load_before = _loadavg()
    for r, n in enumerate(per_round):
        for c in cells:
            label = f"{c.backend} {c.precision} b{batch}"
            if c.isolated:
                if r == 0:
                    assert model is not None and x is not None and timeout is not None
                    tick(f"{label} (own process)", 0)
                    _measure_isolated(c, model, s, batch, x, timeout)
                    tick(label + (": failed" if c.error else ": skipped" if c.skip else ""), s.rounds)
                continue
            if c.error is not None:
                tick(f"{label}: failed", 1)
                continue
            tick(label + (f" round {r + 1}/{s.rounds}" if s.rounds > 1 else ""), 0)
            try:
                _measure_round(c, s, n, r, budget)
            except Exception as exc:  # noqa: BLE001 - record and go on with the other backends
                if debug:
                    raise
                c.error = _reason(exc)
            tick(label, 1)
    loads = [v[0] for v in (load_before, _loadavg()) if v]
    for c in cells:
        c.load = max(loads) if loads else None


def _measure_isolated(c: _Cell, model: BenchModel, s: BenchSettings, batch: int, x: np.ndarray, timeout: float) -> None:
    """Cell ``c`` measured in a subprocess stopped after ``timeout`` seconds (see the module docstring)."""
    label = f"{c.backend} {c.precision} b{batch}"
    if c.backend in B.GPU_BACKENDS:  # spares a subprocess without a GPU
        problem = env.cuda_driver_problem()
        if problem is not None:
            c.skip = f"{c.backend} cannot run: {problem}"
            return
    try:
        got = isolate.call_isolated(
            "deployinc.bench.harness:measure_in_subprocess", str(model.path), c.backend, c.precision, batch, x, s,
            timeout=timeout, label=label,
        )  # fmt: skip
    except BackendUnavailable as exc:
        c.skip = _reason(exc)
        return
    except BackendCrashed as exc:
        c.timed_out = "did not finish" in exc.message
        bound = (
            f"--timeout {s.timeout_s:g} s" if s.timeout_s is not None
            else f"the bound --max-time {s.max_time_s:g} implies: max({IMPLIED_TIMEOUT_FACTOR:g} x max-time, {IMPLIED_TIMEOUT_MIN_S:g} s); give --timeout to change it"
        )  # fmt: skip
        c.error = f"{'timed out' if c.timed_out else 'crashed'}: {exc.message} ({bound})"
        return
    except DeployincError as exc:
        c.error = _reason(exc)
        return
    except RuntimeError as exc:  # an unexpected error in the subprocess, with its traceback text
        c.error = _reason(exc)
        return
    c.samples, c.first, c.activate_s, c.device = got["samples"], got["first"], got["activate_s"], got["device"]
    c.notes = ["measured in its own process (bounded time): its rounds ran back to back", *got["notes"]]


def measure_in_subprocess(path: str, backend: str, precision: str, batch: int, x: np.ndarray, s: BenchSettings) -> dict[str, Any]:
    """One ONNX backend's measurement at one batch size, from session creation to the last round: what
    :func:`deployinc.isolate.call_isolated` runs in the subprocess of a bounded measurement. Returns its samples
    (seconds, by mode), first-call times, activation time, device and notes."""
    model = bench_subject.open_onnx(path)
    logged: list[str] = []
    runner = _Builder(model, s, logged.append).build(backend, precision, batch)
    runner.activate()
    try:
        steps = _steps(runner, x, s.cuda_graph and B.get(backend).cuda_graph)
        c = _Cell(backend, runner, steps, getattr(runner, "device", "cpu"), runner.activate_seconds, precision=precision)
        budget = s.max_time_s / s.rounds if s.max_time_s is not None else None
        try:
            for r, n in enumerate(_per_round(s)):
                _measure_round(c, s, n, r, budget)
        finally:
            if steps.close is not None:
                steps.close()
        return {"samples": c.samples, "first": c.first, "activate_s": c.activate_s, "device": c.device, "notes": list(steps.notes) + logged}
    finally:
        runner.deactivate()
