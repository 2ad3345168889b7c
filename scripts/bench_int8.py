#!/usr/bin/env python
"""int8 on this CPU: accuracy against eager torch fp32 and batch-1 latency against fp32 ONNX Runtime, in one run.

A thin driver over deployinc's library; every number in the report comes from it:

- export: :func:`deployinc.export.export_pipeline` (the library form of ``deployinc export``);
- int8: :func:`deployinc.precision.int8.quantize_int8` and :func:`~deployinc.precision.int8.write_int8` (the
  library form of ``deployinc quantize``; ``keep_fp32_before`` is its ``--keep-fp32-before``);
- accuracy: :func:`deployinc.verify.core.run` on a :class:`~deployinc.verify.request.VerifyRequest` (``deployinc
  verify``): the reference is eager torch fp32 rebuilt from the file's provenance, the int8 preset judges per-image
  cosine, top-1 and top-5 agreement, and with a labelled folder it reports held-out accuracy;
- latency and the machine: :func:`deployinc.bench.harness.benchmark` on :func:`~deployinc.bench.subject.open_onnx`
  (``deployinc bench``), whose report carries the environment record
  (:func:`deployinc.bench.environment.bench_environment`);
- training: :func:`deployinc.train.train` (``deployinc train``), which also writes the held-out images.

Two models:

- ResNet-50 with seeded random weights and BatchNorm recalibrated (the export pipeline's ``weights="none"``).
  Variants: all layers int8 (target ``cpu``: uint8 activations), the stem and the first stage kept fp32 (``cpu``),
  all layers for TensorRT (symmetric int8). Gates: per-image cosine with eager torch fp32 >= 0.99 (verify's
  ``cosine``, the smallest per-image cosine) and int8 batch-1 latency at least 2x better than fp32 ONNX Runtime,
  benched in the same run.
- inception_cifar trained by deployinc's trainer on ``synthetic:shapes`` (or --inception-ckpt with
  --inception-heldout). Gate: top-1 agreement of the cpu int8 model with eager torch fp32 >= 99 % on the held-out
  images (verify's plain arg-max agreement, ``top1_raw``).

``--sensitivity`` adds a per-layer scan for ResNet-50 (one convolution quantized at a time, each verified): slow.

Latency: bench times one file per call, interleaving the backends of that file. The files of one model are
benched one after another, and that sequence is repeated ``--rounds`` times, so that a slow spell of a shared
machine falls on every file alike; a speed-up is the median over rounds of the ratio of the two files' p50 in that
round. Row statistics pool every round's samples (:func:`deployinc.bench.timing.summarize`).

    python scripts/bench_int8.py --sensitivity           # writes docs/benchmarks/int8-cpu.md (+ .json)
    python scripts/bench_int8.py --quick --out-md /tmp/int8.md --work /tmp/int8-work    # a smoke run, minutes
    python scripts/bench_int8.py --render docs/benchmarks/int8-cpu.json                 # re-write the Markdown

Exit status 1 when a gate fails (the report is still written); a --quick run exits 0 whatever its gates say (its
counts are too small to judge anything) and 1 when a model could not be quantized or verified (a step that raises
stops the run with the library's error).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployinc.core.table import Table  # noqa: E402

FORMAT = "deployinc-bench-int8/2"
DEFAULT_MD = ROOT / "docs" / "benchmarks" / "int8-cpu.md"

COSINE_GATE = 0.99
SPEEDUP_GATE = 2.0
TOP1_GATE = 0.99

FP32 = "fp32 ONNX Runtime"
TORCH = "eager torch fp32"
RESNET_VARIANTS = (
    # (label, target, keep the stem and the first stage in fp32)
    ("int8 all layers (cpu: u8 activations)", "cpu", False),
    ("int8, stem + layer1 fp32 (cpu: u8 activations)", "cpu", True),
    ("int8 all layers (tensorrt: symmetric s8)", "tensorrt", False),
)
INCEPTION_VARIANTS = (
    ("int8 (cpu: u8 activations)", "cpu"),
    ("int8 (tensorrt: symmetric s8)", "tensorrt"),
)
SENSITIVITY_CONVS = ("/conv1/Conv", "/layer1/layer1.0/conv1/Conv", "/layer2/layer2.0/conv1/Conv", "/layer3/layer3.0/conv1/Conv", "/layer4/layer4.0/conv1/Conv")

#: --quick: counts for a smoke run of every step (minutes on 2 busy cores); its numbers mean nothing.
QUICK = {
    "calib": 16, "test": 8, "calib_inception": 16, "rounds": 2, "iters": 4, "warmup": 1, "inception_epochs": 1,
    "inception_limit_train": 300, "inception_limit_heldout": 80, "sensitivity_convs": 2,
}  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-").replace("--", "-")


# ----------------------------------------------------------------------------------------------------------------
# Library steps


def quantize(src: Path, images: Any, out: Path, *, method: str, percentile: float, target: str, source: str,
             keep_fp32_before: str | None = None, exclude_nodes: tuple[str, ...] | list[str] = (), op_types: list[str] | None = None) -> dict[str, Any]:
    """``deployinc quantize`` as a library call: the int8 file written (with its calibration report) and a summary."""
    from deployinc.precision.int8 import quantize_int8, write_int8

    t0 = time.perf_counter()
    res = quantize_int8(src, images, method=method, percentile=percentile, target=target, keep_fp32_before=keep_fp32_before,
                        exclude_nodes=exclude_nodes, op_types=op_types, data_source={"calibration": source})
    written, report_path = write_int8(res, out, force=True)
    rep = res.report
    ops = rep["op_counts"]
    return {
        "path": str(written[-1]),
        "calibration_report": str(report_path),
        "target": rep["target"],
        "method": rep["method"],
        "percentile": rep["percentile"],
        "activation_type": rep["activation_type"],
        "weight_type": rep["weight_type"],
        "per_channel": rep["per_channel"],
        "keep_fp32_before": rep["keep_fp32_before"],
        "fp32_nodes_kept": len(rep["excluded_nodes"]),
        "qdq_nodes": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0),
        "calibration_images": rep["calibration_images"],
        "timings_s": rep["timings_s"],
        "seconds": round(time.perf_counter() - t0, 1),
        "warnings": list(res.warnings),
    }


def verify_summary(d: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one ``VerifyReport.to_dict()`` (one backend, one batch size) that the report shows."""
    b = d["backends"][0]
    out: dict[str, Any] = {
        "verdict": d["verdict"], "precision": d["precision"], "backend": b["backend"], "status": b["status"],
        "reason": b.get("reason"), "failures": d["failures"],
        "reference": (d.get("reference") or {}).get("description"), "inputs": d.get("inputs"),
        "preset": (b.get("tolerance") or {}).get("name"), "tolerance": b.get("tolerance"),
    }  # fmt: skip
    if b["results"]:
        r = b["results"][0]
        o = r["outputs"][0]
        out.update(batch=r["batch"], samples=r["samples"], min_cosine=o["cosine"], top1_agreement=o["top1_raw"],
                   top1_tie_aware=o["top1"], top5=o["top5"], max_abs=o["max_abs"], max_rel=o["max_rel"])
    acc = d.get("accuracy")
    if acc:
        rows = acc["rows"]
        mine = [v for k, v in rows.items() if k != "reference"]
        out["accuracy"] = {"images": acc["images"], "reference_top1": rows.get("reference", {}).get("top1"),
                           "top1": mine[0]["top1"] if mine else None, "source": acc.get("source")}
    return out


