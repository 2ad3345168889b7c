"""Benchmarks: one timing method for every backend, the backend x batch x precision matrix, reports, and the
regression gate.

    >>> from deployinc.bench import BenchSettings, benchmark, open_onnx
    >>> model = open_onnx("googlenet.onnx")
    >>> report = benchmark(model, BenchSettings(backends=["torch", "ort-cpu"], batches=[1, 8], threads=2))
    >>> print(report.render())

Modules: :mod:`.timing` (the method and the statistics), :mod:`.harness` (the matrix), :mod:`.subject` (the model
and its inputs), :mod:`.report` (rows and writers), :mod:`.regression` (``--baseline``), :mod:`.environment`
(the environment record, extending :mod:`deployinc.core.env`). A model name is exported, then benchmarked, by
:func:`deployinc.api.benchmark_model` (bench itself does not export).
"""

from __future__ import annotations

from .harness import BenchSettings, benchmark, default_threads
from .regression import RegressionResult, compare, load_baseline
from .report import BenchReport, BenchRow
from .subject import BenchModel, open_onnx
from .timing import Measurement, Stats, measure, summarize

__all__ = [
    "BenchModel",
    "BenchReport",
    "BenchRow",
    "BenchSettings",
    "Measurement",
    "RegressionResult",
    "Stats",
    "benchmark",
    "compare",
    "default_threads",
    "load_baseline",
    "measure",
    "open_onnx",
    "summarize",
]
