"""One timing method for every backend.

:func:`measure` is the only place deployinc takes a latency sample. The method, the same for every backend:

1. Warm-up runs, apart from the samples. The first of them is timed on its own and reported as the *first-run
   cost* of the backend (lazy work: cuDNN algorithm search, a TensorRT engine built on first inference, a
   ``torch.compile`` specialisation, a CUDA graph capture); the others are not timed.
2. Each sample is one call of the step, timed with :func:`time.perf_counter` (monotonic, the highest resolution
   clock Python has), with the device synchronised *before* the clock stops, so queued GPU work is never mistaken
   for finished work.
3. Every per-iteration sample is kept; :func:`summarize` turns them into p50/p90/p99, mean, std, min, max and a
   throughput in images per second (``batch * samples / total sampled time``).

The loop itself adds two ``perf_counter`` calls and a store per iteration (well under a microsecond); the step is
the backend's own call with nothing wrapped around it (``session.run`` bound with its arguments for ONNX Runtime
on the CPU). ``scripts/bench_overhead.py`` checks that against a bare loop.

Percentiles are numpy's default (linear interpolation between the two nearest ranks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.limits import ITERS_MAX, WARMUP_MAX
from ..errors import BadInputError


@dataclass(frozen=True)
class Stats:
    """Summary of the latency samples of one measurement, in milliseconds (throughput in images/s)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    iters: int
    throughput: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def summarize(samples_s: Sequence[float], batch: int) -> Stats:
    """Statistics of latency samples given in seconds; ``batch`` images per sample.

    Raises:
        ValueError: No samples.
    """
    if len(samples_s) == 0:
        raise ValueError("no samples to summarize")
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    total_s = float(a.sum()) / 1e3
    return Stats(
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        mean=float(a.mean()),
        std=float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        min=float(a.min()),
        max=float(a.max()),
        iters=int(len(a)),
        throughput=float(batch * len(a) / total_s) if total_s > 0 else math.inf,
    )


def stretch_p50s(samples_s: Sequence[float], parts: int, min_per_part: int = 5) -> list[float] | None:
    """p50 (ms) of each of ``parts`` consecutive stretches of the samples, in the order they were taken.

    A machine that changes speed during a run (a shared host, a VM whose virtual CPUs move, thermal throttling)
    shows here as stretches whose p50s disagree, where the overall statistics only look wide. None when there are
    fewer than ``min_per_part`` samples per stretch or fewer than two stretches.
    """
    n = len(samples_s)
    if parts < 2 or n < parts * min_per_part:
        return None
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return [float(np.median(chunk)) for chunk in np.array_split(a, parts)]


#: Stretches of one measurement whose p50s differ by more than this fraction: the machine changed speed.
UNSTEADY_LIMIT = 0.10
#: A p50 more than this many times the fastest sample: most samples waited (for a CPU another process held...).
SPREAD_LIMIT = 2.0
#: The 1-minute load average above the machine's core count by more than this many tasks: processes queued for a
#: CPU. The run's own threads count in it (a quiet machine running one benchmark thread per core sits at the core
#: count), hence the margin of one whole waiting task.
LOAD_MARGIN = 1.0


def unsteady_reasons(
    *,
    stretch_p50_ms: Sequence[float] | None = None,
    p50: float | None = None,
    min_ms: float | None = None,
    load: float | None = None,
    cpus: int | None = None,
    limit: float = UNSTEADY_LIMIT,
    spread: float = SPREAD_LIMIT,
) -> list[str]:
    """Why a measurement's figures are not steady enough to quote or rank by, one short reason per rule broken
    (empty: steady, or not enough to tell):

    * ``rounds disagree``: the p50s of its consecutive stretches (:func:`stretch_p50s`) differ by more than
      ``limit`` (10%): the machine changed speed during the run;
    * ``p50 is N x min``: the median is more than ``spread`` (2) times the fastest sample: most samples waited;
    * ``load average L on C cores``: the 1-minute load average (read before and after, the larger) was above
      ``cpus + LOAD_MARGIN``: processes queued for the CPUs. It lags (a minute's average), so the spread rule is the
      more immediate of the two.
    """
    out = []
    p = [float(v) for v in stretch_p50_ms] if stretch_p50_ms else []
    if len(p) >= 2 and all(math.isfinite(v) for v in p) and min(p) > 0 and max(p) / min(p) - 1 > limit:
        lo, hi = min(p), max(p)
        out.append(f"rounds disagree: p50 of {len(p)} stretches ranged {lo:.4g}-{hi:.4g} ms ({100 * (hi / lo - 1):.0f}% apart; limit {limit:.0%})")
    if p50 is not None and min_ms is not None and math.isfinite(p50) and math.isfinite(min_ms) and min_ms > 0 and p50 > spread * min_ms:
        out.append(f"p50 is {p50 / min_ms:.1f} x min ({p50:.4g} vs {min_ms:.4g} ms; limit {spread:g} x)")
    if load is not None and cpus and math.isfinite(load) and load > cpus + LOAD_MARGIN:
        out.append(f"load average {load:.2f} on {cpus} cores")
    return out