def verify_file(path: Path, *, threads: int, batch: int, samples: int = 8, seed: int = 0, data: Path | None = None) -> dict[str, Any]:
    """``deployinc verify FILE --providers cpu`` as a library call (no localisation); the summary and the report."""
    from deployinc.verify.core import run as verify_run
    from deployinc.verify.request import VerifyRequest

    req = VerifyRequest(model=path, providers="cpu", batches=[batch], samples=samples, seed=seed, threads=threads,
                        data=data, labels=data is not None, localize=False)
    vr = verify_run(req)
    d = vr.to_dict()
    d.pop("environment", None)  # one environment record for the whole run: the bench report's
    return {"summary": verify_summary(d), "report": d}


def variant(args: argparse.Namespace, src: Path, cal: Any, out: Path, target: str, calibration: str, files: dict[str, Path], label: str,
            *, keep_fp32_before: str | None = None, verify_kw: dict[str, Any]) -> dict[str, Any]:
    """One int8 variant: quantized into ``out`` and verified (``verify_kw`` for :func:`verify_file`); a variant that
    verified joins ``files`` (benched later). A step that fails is recorded in the entry, and the run goes on."""
    from deployinc.errors import DeployincError

    entry: dict[str, Any] = {"target": target}
    try:
        entry["quantize"] = quantize(src, cal, out, method=args.method, percentile=args.percentile, target=target, source=calibration,
                                     keep_fp32_before=keep_fp32_before)  # fmt: skip
        log(f"  quantized in {entry['quantize']['seconds']:.0f} s, {entry['quantize']['fp32_nodes_kept']} node(s) kept fp32")
        v = verify_file(out, threads=args.threads, **verify_kw)
        entry["verify"], entry["verify_report"] = v["summary"], v["report"]
        log(f"  {verify_line(v['summary'])}")
        files[label] = out
    except DeployincError as exc:
        entry["error"] = exc.message
        log(f"  ERROR: {exc.message}")
    return entry


def verify_line(s: dict[str, Any]) -> str:
    if "min_cosine" not in s:
        return f"{s['verdict']} ({s.get('reason') or s['status']})"
    line = (f"{s['verdict'].upper()} [{s['preset']}] min cosine {s['min_cosine']:.6f}, top-1 agreement {s['top1_agreement']:.4f} "
            f"(tie-aware {s['top1_tie_aware']:.4f}), top-5 {s['top5']:.4f}, max |diff| {s['max_abs']:.3g} over {s['samples']} image(s)")
    if s.get("accuracy"):
        line += f"; held-out accuracy {s['accuracy']['top1']:.4f} (torch {s['accuracy']['reference_top1']:.4f})"
    return line


def _row(rep: Any, backend: str) -> Any:
    """The batch-1 row of ``backend`` in a bench report: the measured one, else the skip or failure."""
    rows = [r for r in rep.rows if r.backend == backend and r.batch in (1, None)]
    return next((r for r in rows if r.ok and r.mode == "e2e"), next((r for r in rows if r.ok), rows[0] if rows else None))


