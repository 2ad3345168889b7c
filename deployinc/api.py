"""Library forms that compose stages (a layer above them, beside the CLI): a model name is exported into a temporary
folder (the export stage), then benchmarked (the bench stage), so that bench itself never exports.

    >>> from deployinc.api import benchmark_model
    >>> print(benchmark_model("googlenet", "torch,ort-cpu", [1, 8], iters=50, threads=2).render())
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .bench.harness import BenchSettings, benchmark
from .bench.report import BenchReport
from .bench.subject import BenchModel, looks_like_onnx_path, open_onnx
from .export import export_pipeline
from .io import scratch_dir


@contextlib.contextmanager
def resolve_model(model: str, threads: int | None = None, log: Any = None, trust_code: bool = False) -> Iterator[BenchModel]:
    """Yield a :class:`~deployinc.bench.subject.BenchModel` for an ``.onnx`` path, or for a model name exported into a
    temporary folder through :func:`deployinc.export.export_pipeline` (its bundled export config applies) and removed
    afterwards."""
    if looks_like_onnx_path(model):
        yield open_onnx(model, trust_code=trust_code)
        return

    with scratch_dir("bench") as tmp:  # a killed run's folder is removed by the next run
        if log:
            log(f"exporting {model} (deployinc export {model}) into a temporary folder")
        result = export_pipeline(model, out=Path(tmp) / "model.onnx", threads=threads, quick_check=False, log=log)
        assert result.path is not None
        yield open_onnx(result.path, exported_from=model, trust_code=True)  # the user named this model


def benchmark_model(
    model: str | os.PathLike[str],
    backends: list[str] | str = "torch,torch-fused,ort-cpu",
    batches: list[int] | int = 1,
    *,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> BenchReport:
    """Benchmark an ``.onnx`` file or a model name (exported into a temporary folder): the library form of
    ``deployinc bench``.

    Args:
        model: Path of an ONNX file, or a model name (``googlenet``, ``timm/<name>``, ``package.module:function``).
        backends: Backend names (list or comma-separated).
        batches: Batch sizes.
        log: ``callable(str)`` for notes.
        **settings: Other :class:`BenchSettings` fields (precisions, warmup, iters, threads, device, cuda_graph,
            rounds, max_time_s).

    Example::

        report = benchmark_model("googlenet.onnx", "torch,ort-cpu", [1, 8], iters=50, threads=2)
        print(report.render())
    """
    names = backends.split(",") if isinstance(backends, str) else list(backends)
    s = BenchSettings(backends=[n.strip() for n in names if n.strip()], batches=[batches] if isinstance(batches, int) else list(batches), **settings)
    s.validate()
    with resolve_model(str(model), threads=s.threads, log=log) as subject:
        return benchmark(subject, s, log=log)
