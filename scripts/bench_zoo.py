#!/usr/bin/env python
"""Export every export_configs/ model and benchmark it; write docs/benchmarks/<machine>.md (and .json).

A thin driver over the public API (:func:`deployinc.export.export_pipeline`, :func:`deployinc.bench.benchmark`).
Every number in the Markdown comes from this run: eager torch, fused eager torch, (torch.compile,) and ONNX Runtime
are measured in the same process with the same thread count, interleaved over rounds so that a noisy spell on a
shared machine falls on all of them alike; the speedups are ratios of p50 latencies from that same run.

    python scripts/bench_zoo.py                                   # every config; this CPU: batch 1 and 8
    python scripts/bench_zoo.py --models googlenet,resnet50 --iters 50
    python scripts/bench_zoo.py --backends torch,torch-fused,ort-cuda,ort-trt,trt-engine --batch 1,8,32 \\
        --precision fp32,fp16 --machine h100                       # what scripts/bench_gpu_server.sh runs

Exit status: 0 when every CPU target below is met (or not applicable), 1 when one is not (the report is written
either way, with the real ratios), 2 on bad input.

CPU targets (ORT CPU fp32 vs plain eager torch at batch 1, same run): at least 3x for googlenet and mobilenet_v2,
at least 1.5x for resnet50 and inception_v3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployinc.core.env import machine_slug  # noqa: E402
from deployinc.core.table import Table  # noqa: E402
from deployinc.errors import DeployincError  # noqa: E402

TARGETS = {"googlenet": 3.0, "mobilenet_v2": 3.0, "resnet50": 1.5, "inception_v3": 1.5}


def zoo_models(selected: str | None) -> list[str]:
    """Models with a config in export_configs/ (the repository's, else the bundled ones)."""
    cfg_dir = ROOT / "export_configs"
    names = sorted(p.stem for p in cfg_dir.glob("*.toml")) if cfg_dir.is_dir() else []
    if not names:
        from deployinc.config import bundled_configs

        names = bundled_configs()
    if selected:
        wanted = [m.strip() for m in selected.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in names]
        if unknown:
            raise SystemExit(f"error: no export config for {unknown}\nhint: configs: {', '.join(names)}")
        return wanted
    return names


def summary_table(reports: dict[str, object], batches: list[int], backends: list[str], precision: str = "fp32") -> list[str]:
    """One line per model and batch: p50 of each backend (ms) and its speedup over plain eager torch."""
    cols = [b for b in backends if b != "torch"]
    head = ["model", "batch", "mode", "torch p50 ms"] + [f"{b} p50 ms (x eager)" for b in cols]
    body = []
    for name, rep in reports.items():
        for batch in batches:
            for mode in ("compute", "e2e"):
                base = rep.find("torch", precision, batch, mode)  # type: ignore[attr-defined]
                cells = []
                any_row = base is not None
                for b in cols:
                    r = rep.find(b, precision, batch, mode)  # type: ignore[attr-defined]
                    if r is None:
                        cells.append("-")
                        continue
                    any_row = True
                    sp = f" ({r.speedup:.2f}x; min {r.speedup_min:.2f}x)" if r.speedup is not None and r.speedup_min else ""
                    cells.append(f"{r.stats.p50:.2f}{sp}")
                if not any_row:
                    continue
                body.append([name, str(batch), mode, f"{base.stats.p50:.2f}" if base else "-", *cells])
    return Table(head, body).markdown_lines()


BUSY = 0.10  # CPUs kept busy by other processes above which a run counts as disturbed (--busy-threshold)


def wait_quiet(max_seconds: float, sample: float = 5.0, quiet: float = 0.15) -> tuple[float, float | None]:
    """Wait until other processes use less than ``quiet`` CPUs over ``sample`` seconds, at most ``max_seconds``."""
    from deployinc.bench.harness import other_cpu_use

    t0 = time.perf_counter()
    while True:
        others = other_cpu_use(sample)
        if others is None or others < quiet or time.perf_counter() - t0 >= max_seconds:
            return time.perf_counter() - t0, others
        time.sleep(sample)


def busy_note(reports: dict[str, object], threshold: float = BUSY) -> list[str]:
    """A warning paragraph when the machine was busy at the start of a model's run (load average vs CPUs)."""
    from deployinc.bench.harness import default_threads

    busy = []
    # The threshold is in CPUs for a 2-CPU machine; on a bigger one a few background daemons are no disturbance.
    limit = max(threshold, threshold * default_threads() / 2)
    for name, rep in reports.items():
        during = (rep.config.get("other_cpu_use") or {}).get("during")  # type: ignore[attr-defined]
        if during is not None and during >= limit:
            busy.append(f"{name} ({during:.2f} CPUs)")
    if not busy:
        return []
    return [
        f"**The machine was shared**: other processes kept CPUs busy while these ran: {', '.join(busy)}, "
        f"of {default_threads()} usable CPUs. "
        "Latencies are noisier than on a quiet machine and eager torch (OpenMP threads that wait for each other) "
        "suffers more than ONNX Runtime; the rounds interleave the backends so both see the same load.",
        "",
    ]


def check_targets(reports: dict[str, object]) -> tuple[list[str], bool]:
    """Lines on the CPU targets (ORT CPU fp32 b1 over plain eager) and whether all that apply are met."""
    lines, ok = [], True
    for name, need in TARGETS.items():
        rep = reports.get(name)
        if rep is None:
            continue
        r = rep.find("ort-cpu", "fp32", 1, "e2e")  # type: ignore[attr-defined]
        if r is None or r.speedup is None:
            lines.append(f"- {name}: target {need:.1f}x not measurable (ORT CPU or eager torch did not run)")
            continue
        met = r.speedup >= need
        ok &= met
        mn = f"; ratio of minimum latencies {r.speedup_min:.2f}x" if r.speedup_min else ""
        link = rep.round_trips()  # type: ignore[attr-defined]
        where = f"; CPUs' round trip {link.get('before')} / {link.get('after')} ns before / after" if link else ""
        if rep.link_lines():  # type: ignore[attr-defined]
            where += ", changed during the run: its rounds mix two placements of the CPUs"
        lines.append(
            f"- {name}: ORT CPU over eager torch at batch 1 = **{r.speedup:.2f}x** (ratio of p50s{mn}; target "
            f"{need:.1f}x{where}): {'met' if met else 'NOT met'}"
        )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all", help="comma-separated model names, or all (every export_configs/ model)")
    ap.add_argument("--backends", default="torch,torch-fused,torch-compile,ort-cpu")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3, help="interleave the backends over this many rounds")
    ap.add_argument("--max-time", type=float, default=45.0, help="seconds of samples per backend and batch at most")
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--cuda-graph", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--machine", default=None, help="report name (default: the GPU, CPU family and usable CPUs, e.g. cpu-amd-epyc-2cpu)")
    ap.add_argument("--out-dir", default=str(ROOT / "docs" / "benchmarks"))
    ap.add_argument("--workdir", default=None, help="where exported ONNX files go (default: a temporary folder)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing report")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each model, wait up to SECONDS for other processes to leave the CPUs idle")
    ap.add_argument("--retry-busy", type=int, default=0, metavar="N",
                    help="measure a model again (up to N times) when other processes kept CPUs busy during its run")
    ap.add_argument("--busy-threshold", type=float, default=BUSY, metavar="CPUS",
                    help=f"CPUs used by other processes during a run above which it counts as disturbed (default {BUSY})")
    args = ap.parse_args(argv)

    import tempfile

    from deployinc.bench import BenchSettings, benchmark, open_onnx
    from deployinc.bench.environment import environment_lines
    from deployinc.cli.bench import parse_bench_backends
    from deployinc.cli.options import parse_int_list
    from deployinc.export import export_pipeline
    from deployinc.io import atomic_write_text, check_output_path

    try:
        backends = parse_bench_backends(args.backends)
        batches = parse_int_list(args.batch, "--batch")
        precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
        models = zoo_models(None if args.models == "all" else args.models)
        machine = args.machine or machine_slug(accelerator=True)
        out_dir = Path(args.out_dir)
        md_path, json_path = out_dir / f"{machine}.md", out_dir / f"{machine}.json"
        for p in (md_path, json_path):
            check_output_path(p, args.force)
    except DeployincError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 2

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="deployinc-zoo-"))
    work.mkdir(parents=True, exist_ok=True)
    reports, export_s = {}, {}
    t_all = time.perf_counter()
    for name in models:
        onnx_path = work / f"{name}.onnx"
        if not onnx_path.exists():
            print(f"[{name}] exporting", file=sys.stderr, flush=True)
            t = time.perf_counter()
            export_pipeline(name, out=onnx_path, threads=args.threads, quick_check=False)
            export_s[name] = time.perf_counter() - t
        settings = BenchSettings(
            machine_probes=True,
            backends=backends, batches=batches, precisions=precisions, warmup=args.warmup, iters=args.iters,
            threads=args.threads, device=args.device, cuda_graph=args.cuda_graph, rounds=args.rounds,
            max_time_s=args.max_time,
        )  # fmt: skip
        for attempt in range(args.retry_busy + 1):
            if args.wait_quiet > 0:
                waited, others = wait_quiet(args.wait_quiet)
                print(f"[{name}] waited {waited:.0f} s for a quiet machine (others use {others} CPUs)", file=sys.stderr, flush=True)
            print(f"[{name}] benchmarking {','.join(backends)} at batch {args.batch}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            rep = benchmark(
                open_onnx(onnx_path), settings, log=lambda m, n=name: print(f"[{n}] {m}", file=sys.stderr, flush=True)
            )
            during = (rep.config.get("other_cpu_use") or {}).get("during")
            if during is None or during < args.busy_threshold or attempt == args.retry_busy:
                break
            print(f"[{name}] other processes kept {during:.2f} CPUs busy during the run: measuring again", file=sys.stderr, flush=True)
        rep.config["attempts"] = attempt + 1
        rep.model["exported_from"] = name
        reports[name] = rep
        print(rep.render(), flush=True)
        print(f"[{name}] {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

    first = next(iter(reports.values()))
    target_lines, targets_ok = check_targets(reports)
    md = [
        f"# Benchmarks: {machine}",
        "",
        f"Produced by `python scripts/bench_zoo.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"on {first.created} ({time.perf_counter() - t_all:.0f} s). Every number below was printed by that run; "
        "ratios compare backends measured in the same process, with the same thread count, interleaved over "
        f"{args.rounds} round(s). Latency is p50 over per-iteration samples (time.perf_counter); models have "
        "seeded random weights with BatchNorm statistics recalibrated on natural-image statistics, which does not "
        "change their speed.",
        "",
        *busy_note(reports, args.busy_threshold),
        "## Environment",
        "",
        *[f"- {line}" for line in environment_lines(first.environment)],
        "",
    ]
    for prec in precisions:
        md += [
            f"## Summary, {prec} (p50 latency in ms; in brackets the speedup over plain eager torch at {prec}, same "
            "batch size and mode: ratio of p50s, then ratio of minimum latencies, which a busy machine disturbs less)",
            "",
            *summary_table(reports, batches, backends, prec),
            "",
        ]
    if "ort-cpu" in backends and "torch" in backends and "fp32" in precisions and 1 in batches:
        md += ["## CPU targets", "", *target_lines, ""]
    md += ["## Per model", ""]
    for name, rep in reports.items():
        md.append(rep.to_markdown(title=name, environment=False, level=3))
    atomic_write_text(md_path, "\n".join(md), force=args.force)
    blob = {"machine": machine, "export_seconds": export_s, "reports": {n: r.to_dict() for n, r in reports.items()}}
    atomic_write_text(json_path, json.dumps(blob, indent=1, default=str) + "\n", force=args.force)
    for prec in precisions:
        print(f"{prec}:")
        print("\n".join(summary_table(reports, batches, backends, prec)))
    print("\n".join(target_lines))
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0 if targets_ok else 1


if __name__ == "__main__":
    sys.exit(main())