@dataclass
class Measurement:
    """What :func:`measure` returns: the samples (seconds) and the first call's time (seconds, or None)."""

    samples: list[float]
    first_call_s: float | None
    warmup: int


def check_counts(warmup: int, iters: int) -> None:
    """Refuse non-positive warm-up or iteration counts.

    Raises:
        BadInputError: ``warmup`` or ``iters`` below 1 or above :data:`deployinc.core.limits.WARMUP_MAX` /
            :data:`deployinc.core.limits.ITERS_MAX`.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise BadInputError(f"--iters {iters!r} must be a positive integer", hint=f"allowed: 1..{ITERS_MAX}; e.g. --iters 100")
    if iters > ITERS_MAX:  # every sample is kept: 10 million of them are 80 MB
        raise BadInputError(f"--iters {iters} is above the maximum {ITERS_MAX}", hint=f"allowed: 1..{ITERS_MAX}; e.g. --iters 100, or --max-time to bound by time")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise BadInputError(
            f"--warmup {warmup!r} must be a positive integer",
            hint="at least one warm-up run is needed (its time is reported as the first-run cost); e.g. --warmup 10",
        )
    if warmup > WARMUP_MAX:
        raise BadInputError(f"--warmup {warmup} is above the maximum {WARMUP_MAX}", hint=f"allowed: 1..{WARMUP_MAX}; e.g. --warmup 10")


def measure(
    step: Callable[[], Any],
    *,
    iters: int,
    warmup: int,
    sync: Callable[[], Any] | None = None,
    max_time_s: float | None = None,
    min_iters: int = 5,
    time_first: bool = True,
) -> Measurement:
    """Time ``step`` with deployinc's one method (see the module docstring).

    Args:
        step: One inference, with everything it needs bound (no arguments).
        iters: Samples to take.
        warmup: Warm-up calls before sampling (at least 1); the first is timed when ``time_first``.
        sync: Waits for the device (``torch.cuda.synchronize``...); called before each clock stop. None on the CPU.
        max_time_s: Stop sampling once this much time has been sampled (after at least ``min_iters`` samples),
            so slow backends fit a time budget; the number actually taken is in the result.
        min_iters: Least number of samples when ``max_time_s`` stops early.
        time_first: Time the first warm-up call (first-run cost); False for later rounds of one measurement.
    """
    check_counts(warmup, iters)
    clock = time.perf_counter
    first: float | None = None
    for i in range(warmup):
        if i == 0 and time_first:
            t0 = clock()
            step()
            if sync is not None:
                sync()
            first = clock() - t0
        else:
            step()
    if sync is not None:
        sync()
    samples = [0.0] * iters
    spent = 0.0
    n = iters
    # Two loops rather than one with branches, so the common case (CPU, no budget) is as bare as it can be.
    if sync is None and max_time_s is None:
        for i in range(iters):
            t0 = clock()
            step()
            samples[i] = clock() - t0
    else:
        for i in range(iters):
            t0 = clock()
            step()
            if sync is not None:
                sync()
            dt = clock() - t0
            samples[i] = dt
            spent += dt
            if max_time_s is not None and spent >= max_time_s and i + 1 >= min_iters:
                n = i + 1
                break
    return Measurement(samples=samples[:n], first_call_s=first, warmup=warmup)