def bench_files(files: dict[str, Path], *, torch_with: str | None, rounds: int, iters: int, warmup: int, threads: int | None,
                backend: str = "ort-cpu") -> dict[str, Any]:  # fmt: skip
    """Batch-1 latency of each file on ``backend`` (and eager torch fp32 with the file ``torch_with``), each round
    benching every file in turn with ``deployinc.bench``; returns per label the pooled statistics, each round's
    p50, and the bench configs and environment."""
    from deployinc.bench.harness import BenchSettings, benchmark
    from deployinc.bench.subject import open_onnx
    from deployinc.bench.timing import summarize

    models = {label: open_onnx(path) for label, path in files.items()}
    samples: dict[str, list[float]] = {}
    p50s: dict[str, list[float | None]] = {}
    problems: dict[str, str] = {}
    unsteady: dict[str, list[str]] = {}
    configs: list[dict[str, Any]] = []
    environment: dict[str, Any] | None = None
    for r in range(rounds):
        for label, model in models.items():
            backends = (["torch"] if label == torch_with else []) + [backend]
            s = BenchSettings(backends=backends, batches=[1], warmup=warmup, iters=iters, threads=threads)
            rep = benchmark(model, s, log=lambda m: log(f"  bench: {m}"))
            environment = environment or rep.environment
            configs.append({"label": label, "round": r + 1, **{k: rep.config.get(k) for k in ("backends", "precisions", "warmup", "iters", "threads", "load_average", "inputs")}})
            for b in backends:
                key = TORCH if b == "torch" else label
                row = _row(rep, b)
                if row is None or not row.ok:
                    problems[key] = row.reason if row is not None else "no row"
                    p50s.setdefault(key, []).append(None)
                    continue
                samples.setdefault(key, []).extend(v / 1e3 for v in row.samples_ms or [])
                p50s.setdefault(key, []).append(row.stats.p50)
                if row.unsteady_reason():
                    unsteady.setdefault(key, []).append(f"round {r + 1}: {row.unsteady_reason()}")
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f} ms" if v[-1] is not None else f"{k} FAILED" for k, v in p50s.items()))
    out: dict[str, Any] = {"rows": {}, "configs": configs, "environment": environment or {}}
    for key, ps in p50s.items():
        entry: dict[str, Any] = {"round_p50_ms": ps}
        if key in samples and samples[key]:
            st = summarize(samples[key], 1)
            entry.update(p50_ms=st.p50, p90_ms=st.p90, p99_ms=st.p99, min_ms=st.min, samples=st.iters)
        if key in problems:
            entry["problem"] = problems[key]
        if key in unsteady:
            entry["unsteady"] = unsteady[key]
        out["rows"][key] = entry
    return out


def round_ratio(rows: dict[str, Any], base: str, other: str) -> float | None:
    """Median over rounds of (``base`` p50 / ``other`` p50) in the same round; None without a common round."""
    b, o = rows.get(base, {}).get("round_p50_ms", []), rows.get(other, {}).get("round_p50_ms", [])
    ratios = [x / y for x, y in zip(b, o) if x is not None and y]
    return float(statistics.median(ratios)) if ratios else None


def attach_latency(section: dict[str, Any], lat: dict[str, Any]) -> None:
    """Latency rows into ``section`` (fp32, torch, variants) with speed-ups over fp32 ORT and over eager torch."""
    rows = lat["rows"]
    section["latency"] = {"configs": lat["configs"]}
    section["environment"] = lat["environment"]
    section["fp32"]["latency"] = rows.get(FP32, {})
    section["fp32"]["speedup_vs_torch"] = round_ratio(rows, TORCH, FP32)
    if TORCH in rows:
        section["torch"] = {"latency": rows[TORCH], "speedup_vs_fp32": round_ratio(rows, FP32, TORCH)}
    for label, v in section["variants"].items():
        if label in rows:
            v["latency"] = rows[label]
            v["speedup_vs_fp32"] = round_ratio(rows, FP32, label)
            v["speedup_vs_torch"] = round_ratio(rows, TORCH, label)


# ----------------------------------------------------------------------------------------------------------------
# ResNet-50


def layer2_boundary(model: Any) -> str:
    """The first node of ResNet's second stage (names as the TorchScript exporter writes them)."""
    for n in model.graph.node:
        if n.name.startswith("/layer2/"):
            return n.name
    raise RuntimeError("no node named /layer2/... in the graph: export with exporter='torchscript' to keep the module names")


