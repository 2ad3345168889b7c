"""``deployinc bench``: time a model on every backend against eager PyTorch, write reports, gate regressions."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import backends as B
from ..backends import parse_backends
from ..core import limits
from ..core.precisions import BF16
from ..errors import BackendUnavailable, BadInputError, CheckFailed
from ..io import atomic_write_bytes, atomic_write_text, check_output_path
from ..lazy import require
from . import groups as G
from .options import check_onnx_input_memory, float_in, parse_batches

_ALL = B.BENCH_DEFAULT


@click.command()
@click.argument("model")
@G.backends("Comma-separated backends (unavailable ones are skipped with the reason).", default=_ALL)
@G.batch("Batch sizes to sweep, e.g. 1,8,32.", default="1")
@G.precisions("Precisions: fp32, fp16, bf16, int8 (comma-separated; bf16: what " + B.compute_text(BF16) + " computes in, other backends skip it). Default: what the file computes in (an fp16 or int8 file at its own precision; eager torch at fp32).")
@G.float_precision()
@G.warmup(10, "Warm-up runs before timing (the first is reported as first-run cost).")
@G.iters(100, f"Timed iterations per measurement, 1..{limits.ITERS_MAX}.")
@G.rounds()
@G.max_time()
@G.timeout("Seconds one ONNX backend measurement (session, warm-up, every round at one batch size) may take; it runs in its own process, is stopped past this and reported as failed. Eager torch rows run in this process, unbounded. Default: none (all in process).",
           callback=float_in(0, limits.MAX_TIME_S_MAX, lo_open=True, example="600"))
@G.threads()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Where eager torch runs.")
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs (ORT CUDA/TensorRT providers, eager torch on CUDA).")
@click.option("--tf32", is_flag=True, help="Allow TF32 for fp32 convolutions and matmuls on GPUs, in torch and ORT alike (off: fp32 is fp32).")
@G.json_report()
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write one CSV line per result.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), default=None, help="Write a Markdown report.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG of latency vs batch size (needs matplotlib).")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="Earlier --json report to compare with; exit 1 on a regression.")
@click.option("--max-slowdown", type=float, default=None, callback=float_in(1.0, 1000.0, example="1.10"), help="Largest allowed p50 ratio to the baseline (default 1.10).")
@G.inputs("Bench on these inputs: an .npz from deployinc verify --save-inputs (its 'input' array), or an .npy of normalised N x C x H x W floats (default: seeded natural-image statistics).", type=click.Path(dir_okay=False))
@G.reference("The PyTorch model of the torch rows for a file without deployinc metadata: package.module:function or a model name (as verify --reference).")
@G.weights("Checkpoint for --reference (or the new path of the checkpoint the file records).")
@click.option("--no-progress", is_flag=True, help="No progress bar (on a terminal) or progress lines (elsewhere).")
@click.option("--machine-probes", is_flag=True, help="Also record how busy the machine is (a 0.2 s sample) and how far apart its CPUs are (a forked cache-line round trip, before and after): for studying a VM.")
@G.trust_model_code("Rebuild a package.module:function model recorded in the file for the torch baselines (imports and runs that code).")
@G.force()
def bench(
    model: str,
    backends: str,
    batch: str,
    precisions: str | None,
    float_precision: str | None,
    warmup: int,
    iters: int,
    rounds: int,
    max_time: float | None,
    timeout: float | None,
    threads: int | None,
    device: str,
    cuda_graph: bool,
    tf32: bool,
    json_path: str | None,
    csv_path: str | None,
    md_path: str | None,
    plot_path: str | None,
    baseline: str | None,
    max_slowdown: float | None,
    inputs: str | None,
    reference: str | None,
    weights: str | None,
    no_progress: bool,
    machine_probes: bool,
    trust_model_code: bool,
    force: bool,
) -> None:
    """Benchmark MODEL (an .onnx file, or a model name exported on the fly) on every backend vs eager torch.

    \b
      deployinc bench googlenet.onnx
      deployinc bench googlenet.onnx --backends torch,ort-cpu,ort-cuda --batch 1,8,32 --precision fp32,fp16
      deployinc bench resnet50 --warmup 20 --iters 200 --threads 2 --json out.json --md out.md --plot out.png
      deployinc bench googlenet.onnx --backends torch,ort-cpu,ort-openvino --precision fp32,bf16
      deployinc bench googlenet.onnx --baseline last.json --max-slowdown 1.10
      deployinc bench googlenet-int8.onnx --backends openvino --float-precision bf16   # int8, float layers in bf16
      deployinc bench model.onnx --reference mypkg.nets:build --weights ckpt.pt --inputs inputs.npz --timeout 300

    Latency is p50/p90/p99/mean/std/min over per-iteration samples (time.perf_counter, device synchronised before
    the clock stops); throughput is images/s. On a GPU, compute (inputs and outputs on the device) and e2e (with
    the host copies) are reported apart. First-run cost (session creation, engine build) is reported apart.

    Exit codes: 0 done, 1 a measurement failed (or timed out) or a regression beyond --max-slowdown, 2 bad input
    or nothing could run here.
    """
    # lazy: bench imports numpy and the runners; keeps them out of deployinc --help
    from ..bench import harness, regression, report as bench_report, subject as bench_subject, timing
    from .. import api  # lazy: api imports bench and export (numpy, torch); keeps them out of deployinc --help

    # Everything the user typed is checked before a model is loaded or a minute is spent.
    names = parse_bench_backends(backends)
    batches = parse_batches(batch)
    precision_list = harness.check_precisions(precisions.split(",")) if precisions is not None else None
    timing.check_counts(warmup, iters)
    settings = harness.BenchSettings(
        backends=names, batches=batches, precisions=precision_list, warmup=warmup, iters=iters, threads=threads,
        device=device, cuda_graph=cuda_graph, rounds=rounds, max_time_s=max_time, tf32=tf32, timeout_s=timeout,
        machine_probes=machine_probes, float_precision=float_precision,
    )  # fmt: skip
    settings.validate()
    outputs = [p for p in (json_path, csv_path, md_path, plot_path) if p]
    if len({str(p) for p in outputs}) != len(outputs):
        raise BadInputError("two report options name the same file", hint="give --json, --csv, --md and --plot different paths")
    for p in outputs:
        check_output_path(p, force)
    if plot_path:
        require("matplotlib", "--plot")
    base_report = None
    if max_slowdown is not None and baseline is None:
        raise BadInputError("--max-slowdown needs --baseline", hint="deployinc bench MODEL --baseline last.json --max-slowdown 1.10")
    if baseline is not None:
        max_slowdown = 1.10 if max_slowdown is None else max_slowdown
        regression.check_max_slowdown(max_slowdown)
        base_report = regression.load_baseline(baseline)

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    # inputs are made (and kept) for every batch size; the file's input size is read when the sum is large
    is_file = bench_subject.looks_like_onnx_path(model)
    if reference is not None and not is_file:
        raise BadInputError(f"--reference goes with an .onnx file; {model} is a model name, exported and benched as it is", hint=f"drop --reference, or bench an .onnx file: deployinc bench FILE.onnx --reference {reference}")
    if inputs is not None:
        from pathlib import Path

        if not inputs.endswith((".npz", ".npy")):
            raise BadInputError(f"--inputs {inputs} is not an .npz or .npy file", hint="give the .npz that deployinc verify --save-inputs wrote")
        if not Path(inputs).exists():  # what else is wrong with it, the reader says
            raise BadInputError(f"--inputs file {inputs} does not exist", hint="write one with deployinc verify MODEL --save-inputs FILE.npz")
    if is_file:
        check_onnx_input_memory(model, [("--batch", batch, sum(batches))])
    with api.resolve_model(model, threads=threads, log=log, trust_code=trust_model_code) as subject:
        limits.check_input_memory("--batch", batch, sum(batches), subject.chw)  # a model exported on the fly
        if weights is not None and reference is None:
            if subject.provenance is None:
                raise BadInputError("--weights goes with --reference for a file without deployinc metadata", hint="deployinc bench FILE.onnx --reference package.module:function --weights ckpt.pt")
            subject.weights = weights  # the recorded checkpoint moved
        if inputs is not None:
            subject.use_inputs(inputs)
        if reference is not None and any(b.startswith("torch") for b in names):
            subject.use_reference(reference, weights, log=log)
        if base_report is not None:
            regression.check_same_model(bench_report.BenchReport(model=subject.info(), config={}, environment={}), base_report, baseline or "")
        subject.check_batches(batches)
        with _progress(settings, no_progress) as tick:
            report = harness.benchmark(subject, settings, progress=tick, log=log)

    _write_reports(report, json_path, csv_path, md_path, plot_path, force, log)
    _judge(report, base_report, baseline, max_slowdown, log, regression.compare)


def _write_reports(report: Any, json_path: str | None, csv_path: str | None, md_path: str | None, plot_path: str | None, force: bool, log: Any) -> None:
    """The table on screen, then every report file asked for (atomically)."""
    console = _console()
    text = report.render(console)
    if console is None:
        click.echo(text)
    for p, data in (
        (json_path, lambda: report.to_json()),
        (csv_path, lambda: report.to_csv()),
        (md_path, lambda: report.to_markdown()),
    ):
        if p:
            atomic_write_text(p, data(), force=force)
            log(f"wrote {p}")
    if plot_path:
        atomic_write_bytes(plot_path, report.plot_png(), force=force)
        log(f"wrote {plot_path}")


def _judge(report: Any, base_report: Any, baseline: str | None, max_slowdown: float | None, log: Any, compare: Any) -> None:
    """Exit 2 when nothing could run, 1 on a failed measurement or a regression beyond --max-slowdown (``compare``:
    :func:`deployinc.bench.regression.compare`)."""
    during = (report.config.get("other_cpu_use") or {}).get("during")
    if during is not None and during >= 0.25:
        log(f"note: other processes kept {during:.2f} CPUs busy on average during the run; rerun on a quiet machine for numbers to publish")
    failed = report.failed()
    if not report.ok_rows() and not failed:
        reasons = "; ".join(f"{r.backend}: {r.reason}" for r in report.skipped())
        raise BackendUnavailable(
            f"none of the requested backends can run here ({reasons[:600]})",
            hint="the reasons are listed under the table; add --backends ort-cpu, or run where the GPU and libraries they need are",
        )
    if base_report is not None and not report.ok_rows():
        raise CheckFailed(f"{len(failed)} measurement(s) failed and none ran: nothing to compare with baseline {baseline}", hint="the reasons are listed under the table")
    if base_report is not None:
        assert max_slowdown is not None
        result = compare(report, base_report, max_slowdown, baseline or "")
        for note in result.notes:
            log(f"note: {note}")
        for line in result.lines():
            click.echo(f"baseline: {line}")
        if not result.passed:
            worst = max(result.regressions, key=lambda c: c.ratio)
            raise CheckFailed(
                f"slower than baseline {baseline} by more than x{max_slowdown:.2f}: {', '.join(result.backends())} "
                f"(worst {worst.label()}: x{worst.ratio:.2f})",
                hint="rerun on a quiet machine to confirm; compare the environments recorded in both reports",
            )
        click.echo(f"baseline: no regression beyond x{max_slowdown:.2f} over {len(result.compared)} result(s)")
    if failed:
        raise CheckFailed(
            f"{len(failed)} measurement(s) failed: {', '.join(dict.fromkeys(r.backend for r in failed))}",
            hint="the reasons are listed under the table; rerun with --debug for tracebacks",
        )


def parse_bench_backends(text: str) -> list[str]:
    """Backend names from the one table (:mod:`deployinc.backends`): the same names, with the same meaning, as
    ``verify --providers``.

    Raises:
        BadInputError: An unknown name (the known are listed) or none at all.
    """
    return parse_backends(text, option="--backends")


def _console() -> Any:
    """A rich console where stdout is a terminal (or rich is told it is: TTY_COMPATIBLE=1, FORCE_COLOR), else None
    (plain text, for pipes and files). Its width is the terminal's, or COLUMNS."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    console = Console()
    return console if console.is_terminal else None


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds) + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _eta(elapsed: float, done: float, total: float) -> str:
    """Time left at the average pace so far (every measurement of the matrix has the same iteration count)."""
    if done <= 0 or total <= done:
        return "-:--:--" if done <= 0 else "0:00:00"
    return _clock(elapsed / done * (total - done))