def bench_resnet50(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.subject.inputs import input_spec, sample_images

    path = work / "resnet50.onnx"
    if args.force or not path.exists():
        t0 = time.perf_counter()
        export_pipeline("resnet50", out=path, force=True, weights="none", exporter="torchscript", threads=args.threads, log=log)
        log(f"resnet50 exported in {time.perf_counter() - t0:.0f} s")
    else:
        log(f"resnet50: reusing {path} (--force to export again)")
    fp32 = load_onnx(path, load_external=False).model
    spec = input_spec(fp32)
    cal = sample_images(spec, args.calib, None, seed=101)
    calibration = f"{args.calib} seeded natural-statistics images (deployinc.subject.inputs.sample_images, seed 101)"
    boundary = layer2_boundary(fp32)
    res: dict[str, Any] = {
        "model": "resnet50", "onnx": str(path), "calibration": calibration, "test_images": args.test, "test_seed": 404,
        "keep_fp32_before": boundary, "variants": {},
    }  # fmt: skip

    log("resnet50 fp32: verify against eager torch fp32")
    v32 = verify_file(path, threads=args.threads, batch=min(8, args.test), samples=args.test, seed=404)
    res["fp32"] = {"verify": v32["summary"], "verify_report": v32["report"]}
    res["reference"] = v32["summary"]["reference"]
    log(f"  {verify_line(v32['summary'])}")

    files = {FP32: path}
    for label, target, keep in RESNET_VARIANTS:
        log(f"resnet50 {label}: quantize ({args.method}, {args.calib} images)")
        out = work / f"resnet50.{slug(label)}.onnx"
        res["variants"][label] = variant(args, path, cal, out, target, calibration, files, label, keep_fp32_before=boundary if keep else None,
                                         verify_kw={"batch": min(8, args.test), "samples": args.test, "seed": 404})  # fmt: skip

    log(f"resnet50 latency: batch 1, {args.threads} threads, {args.rounds} round(s) x {args.iters} iterations per file after {args.warmup} warm-up")
    attach_latency(res, bench_files(files, torch_with=FP32, rounds=args.rounds, iters=args.iters, warmup=args.warmup, threads=args.threads))
    for label, v in res["variants"].items():
        if v.get("speedup_vs_fp32") is not None:
            log(f"  {label}: p50 {v['latency']['p50_ms']:.2f} ms, {v['speedup_vs_fp32']:.2f}x fp32 ORT ({res['fp32']['latency'].get('p50_ms', float('nan')):.2f} ms)")

    if args.sensitivity:
        res["sensitivity"] = sensitivity(args, path, fp32, cal, calibration, work)
    return res


def sensitivity(args: argparse.Namespace, path: Path, fp32: Any, cal: Any, calibration: str, work: Path) -> list[dict[str, Any]]:
    """One convolution quantized at a time (everything else fp32), each file verified against eager torch."""
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    picks = [c for c in SENSITIVITY_CONVS if c in convs] or [convs[i] for i in (0, 1, len(convs) // 4, len(convs) // 2, -3)]
    if args.quick:
        picks = picks[: QUICK["sensitivity_convs"]]
    n = min(16, args.test)
    rows = []
    for i, name in enumerate(picks):
        out = work / f"resnet50.sensitivity-{i}.onnx"
        q = quantize(path, cal[: min(32, len(cal))], out, method=args.method, percentile=args.percentile, target="cpu",
                     source=calibration, op_types=["Conv"], exclude_nodes=[c for c in convs if c != name])
        v = verify_file(out, threads=args.threads, batch=min(8, n), samples=n, seed=404)["summary"]
        rows.append({"conv": name, "quantize_warnings": q["warnings"], "verify": v})
        log(f"  sensitivity: only {name} int8 -> {verify_line(v)}")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# inception_cifar


def inception_checkpoint(args: argparse.Namespace, work: Path) -> tuple[Path, Path] | str:
    """(checkpoint, held-out folder): given, found in --work, or trained here; a reason string when there is none."""
    from deployinc.train import TrainConfig, train

    if args.inception_ckpt:
        if not args.inception_heldout:
            return ("--inception-ckpt needs --inception-heldout: the held-out images of that checkpoint's data "
                    "(deployinc train ... --export-heldout DIR writes them)")
        return Path(args.inception_ckpt), Path(args.inception_heldout)
    tag = f"e{args.inception_epochs}" + (f"-n{args.inception_limit_train}" if args.inception_limit_train else "") + (f"-h{args.inception_limit_heldout}" if args.inception_limit_heldout else "")
    ckpt, held = work / f"inception_cifar_{tag}.pt", Path(args.inception_heldout or work / f"inception_cifar_{tag}_heldout")
    if ckpt.exists() and held.is_dir() and any(held.iterdir()) and not args.force:
        log(f"inception_cifar: reusing {ckpt} and {held} (--force to train again)")
        return ckpt, held
    if args.no_train:
        return "no --inception-ckpt given and --no-train set"
    log(f"training inception_cifar on synthetic:shapes with deployinc.train ({args.inception_epochs} epoch(s))")
    t0 = time.perf_counter()
    res = train(TrainConfig("inception_cifar", "synthetic:shapes", out=str(ckpt), epochs=args.inception_epochs, threads=args.threads,
                            limit_train=args.inception_limit_train, limit_heldout=args.inception_limit_heldout, export_heldout=str(held), force=True))
    log(f"  trained in {time.perf_counter() - t0:.0f} s, held-out accuracy {res.accuracy:.4f}; {res.heldout_written} held-out images in {held}")
    return ckpt, held


def bench_inception(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from deployinc.core.images import normalize
    from deployinc.export import export_pipeline
    from deployinc.io import load_checkpoint, load_onnx
    from deployinc.subject.inputs import input_spec
    from deployinc.train.synthetic import shapes

    got = inception_checkpoint(args, work)
    if isinstance(got, str):
        return {"skipped": got}
    ckpt, held = got
    _, raw = load_checkpoint(ckpt, with_extra=True)
    record = raw.get("record", {}) if isinstance(raw, dict) else {}
    path = work / "inception_cifar.onnx"
    export_pipeline("inception_cifar", out=path, force=True, weights=str(ckpt), exporter="torchscript", threads=args.threads, log=log)
    spec = input_spec(load_onnx(path, load_external=False).model)
    # Calibration: fresh draws of the training distribution (not the held-out images), as the model normalises them.
    u8, _, _ = shapes(args.calib_inception, size=spec.chw[1], seed=9001)
    cal = normalize(u8.transpose(0, 3, 1, 2).astype("float32") / 255.0, spec.mean, spec.std)
    calibration = f"{args.calib_inception} fresh draws of synthetic:shapes (deployinc.train.synthetic.shapes, seed 9001), not the held-out images"
    res: dict[str, Any] = {
        "checkpoint": str(ckpt), "heldout": str(held), "onnx": str(path), "calibration": calibration,
        "record": {k: record.get(k) for k in ("data", "arch", "epochs", "accuracy", "train_images", "heldout_images", "seed", "train_seconds")},
        "variants": {},
    }  # fmt: skip
    log("inception_cifar fp32: verify against eager torch fp32 on the held-out images")
    v32 = verify_file(path, threads=args.threads, batch=8, data=held)
    res["fp32"] = {"verify": v32["summary"], "verify_report": v32["report"]}
    res["reference"] = v32["summary"]["reference"]
    log(f"  {verify_line(v32['summary'])}")
    files = {FP32: path}
    for label, target in INCEPTION_VARIANTS:
        log(f"inception_cifar {label}: quantize ({args.method}, {args.calib_inception} images)")
        out = work / f"inception_cifar.{slug(label)}.onnx"
        res["variants"][label] = variant(args, path, cal, out, target, calibration, files, label, verify_kw={"batch": 8, "data": held})
    log(f"inception_cifar latency: batch 1, {args.rounds} round(s) x {args.iters} iterations per file")
    attach_latency(res, bench_files(files, torch_with=FP32, rounds=args.rounds, iters=args.iters, warmup=args.warmup, threads=args.threads))
    return res


# ----------------------------------------------------------------------------------------------------------------
# Gates and the report


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def gates(res: dict[str, Any], inc: dict[str, Any]) -> list[dict[str, Any]]:
    """The three gates, from the results: ``pass`` is True, False, or None (not measured)."""
    out: list[dict[str, Any]] = []
    if res.get("variants"):
        cpu = {k: v for k, v in res["variants"].items() if v.get("target") == "cpu" and "verify" in v}

        def cos(k: str) -> float:
            return _num(cpu[k]["verify"].get("min_cosine")) or -1.0

        def sp(k: str) -> float:
            return _num(cpu[k].get("speedup_vs_fp32")) or 0.0

        passing = [k for k in cpu if cos(k) >= COSINE_GATE and sp(k) >= SPEEDUP_GATE]
        pick = max(passing, key=sp) if passing else (max(cpu, key=cos) if cpu else None)
        if pick is None:
            out.append({"gate": f"resnet50 cosine >= {COSINE_GATE}", "value": "no cpu int8 variant was verified", "pass": False})
            out.append({"gate": f"resnet50 int8 batch-1 >= {SPEEDUP_GATE:g}x faster than fp32 ORT", "value": "not measured", "pass": False})
        else:
            c, s = _num(cpu[pick]["verify"].get("min_cosine")), _num(cpu[pick].get("speedup_vs_fp32"))
            out.append({"gate": f"resnet50 cosine >= {COSINE_GATE} ({pick})", "value": f"min {c:.4f}" if c is not None else "not measured",
                        "pass": c is not None and c >= COSINE_GATE})
            out.append({"gate": f"resnet50 int8 batch-1 >= {SPEEDUP_GATE:g}x faster than fp32 ORT ({pick})",
                        "value": f"{s:.2f}x" if s is not None else "not measured", "pass": s is not None and s >= SPEEDUP_GATE})
    else:
        out.append({"gate": "resnet50 cosine and speed-up", "value": "not run", "pass": None})
    if "skipped" in inc or not inc:
        out.append({"gate": f"inception_cifar top-1 agreement >= {TOP1_GATE:.0%}", "value": f"not run: {inc.get('skipped', 'skipped')}", "pass": None})
    else:
        v = inc["variants"].get(INCEPTION_VARIANTS[0][0], {})
        t = _num((v.get("verify") or {}).get("top1_agreement"))
        out.append({"gate": f"inception_cifar top-1 agreement >= {TOP1_GATE:.0%} (cpu int8)", "value": f"{t * 100:.2f} %" if t is not None else v.get("error", "not measured"),
                    "pass": t is not None and t >= TOP1_GATE})
    return out


def _f(v: Any, fmt: str, suffix: str = "") -> str:
    n = _num(v)
    return "" if n is None else f"{n:{fmt}}{suffix}"


def _pct(v: Any) -> str:
    n = _num(v)
    return "" if n is None else f"{n * 100:.2f} %"


def _verdict(x: dict[str, Any]) -> str:
    return "not run" if x["pass"] is None else ("pass" if x["pass"] else "FAIL")


def machine_lines(data: dict[str, Any]) -> list[str]:
    """The machine, from the bench report's environment record (deployinc.bench.environment)."""
    from deployinc.bench.environment import environment_lines

    env = data.get("environment") or {}
    lines = [f"- {line}" for line in environment_lines(env)] if env else ["- (no environment record: nothing was benched)"]
    flags = data.get("int8_cpu_flags")
    if flags is not None:
        lines.append(f"- int8 instructions ({', '.join(data.get('int8_flags_checked', []))}): {', '.join(flags) if flags else 'none'}")
    loads = [c.get("load_average") or {} for sec in ("resnet50", "inception_cifar") for c in ((data.get(sec) or {}).get("latency") or {}).get("configs", [])]
    if loads:
        first, last = loads[0].get("before"), loads[-1].get("after")
        lines.append(f"- Load average: {', '.join(map(str, first or []))} before the first bench call, {', '.join(map(str, last or []))} after the last "
                     "(a shared machine: the files are benched in turn, round after round, and speed-ups are medians of per-round ratios)")
    return lines


def markdown(data: dict[str, Any]) -> str:
    """The report page, from the result dict only (what the JSON beside it holds)."""
    a = data["args"]
    res = data.get("resnet50") or {}
    inc = data.get("inception_cifar") or {}
    L: list[str] = ["# int8 on the CPU: accuracy and latency", ""]
    if data.get("quick"):
        L += ["**A --quick smoke run: counts far too small for any number here to mean anything.**", ""]
    L.append(f"Produced by `{data['command']}` on {data['created']}. Every number below was printed by that run, from deployinc's "
             "verify and bench reports (the JSON beside this page holds them all); nothing is edited by hand. Re-run it to refresh this page.")
    L += ["", "## Machine", ""]
    L += machine_lines(data)
    L.append(f"- Thread count: {a['threads']}, for ONNX Runtime and torch alike (verify and bench were given `threads={a['threads']}`)")
    pct = f", {a['percentile']} th percentile" if a["method"] == "percentile" else ""
    L.append(f"- Calibration: `{a['method']}`{pct} (deployinc.precision.int8.quantize_int8: ONNX Runtime `quantize_static`, QDQ, per-channel int8 weights)")
    L.append("- Accuracy: deployinc.verify (`providers=cpu`, eager torch fp32 rebuilt from the file's provenance as the reference; "
             "min cosine is the smallest per-image cosine of the logits; top-1 agreement is plain arg-max agreement, tie-aware in brackets)")
    L.append(f"- Latency: deployinc.bench, batch 1, ort-cpu; {a['rounds']} round(s), each benching every file of a model in turn, "
             f"{a['iters']} timed runs per file per round after {a['warmup']} warm-up run(s); p50/p90 pool every round's samples, "
             "speed-ups are medians of per-round p50 ratios")
    L += ["", "## Gates", "", *Table(["gate", "measured", "result"], [[str(x["gate"]), str(x["value"]), _verdict(x)] for x in data["gates"]]).markdown_lines()]
    if res:
        L += resnet_section(res)
    L += inception_section(inc, a)
    L.append("")
    return "\n".join(L)


def _lat_cells(lat: dict[str, Any], digits: int) -> list[str]:
    """The p50 and p90 cells (the problem and an empty cell when not measured)."""
    if not lat or "p50_ms" not in lat:
        return [str(lat.get("problem", "not measured") if lat else "not measured"), ""]
    return [f"{lat['p50_ms']:.{digits}f}", f"{lat['p90_ms']:.{digits}f}"]


def unsteady_lines(section: dict[str, Any]) -> list[str]:
    """bench's own warnings of a measurement during which the machine changed speed (BenchRow.unsteady_reason)."""
    lats = [("eager torch fp32", (section.get("torch") or {}).get("latency") or {}), (FP32, (section.get("fp32") or {}).get("latency") or {})]
    lats += [(k, v.get("latency") or {}) for k, v in section.get("variants", {}).items()]
    flagged = [(k, u) for k, lat in lats for u in lat.get("unsteady", [])]
    if not flagged:
        return []
    return ["", f"bench flagged {len(flagged)} measurement(s) as unsteady (the machine changed speed during them; every one is in the JSON), first: "
            f"{flagged[0][0]}, {flagged[0][1]}."]


def resnet_section(res: dict[str, Any]) -> list[str]:
    L = ["", "## ResNet-50 (random weights, BatchNorm recalibrated)", ""]
    L.append(f"Reference: {res.get('reference')}. Calibration: {res['calibration']}; test: {res['test_images']} natural-statistics images "
             f"generated by verify with seed {res['test_seed']} (not a calibration seed). The stem + layer1 variant keeps every node before "
             f"`{res['keep_fp32_before']}` in fp32 (`deployinc quantize --keep-fp32-before`).")
    f32 = res.get("fp32", {})
    fv = f32.get("verify", {})
    if "min_cosine" in fv:
        L.append(f"fp32 ONNX Runtime vs eager torch: {fv['verdict']} [{fv['preset']}], min cosine {fv['min_cosine']:.6f}, max |diff| {fv['max_abs']:.3g}.")
    head = ["model", "fp32 nodes kept", "verify verdict", "min cosine", "top-1 agreement", "top-5", "batch-1 p50 (ms)", "p90 (ms)", "speed-up vs fp32 ORT", "vs eager torch"]
    rows: list[list[str]] = []
    tl = (res.get("torch") or {}).get("latency")
    if tl:
        rows.append([TORCH, "all", "(reference)", "", "", "", *_lat_cells(tl, 1), _f(res["torch"].get("speedup_vs_fp32"), ".2f", "x"), "1.00x"])
    rows.append([FP32, "all", fv.get("verdict", ""), _f(fv.get("min_cosine"), ".6f"), _pct(fv.get("top1_agreement")), _pct(fv.get("top5")),
                 *_lat_cells(f32.get("latency", {}), 1), "1.00x", _f(f32.get("speedup_vs_torch"), ".2f", "x")])  # fmt: skip
    for label, v in res["variants"].items():
        if "error" in v:
            rows.append([label, "", f"error: {v['error']}", *[""] * 7])
            continue
        s = v.get("verify", {})
        rows.append([label, str(v["quantize"]["fp32_nodes_kept"]), s.get("verdict", ""), _f(s.get("min_cosine"), ".4f"),
                     f"{_pct(s.get('top1_agreement'))} ({_pct(s.get('top1_tie_aware'))})", _pct(s.get("top5")), *_lat_cells(v.get("latency", {}), 1),
                     _f(v.get("speedup_vs_fp32"), ".2f", "x"), _f(v.get("speedup_vs_torch"), ".2f", "x")])  # fmt: skip
    L += ["", *Table(head, rows).markdown_lines()]
    L += unsteady_lines(res)
    budget = next((v["verify"]["tolerance"] for v in res["variants"].values() if v.get("verify", {}).get("tolerance")), None)
    if budget:
        L += ["", f"verify's `{budget['name']}` preset: min cosine {budget['min_cosine']}, top-1 {budget['min_top1']}, top-5 {budget['min_top5']}; "
              "the gates above are this page's own (cosine >= 0.99, speed-up >= 2x)."]
    L += ["", "The `tensorrt` variant uses symmetric int8 activations and float biases, which TensorRT requires (zero points 0, no int32 "
          "DequantizeLinear); ONNX Runtime's CPU provider runs it too but does not fuse the ReLUs it must keep, so it is slower here. It is "
          "the file to give TensorRT; the `cpu` variants (uint8 activations) are for ONNX Runtime on the CPU."]
    if res.get("sensitivity"):
        n = res["sensitivity"][0]["verify"].get("samples", "?")
        L += ["", "### Where the int8 error comes from", "",
              f"One convolution quantized at a time (activations and weights), everything else fp32; each file verified against eager torch on {n} test images:",
              "", *Table(["only this conv in int8", "min cosine", "top-1 agreement"],
                         [[f"`{r['conv']}`", _f(r["verify"].get("min_cosine"), ".5f"), _pct(r["verify"].get("top1_agreement"))]
                          for r in res["sensitivity"]]).markdown_lines()]  # fmt: skip
        L += ["", "A random-weight ResNet amplifies a perturbation at its input side through every later block, so the error of the first layers "
              "dominates; keeping the stem and the first stage in fp32 removes most of it, at the cost in speed the table shows. Trained networks "
              "are far less sensitive (see inception_cifar below)."]
    return L


def inception_section(inc: dict[str, Any], a: dict[str, Any]) -> list[str]:
    L = ["", "## inception_cifar (trained)", ""]
    if not inc or "skipped" in inc:
        return L + [f"Not measured in this run: {inc.get('skipped', 'skipped') if inc else 'skipped'}."]
    rec = inc.get("record") or {}
    L.append(f"Checkpoint `{inc['checkpoint']}`: {rec.get('arch')} trained by deployinc.train on `{rec.get('data')}` for {rec.get('epochs')} epoch(s) "
             f"({rec.get('train_images')} training images; held-out accuracy recorded by the trainer: {rec.get('accuracy')}). "
             f"Evaluated by verify on the {rec.get('heldout_images')} held-out images the trainer wrote to `{inc['heldout']}` (labels from the folder names); "
             f"calibrated on {inc['calibration']}.")
    fv = (inc.get("fp32") or {}).get("verify", {})
    acc = fv.get("accuracy") or {}
    L.append(f"Eager torch fp32 held-out accuracy: {_pct(acc.get('reference_top1'))}; fp32 ONNX Runtime: {fv.get('verdict', '')}, top-1 agreement with torch "
             f"{_pct(fv.get('top1_agreement'))}, min cosine {_f(fv.get('min_cosine'), '.6f')}.")
    head = ["model", "verify verdict", "top-1 agreement with torch fp32", "held-out accuracy", "min cosine", "batch-1 p50 (ms)", "p90 (ms)", "speed-up vs fp32 ORT", "vs eager torch"]
    rows: list[list[str]] = []
    tl = (inc.get("torch") or {}).get("latency")
    f32 = inc.get("fp32") or {}
    if tl:
        rows.append([TORCH, "(reference)", "", _pct(acc.get("reference_top1")), "", *_lat_cells(tl, 2), _f(inc["torch"].get("speedup_vs_fp32"), ".2f", "x"), "1.00x"])
    rows.append([FP32, fv.get("verdict", ""), _pct(fv.get("top1_agreement")), _pct(acc.get("top1")), _f(fv.get("min_cosine"), ".6f"),
                 *_lat_cells(f32.get("latency", {}), 2), "1.00x", _f(f32.get("speedup_vs_torch"), ".2f", "x")])  # fmt: skip
    for label, v in inc["variants"].items():
        if "error" in v:
            rows.append([label, f"error: {v['error']}", *[""] * 7])
            continue
        s = v.get("verify", {})
        rows.append([label, s.get("verdict", ""), f"{_pct(s.get('top1_agreement'))} ({_pct(s.get('top1_tie_aware'))})", _pct((s.get("accuracy") or {}).get("top1")),
                     _f(s.get("min_cosine"), ".4f"), *_lat_cells(v.get("latency", {}), 2), _f(v.get("speedup_vs_fp32"), ".2f", "x"), _f(v.get("speedup_vs_torch"), ".2f", "x")])  # fmt: skip
    return L + ["", *Table(head, rows).markdown_lines()] + unsteady_lines(inc)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out-md", "--out", dest="out_md", default=str(DEFAULT_MD), help="Markdown report (default: docs/benchmarks/int8-cpu.md).")
    p.add_argument("--out-json", default=None, help="JSON with every number (default: the Markdown path with .json).")
    p.add_argument("--work", default=str(ROOT / "out" / "bench_int8"), help="Folder for models, checkpoints and held-out images.")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="percentile")
    p.add_argument("--percentile", type=float, default=99.99, help="Percentile for --method percentile.")
    p.add_argument("--calib", type=int, default=None, help="ResNet-50 calibration images (default 64; --quick 16).")
    p.add_argument("--test", type=int, default=None, help="ResNet-50 test images verified (default 32; --quick 8).")
    p.add_argument("--calib-inception", type=int, default=None, help="inception_cifar calibration images (default 256; --quick 16).")
    p.add_argument("--rounds", type=int, default=None, help="Rounds of benching every file in turn (default 5; --quick 2).")
    p.add_argument("--iters", type=int, default=None, help="Timed runs per file per round (default 20; --quick 4).")
    p.add_argument("--warmup", type=int, default=None, help="Warm-up runs per file per round (default 5; --quick 1).")
    p.add_argument("--inception-ckpt", default=None, help="A trained inception_cifar checkpoint (give its held-out folder with --inception-heldout).")
    p.add_argument("--inception-heldout", default=None, help="Labelled held-out images (ImageFolder) of the checkpoint's data, as deployinc train --export-heldout writes them.")
    p.add_argument("--inception-epochs", type=int, default=None,
                   help="Epochs when training inception_cifar here (default 24: the trainer's default leaves top-1 margins so small that noise below one "
                   "8-bit pixel step flips decisions; --quick 1).")
    p.add_argument("--inception-limit-train", type=int, default=None, help="Train on at most this many images (default all; --quick 300).")
    p.add_argument("--inception-limit-heldout", type=int, default=None, help="Hold out at most this many images (default all; --quick 80).")
    p.add_argument("--no-train", action="store_true", help="Do not train inception_cifar when no checkpoint is found.")
    p.add_argument("--sensitivity", action="store_true", help="Add the ResNet-50 per-layer sensitivity scan (5 more quantizations and verifies: slow).")
    p.add_argument("--skip-resnet", action="store_true", help="Only inception_cifar (the ResNet-50 gates are then not run).")
    p.add_argument("--skip-inception", action="store_true", help="Only ResNet-50 (the inception_cifar gate is then not run).")
    p.add_argument("--force", action="store_true", help="Re-export / re-train even when files exist in --work.")
    p.add_argument("--quick", action="store_true", help="Smoke run: tiny counts, 1-epoch training on a few images; numbers mean nothing, exit 0 whatever the gates.")
    p.add_argument("--render", default=None, help="Only re-write the Markdown (--out-md) from an earlier run's JSON (no measuring).")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments with the defaults of a full run or of --quick filled in."""
    args = parser().parse_args(argv)
    full = {"calib": 64, "test": 32, "calib_inception": 256, "rounds": 5, "iters": 20, "warmup": 5, "inception_epochs": 24,
            "inception_limit_train": None, "inception_limit_heldout": None}
    for k, v in full.items():
        if getattr(args, k) is None:
            setattr(args, k, QUICK[k] if args.quick else v)
    if args.out_json is None:
        args.out_json = str(Path(args.out_md).with_suffix(".json"))
    if args.rounds < 1 or args.iters < 1 or args.warmup < 1:
        parser().error("need --rounds >= 1, --iters >= 1 and --warmup >= 1")
    return args


def write_outputs(data: dict[str, Any], md_path: str | os.PathLike[str], json_path: str | os.PathLike[str] | None) -> None:
    """The JSON and the Markdown, written atomically as one unit (deployinc.io.atomic_write_many)."""
    from deployinc.io import atomic_write_many

    files: list[tuple[str | os.PathLike[str], bytes]] = []
    if json_path is not None:
        files.append((json_path, (json.dumps(data, indent=1, default=str) + "\n").encode("utf-8")))
    files.append((md_path, markdown(data).encode("utf-8")))
    for p, _ in files:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_many(files, force=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        if data.get("format") != FORMAT:
            parser().error(f"{args.render} is not a {FORMAT} report (format {data.get('format')!r}); run the benchmark again")
        write_outputs(data, args.out_md, None)
        log(f"re-rendered {args.out_md} from {args.render}")
        return 0

    from deployinc.core.env import INT8_FLAGS, cpu_flags

    t_start = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res = {} if args.skip_resnet else bench_resnet50(args, work)
    inc = {"skipped": "--skip-inception"} if args.skip_inception else bench_inception(args, work)
    env = res.pop("environment", None) or inc.pop("environment", None) or {}
    inc.pop("environment", None)
    checked = list(INT8_FLAGS)
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    data = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python scripts/bench_int8.py {argv_text}".strip(),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t_start, 1),
        "args": vars(args),
        "environment": env,
        "int8_flags_checked": checked,
        "int8_cpu_flags": sorted(cpu_flags() & set(checked)),
        "resnet50": res,
        "inception_cifar": inc,
    }
    data["gates"] = gates(res, inc)
    write_outputs(data, args.out_md, args.out_json)
    log(f"wrote {args.out_md} and {args.out_json} ({data['seconds']:.0f} s in all)")
    for x in data["gates"]:
        log(f"{_verdict(x).upper()}: {x['gate']}: {x['value']}")
    errors = [f"{label}: {v['error']}" for sec in (res, inc) for label, v in (sec.get("variants") or {}).items() if "error" in v]
    for e in errors:
        log(f"ERROR: {e}")
    if args.quick:
        return 1 if errors else 0
    return 0 if all(x["pass"] is not False for x in data["gates"]) else 1


if __name__ == "__main__":
    sys.exit(main())