class _progress:
    """A rich progress bar over the matrix (with the time elapsed and an ETA) where stderr is a terminal; a
    line per finished measurement elsewhere (at most one every :attr:`EVERY_S` seconds, and the last); nothing
    with ``--no-progress``."""

    EVERY_S = 2.0

    def __init__(self, settings: Any, disabled: bool):
        n_prec = len(settings.precisions) if settings.precisions else 1
        self.total = len(settings.backends) * len(settings.batches) * n_prec * settings.rounds
        self.disabled = disabled
        self.bar: Any = None
        self.plain = False
        self.done = 0
        self.start = 0.0
        self.last_line = -1e9

    def __enter__(self) -> Any:
        import time

        self.start = time.monotonic()
        if self.disabled:
            return self.tick
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
            from rich.text import Text
        except ImportError:
            self.plain = not sys.stderr.isatty()
            return self.tick
        console = Console(stderr=True)
        if not console.is_terminal:
            self.plain = True
            return self.tick

        class EtaColumn(ProgressColumn):
            """Time left at the average pace so far (rich's own estimate needs updates within 30 s)."""

            def render(self, task: Any) -> Any:
                elapsed = task.elapsed or 0.0
                return Text(f"eta {_eta(elapsed, task.completed, task.total or 0)}", style="progress.remaining")

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), EtaColumn(),
            console=console, transient=True,
        )  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("bench", total=self.total)
        return self.tick

    def tick(self, description: str, advance: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=description, advance=advance)
            return
        if not self.plain or advance <= 0:
            return
        import time

        self.done = min(self.total, self.done + advance)
        now = time.monotonic()
        if now - self.last_line < self.EVERY_S and self.done < self.total:
            return
        self.last_line = now
        elapsed = now - self.start
        click.echo(f"progress: {self.done}/{self.total} {description} (elapsed {_clock(elapsed)}, eta {_eta(elapsed, self.done, self.total)})", err=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
