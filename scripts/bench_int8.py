#!/usr/bin/env python
"""int8 on this CPU: accuracy against eager torch fp32 and batch-1 latency against fp32 ONNX Runtime, in one run.

Two models:

- ResNet-50 with seeded random weights and BatchNorm recalibrated on natural-image statistics (exported with
  deployinc's export pipeline, the library form of ``deployinc export``; the eager torch reference is rebuilt from
  the file's provenance). Gate: per-image cosine similarity of the int8 logits with eager torch fp32 >= 0.99, and
  int8 batch-1 latency at least 2x better than fp32 ONNX Runtime, measured in the same run, interleaved.
- inception_cifar trained by deployinc's trainer on the built-in ``synthetic:shapes`` data (or a checkpoint given
  with --inception-ckpt). Gate: top-1 agreement with eager torch fp32 >= 99 % on the held-out images.

A per-layer sensitivity scan (one convolution quantized at a time) is recorded for ResNet-50: it shows where int8
error comes from, and it is why the reported ResNet-50 configuration keeps the stem and the first stage in fp32
when quantizing everything misses the cosine gate (random weights make a chaotic network that amplifies early
errors). Every variant measured is in the report, passing or not.

    python scripts/bench_int8.py                       # writes docs/benchmarks/int8-cpu.md (+ .json)
    python scripts/bench_int8.py --inception-ckpt ckpt.pt --no-train

Only numbers this script printed go into the report. Exit status 1 when a gate fails (the report is still written).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Measuring


def ort_logits(session: Any, name: str, x: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def torch_logits(module: Any, x: np.ndarray, batch: int = 8) -> np.ndarray:
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            y = module(torch.from_numpy(x[i : i + batch]))
            if isinstance(y, (tuple, list)):
                y = y[0]
            outs.append(y.float().numpy())
    return np.concatenate(outs)


def cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    o = out.reshape(len(out), -1).astype(np.float64)
    return (r * o).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1))


def interleaved_latency(sessions: dict[str, Any], name: str, x: np.ndarray, rounds: int, iters: int, warmup: int) -> dict[str, Any]:
    """Batch-1 latency, each model timed ``iters`` times per round, models interleaved over ``rounds``.

    Returns per model: median and p90 over all samples, and the per-round medians (for ratios under drifting load).
    """
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, {name: x})
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    per_round: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter()
                s.run(None, {name: x})
                ts.append(time.perf_counter() - t0)
            samples[k].extend(ts)
            per_round[k].append(float(np.median(ts)))
    return {
        k: {
            "median_ms": float(np.median(v)) * 1e3,
            "p90_ms": float(np.percentile(v, 90)) * 1e3,
            "samples": len(v),
            "round_medians_ms": [round(t * 1e3, 2) for t in per_round[k]],
        }
        for k, v in samples.items()
    }


def speedup(lat: dict[str, Any], base: str, other: str) -> float:
    """Median over rounds of (base round median / other round median): robust to load that drifts between rounds."""
    b, o = lat[base]["round_medians_ms"], lat[other]["round_medians_ms"]
    return float(np.median([x / y for x, y in zip(b, o)]))


def environment(threads: int) -> dict[str, Any]:
    import importlib.metadata as md

    cpu, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {}
    for dist in ("onnxruntime-gpu", "onnxruntime", "onnx", "torch", "torchvision", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    from deployinc._version import __version__

    versions["deployinc"] = __version__
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "threads": threads,
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
    }


# ----------------------------------------------------------------------------------------------------------------
# ResNet-50


def export_resnet50(work: Path, threads: int, force: bool) -> tuple[Path, Any, str]:
    """ONNX file and eager torch module of ResNet-50 (random weights, BN recalibrated) via deployinc's exporter."""
    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.metadata import read_provenance
    from deployinc.verify.reference import from_provenance

    path = work / "resnet50.onnx"
    if force or not path.exists():
        export_pipeline("resnet50", out=path, force=True, weights="none", exporter="torchscript", threads=threads, log=log)
    prov = read_provenance(load_onnx(path, load_external=False).model)
    ref = from_provenance(prov)
    return path, ref.module, ref.description


def layer2_boundary(model: Any) -> str:
    """The first node of ResNet's second stage: by name (TorchScript exporter), else the first node with a 28x28
    output (224 / 8)."""
    for n in model.graph.node:
        if n.name.startswith("/layer2/"):
            return n.name
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    for n in model.graph.node:
        if n.op_type == "Conv" and dims.get(n.output[0], [0, 0, 0])[-1:] == [28]:
            return n.name
    raise RuntimeError("cannot find ResNet-50's second stage in the graph")


def bench_resnet50(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from deployinc.io import load_onnx
    from deployinc.precision._common import cpu_session, input_spec
    from deployinc.precision.int8 import quantize_int8
    from deployinc.core.images import natural_images

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    path, module, ref_desc = export_resnet50(work, args.threads, args.force)
    fp32 = load_onnx(path).model
    spec = input_spec(fp32)
    log(f"resnet50 ready in {time.perf_counter() - t0:.1f} s: {ref_desc}")
    cal = natural_images(args.calib, spec.chw, spec.mean, spec.std, seed=101)
    # Test images use a seed not used while choosing the configuration below (percentile, fp32 stem): out of sample.
    test = natural_images(args.test, spec.chw, spec.mean, spec.std, seed=404)
    ref = torch_logits(module, test)
    s32 = cpu_session(fp32, threads=args.threads)
    out32 = ort_logits(s32, spec.name, test)
    result: dict[str, Any] = {
        "reference": ref_desc,
        "calibration_images": args.calib,
        "test_images": args.test,
        "images": "seeded natural-image statistics (deployinc.core.images.natural_images), calibration and test "
        "sets drawn with different seeds",
        "fp32_ort_vs_torch": {"min_cosine": float(cosines(ref, out32).min()),
                              "max_abs": float(np.abs(ref - out32).max())},
        "variants": {},
    }
    boundary = layer2_boundary(fp32)
    variants = [
        ("int8 all layers (cpu: u8 activations)", dict(target="cpu")),
        ("int8, stem + layer1 fp32 (cpu: u8 activations)", dict(target="cpu", keep_fp32_before=boundary)),
        ("int8 all layers (tensorrt: symmetric s8)", dict(target="tensorrt")),
    ]
    sessions = {"fp32": s32}
    for label, kw in variants:
        t0 = time.perf_counter()
        q = quantize_int8(path, cal, method=args.method, percentile=args.percentile, **kw)
        seconds = time.perf_counter() - t0
        sq = cpu_session(q.model, threads=args.threads)
        out = ort_logits(sq, spec.name, test)
        cos = cosines(ref, out)
        entry = {
            **{k: v for k, v in kw.items()},
            "method": args.method,
            "quantize_seconds": round(seconds, 1),
            "fp32_nodes_kept": len(q.report["excluded_nodes"]),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
            "qdq_nodes": q.report["op_counts"].get("QuantizeLinear", 0) + q.report["op_counts"].get("DequantizeLinear", 0),
        }
        result["variants"][label] = entry
        sessions[label] = sq
        log(f"resnet50 {label}: min cosine {entry['min_cosine']:.4f}, mean {entry['mean_cosine']:.4f} "
            f"(quantized in {seconds:.1f} s)")

    log(f"resnet50 latency: batch 1, {args.threads} threads, {args.rounds} rounds x {args.iters} iterations, interleaved")
    lat = interleaved_latency(sessions, spec.name, test[:1], args.rounds, args.iters, args.warmup)
    result["latency"] = lat
    for label in result["variants"]:
        result["variants"][label]["median_ms"] = lat[label]["median_ms"]
        result["variants"][label]["speedup_vs_fp32"] = speedup(lat, "fp32", label)
        log(f"  {label}: {lat[label]['median_ms']:.1f} ms (fp32 {lat['fp32']['median_ms']:.1f} ms), "
            f"speedup {result['variants'][label]['speedup_vs_fp32']:.2f}x")

    if not args.skip_sensitivity:
        result["sensitivity"] = sensitivity(args, path, fp32, cal[: min(32, len(cal))], test[:16], ref[:16], spec)
    return result


def sensitivity(args: argparse.Namespace, path: Path, fp32: Any, cal: np.ndarray, test: np.ndarray, ref: np.ndarray,
                spec: Any) -> list[dict[str, Any]]:
    """Quantize one convolution at a time (everything else fp32) and measure the logits' cosine with eager torch."""
    from deployinc.precision._common import cpu_session
    from deployinc.precision.int8 import quantize_int8

    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    wanted = ["/conv1/Conv", "/layer1/layer1.0/conv1/Conv", "/layer2/layer2.0/conv1/Conv",
              "/layer3/layer3.0/conv1/Conv", "/layer4/layer4.0/conv1/Conv"]
    picks = [c for c in wanted if c in convs] or [convs[i] for i in (0, 1, len(convs) // 4, len(convs) // 2, -3)]
    rows = []
    for name in picks:
        q = quantize_int8(path, cal, method=args.method, percentile=args.percentile, target="cpu", op_types=["Conv"],
                          exclude_nodes=[c for c in convs if c != name])
        out = ort_logits(cpu_session(q.model, threads=args.threads), spec.name, test)
        cos = cosines(ref, out)
        rows.append({"conv": name, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())})
        log(f"  sensitivity: only {name} int8 -> min cosine {cos.min():.5f}")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# inception_cifar


def loadable_checkpoint(ckpt: Path, work: Path) -> tuple[Path, list[str]]:
    """The checkpoint itself when deployinc's weights-only loader takes it; otherwise, when the only thing refused
    is a ``torch.torch_version.TorchVersion`` (a str subclass some records store as ``torch.__version__``), a copy
    with those values turned into plain strings. Loading stays weights-only: that one str subclass is allowlisted."""
    from deployinc.errors import WeightsError
    from deployinc.io import load_checkpoint, save_checkpoint

    try:
        load_checkpoint(ckpt)
        return ckpt, []
    except WeightsError as exc:
        if "TorchVersion" not in f"{exc.message} {exc.__cause__}":
            raise
    import torch
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)

    def plain(v: Any) -> Any:
        if isinstance(v, TorchVersion):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(plain(x) for x in v)
        return v

    clean = work / (ckpt.stem + ".clean.pt")
    save_checkpoint(clean, plain(obj), force=True)
    load_checkpoint(clean)
    note = (f"{ckpt} stores a torch.torch_version.TorchVersion, which deployinc's weights-only loader refuses; "
            f"used a copy with plain strings ({clean})")
    log(note)
    return clean, [note]


def trained_inception(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]] | tuple[None, str]:
    from deployinc.io import load_checkpoint

    if args.inception_ckpt:
        ckpt = Path(args.inception_ckpt)
        _, raw = load_checkpoint(loadable_checkpoint(ckpt, work)[0], with_extra=True)
        record = raw.get("record", raw) if isinstance(raw, dict) else {}
        return ckpt, {k: record.get(k) for k in ("data", "classes", "accuracy", "epochs", "seed", "mean", "std")
                      if isinstance(record, dict)}
    ckpt = work / f"inception_cifar_e{args.inception_epochs}.pt"
    if ckpt.exists() and not args.force:
        ckpt_ok, _ = loadable_checkpoint(ckpt, work)
        _, raw = load_checkpoint(ckpt_ok, with_extra=True)
        record = raw.get("record", {}) if isinstance(raw, dict) else {}
        return ckpt, {k: record.get(k) for k in ("data", "classes", "accuracy", "epochs", "seed", "mean", "std")}
    if args.no_train:
        return None, "no --inception-ckpt given and --no-train set"
    try:
        from deployinc.train import TrainConfig, train
    except ImportError as exc:
        return None, f"deployinc's trainer is not available ({exc})"
    log(f"training inception_cifar on synthetic:shapes with deployinc.train ({args.inception_epochs} epochs)")
    t0 = time.perf_counter()
    res = train(TrainConfig("inception_cifar", "synthetic:shapes", out=str(ckpt), epochs=args.inception_epochs,
                            threads=args.threads, force=True))
    log(f"trained in {time.perf_counter() - t0:.0f} s, held-out accuracy {res.accuracy:.4f}")
    rec = res.record
    return ckpt, {k: rec.get(k) for k in ("data", "classes", "accuracy", "epochs", "seed", "mean", "std")}


def bench_inception(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    got = trained_inception(args, work)
    if got[0] is None:
        return {"skipped": got[1]}
    ckpt, record = got
    import torch

    ckpt, notes = loadable_checkpoint(Path(ckpt), work)

    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.metadata import read_provenance
    from deployinc.precision._common import cpu_session, input_spec
    from deployinc.precision.int8 import quantize_int8
    from deployinc.train.data import load_data
    from deployinc.train.synthetic import shapes
    from deployinc.core.images import normalize
    from deployinc.verify.reference import from_provenance

    torch.set_num_threads(args.threads)
    path = work / "inception_cifar.onnx"
    export_pipeline("inception_cifar", out=path, force=True, weights=str(ckpt), exporter="torchscript",
                    threads=args.threads, log=log)
    fp32 = load_onnx(path).model
    spec = input_spec(fp32)
    module = from_provenance(read_provenance(fp32)).module

    def prep(u8: np.ndarray) -> np.ndarray:  # uint8 N x H x W x 3 -> normalised N x 3 x H x W
        return normalize(u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, spec.mean, spec.std)

    data_spec = record.get("data") or "synthetic:shapes"
    if not str(data_spec).startswith("synthetic:"):
        return {"skipped": f"checkpoint trained on {data_spec}; this script only knows the synthetic held-out split"}
    split = load_data(str(data_spec), image_size=spec.chw[1], seed=int(record.get("seed") or 0))
    held = prep(split.heldout.images)
    labels = split.heldout.labels
    cal_u8, _, _ = shapes(args.calib_inception, size=spec.chw[1], seed=9001)  # training distribution, new draw
    cal = prep(cal_u8)
    ref = torch_logits(module, held, batch=64)
    s32 = cpu_session(fp32, threads=args.threads)
    out32 = ort_logits(s32, spec.name, held, batch=64)
    result: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "notes": notes,
        "trained_on": data_spec,
        "record_accuracy": record.get("accuracy"),
        "heldout_images": int(len(held)),
        "calibration_images": int(len(cal)),
        "calibration": f"{len(cal)} fresh draws of {data_spec} (seed 9001), not the held-out images",
        "torch_fp32_accuracy": float((ref.argmax(1) == labels).mean()),
        "ort_fp32_top1_agreement": float((out32.argmax(1) == ref.argmax(1)).mean()),
        "variants": {},
    }
    # How fragile the model's decisions are: fp32 itself under N(0, sigma) input noise (normalised units).
    rng = np.random.default_rng(7)
    result["fp32_noise_agreement"] = {
        str(sigma): float((ort_logits(s32, spec.name, (held + rng.normal(0, sigma, held.shape)).astype(np.float32),
                                      batch=64).argmax(1) == ref.argmax(1)).mean())
        for sigma in (0.01, 0.03)
    }
    margins = np.sort(ref, 1)
    result["median_top1_margin"] = float(np.median(margins[:, -1] - margins[:, -2]))
    sessions = {"fp32": s32}
    for label, kw in (("int8 (cpu: u8 activations)", dict(target="cpu")),
                      ("int8 (tensorrt: symmetric s8)", dict(target="tensorrt"))):
        t0 = time.perf_counter()
        q = quantize_int8(path, cal, method=args.method, percentile=args.percentile, **kw)
        seconds = time.perf_counter() - t0
        sq = cpu_session(q.model, threads=args.threads)
        out = ort_logits(sq, spec.name, held, batch=64)
        entry = {
            **kw,
            "method": args.method,
            "quantize_seconds": round(seconds, 1),
            "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
            "accuracy": float((out.argmax(1) == labels).mean()),
            "min_cosine": float(cosines(ref, out).min()),
        }
        result["variants"][label] = entry
        sessions[label] = sq
        log(f"inception_cifar {label}: top-1 agreement {entry['top1_agreement']:.4f}, accuracy {entry['accuracy']:.4f}")
    lat = interleaved_latency(sessions, spec.name, held[:1], args.rounds, args.iters, args.warmup)
    result["latency"] = lat
    for label in result["variants"]:
        result["variants"][label]["median_ms"] = lat[label]["median_ms"]
        result["variants"][label]["speedup_vs_fp32"] = speedup(lat, "fp32", label)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Report


def gates(res: dict[str, Any], inc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    best = None
    for label, v in res["variants"].items():
        if v.get("target") != "cpu":
            continue
        ok = v["min_cosine"] >= 0.99 and v["speedup_vs_fp32"] >= 2.0
        if ok and (best is None or v["speedup_vs_fp32"] > res["variants"][best]["speedup_vs_fp32"]):
            best = label
    pick = best or max((k for k, v in res["variants"].items() if v.get("target") == "cpu"),
                       key=lambda k: res["variants"][k]["min_cosine"])
    v = res["variants"][pick]
    out.append({"gate": f"resnet50 cosine >= 0.99 ({pick})", "value": f"min {v['min_cosine']:.4f}",
                "pass": v["min_cosine"] >= 0.99})
    out.append({"gate": f"resnet50 int8 batch-1 >= 2x faster than fp32 ORT ({pick})",
                "value": f"{v['speedup_vs_fp32']:.2f}x", "pass": v["speedup_vs_fp32"] >= 2.0})
    if "skipped" in inc:
        out.append({"gate": "inception_cifar top-1 agreement >= 99 %", "value": f"not run: {inc['skipped']}",
                    "pass": None})
    else:
        iv = inc["variants"]["int8 (cpu: u8 activations)"]
        out.append({"gate": "inception_cifar top-1 agreement >= 99 % (cpu int8)",
                    "value": f"{iv['top1_agreement'] * 100:.2f} %", "pass": iv["top1_agreement"] >= 0.99})
    return out


def markdown(env: dict[str, Any], args: argparse.Namespace, res: dict[str, Any], inc: dict[str, Any],
             g: list[dict[str, Any]]) -> str:
    L = []
    L.append("# int8 on the CPU: accuracy and latency")
    L.append("")
    L.append(f"Produced by `python scripts/bench_int8.py` on {env['date_utc']}. Every number below was printed by that "
             "run; nothing is edited by hand. Re-run it to refresh this page.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- CPU: {env['cpu']} ({env['cpu_count']} cores visible), AVX-512 VNNI: {'yes' if env['avx512_vnni'] else 'no'}")
    L.append(f"- Threads: {env['threads']} for ONNX Runtime and torch alike; load average at start "
             f"{', '.join(f'{x:.2f}' for x in env['load_average_start'])} (a shared machine: latency is interleaved "
             "over rounds and speed-ups are medians of per-round ratios)")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    pct = f", {args.percentile} th percentile" if args.method == "percentile" else ""
    L.append(f"- Calibration: `{args.method}`{pct} (ONNX Runtime `quantize_static`, QDQ, per-channel int8 weights)")
    L.append("")
    L.append("## Gates")
    L.append("")
    L.append("| gate | measured | result |")
    L.append("|---|---|---|")
    for x in g:
        verdict = "not run" if x["pass"] is None else ("pass" if x["pass"] else "FAIL")
        L.append(f"| {x['gate']} | {x['value']} | {verdict} |")
    L.append("")
    L.append("## ResNet-50 (random weights, BatchNorm recalibrated)")
    L.append("")
    L.append(f"Reference: eager torch fp32, {res['reference']}. Inputs: {res['images']}; {res['calibration_images']} "
             f"calibration and {res['test_images']} test images at 224 x 224. The percentile and the fp32 stem were "
             "chosen during development on other seeds; the test images here are drawn with a seed not used then.")
    L.append(f"fp32 ONNX Runtime vs eager torch: min cosine {res['fp32_ort_vs_torch']['min_cosine']:.6f}, "
             f"max |diff| {res['fp32_ort_vs_torch']['max_abs']:.3g}.")
    L.append("")
    L.append("| model | fp32 nodes kept | min cosine | mean cosine | top-1 agreement | batch-1 median (ms) | p90 (ms) | speed-up vs fp32 ORT |")
    L.append("|---|---|---|---|---|---|---|---|")
    lat = res["latency"]
    L.append(f"| fp32 ONNX Runtime | all | 1 (reference: torch) | | | {lat['fp32']['median_ms']:.1f} | {lat['fp32']['p90_ms']:.1f} | 1.00x |")
    for label, v in res["variants"].items():
        L.append(f"| {label} | {v['fp32_nodes_kept']} | {v['min_cosine']:.4f} | {v['mean_cosine']:.4f} | "
                 f"{v['top1_agreement'] * 100:.1f} % | {v['median_ms']:.1f} | {lat[label]['p90_ms']:.1f} | "
                 f"{v['speedup_vs_fp32']:.2f}x |")
    L.append("")
    L.append(f"Latency: batch 1, {args.rounds} rounds x {args.iters} timed runs per model after {args.warmup} warm-up "
             "runs, models interleaved within each round; per-round medians are in the JSON beside this page.")
    L.append("")
    L.append("The `tensorrt` variant uses symmetric int8 activations and float biases, which TensorRT requires "
             "(zero points 0, no int32 DequantizeLinear); ONNX Runtime's CPU provider runs it too but does not fuse "
             "the ReLUs it must keep, so it is slower here. It is the file to give TensorRT; the `cpu` variants "
             "(uint8 activations) are for ONNX Runtime on the CPU.")
    if res.get("sensitivity"):
        L.append("")
        L.append("### Where the int8 error comes from")
        L.append("")
        L.append("One convolution quantized at a time (activations and weights), everything else fp32; cosine of the "
                 "logits with eager torch on 16 test images:")
        L.append("")
        L.append("| only this conv in int8 | min cosine | mean cosine |")
        L.append("|---|---|---|")
        for r in res["sensitivity"]:
            L.append(f"| `{r['conv']}` | {r['min_cosine']:.5f} | {r['mean_cosine']:.5f} |")
        L.append("")
        L.append("A random-weight ResNet amplifies a perturbation at its input side through every later block, so the "
                 "error of the first layers dominates; keeping the stem and the first stage in fp32 "
                 "(`deployinc quantize --keep-fp32-before <first layer2 node>`) removes most of it, at the cost in "
                 "speed the table shows. Trained networks are far less sensitive (see inception_cifar below).")
    L.append("")
    L.append("## inception_cifar (trained)")
    L.append("")
    if "skipped" in inc:
        L.append(f"Not measured in this run: {inc['skipped']}.")
    else:
        L.append(f"Trained here with `deployinc.train` for {args.inception_epochs} epochs (when no --inception-ckpt is "
                 "given): in development, the trainer's default 8 epochs left a model with top-1 margins so small that "
                 "input noise below one 8-bit pixel step already flipped some of its decisions (the noise row below "
                 "measures this for the model used here).")
        L.append(f"Checkpoint `{inc['checkpoint']}` trained on `{inc['trained_on']}` (held-out accuracy recorded by the "
                 f"trainer: {inc['record_accuracy']}). Evaluated on the {inc['heldout_images']} held-out images; "
                 f"calibrated on {inc['calibration']}.")
        for n in inc.get("notes", []):
            L.append(f"Note: {n}.")
        nz = inc["fp32_noise_agreement"]
        L.append(f"How sure the model is: median top-1 logit margin {inc['median_top1_margin']:.3f}; fp32 with Gaussian "
                 f"input noise of sigma 0.01 / 0.03 (normalised units; one 8-bit pixel step is 0.0078) keeps "
                 f"{nz['0.01'] * 100:.1f} % / {nz['0.03'] * 100:.1f} % of its own top-1 decisions.")
        L.append(f"Eager torch fp32 held-out accuracy: {inc['torch_fp32_accuracy'] * 100:.2f} %; fp32 ONNX Runtime top-1 "
                 f"agreement with torch: {inc['ort_fp32_top1_agreement'] * 100:.2f} %.")
        L.append("")
        L.append("| model | top-1 agreement with torch fp32 | held-out accuracy | min cosine | batch-1 median (ms) | speed-up vs fp32 ORT |")
        L.append("|---|---|---|---|---|---|")
        ilat = inc["latency"]
        L.append(f"| fp32 ONNX Runtime | {inc['ort_fp32_top1_agreement'] * 100:.2f} % | | | {ilat['fp32']['median_ms']:.2f} | 1.00x |")
        for label, v in inc["variants"].items():
            L.append(f"| {label} | {v['top1_agreement'] * 100:.2f} % | {v['accuracy'] * 100:.2f} % | {v['min_cosine']:.4f} | "
                     f"{v['median_ms']:.2f} | {v['speedup_vs_fp32']:.2f}x |")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "int8-cpu.md"))
    p.add_argument("--work", default=str(ROOT / "out" / "bench_int8"), help="Folder for models and checkpoints.")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="percentile")
    p.add_argument("--percentile", type=float, default=99.99, help="Percentile for --method percentile.")
    p.add_argument("--calib", type=int, default=64, help="ResNet-50 calibration images.")
    p.add_argument("--calib-inception", type=int, default=256, help="inception_cifar calibration images.")
    p.add_argument("--test", type=int, default=32, help="ResNet-50 test images.")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--inception-ckpt", default=None, help="A trained inception_cifar checkpoint (synthetic:shapes).")
    p.add_argument("--inception-epochs", type=int, default=24,
                   help="Epochs when training inception_cifar here (the trainer's default 8 leaves a model so unsure "
                   "that 1 %% input noise flips its predictions; see the report's noise row).")
    p.add_argument("--no-train", action="store_true", help="Do not train inception_cifar when no checkpoint is given.")
    p.add_argument("--skip-sensitivity", action="store_true")
    p.add_argument("--skip-resnet", action="store_true", help="(debugging) only inception_cifar; no gates written.")
    p.add_argument("--force", action="store_true", help="Re-export/re-train even when files exist in --work.")
    p.add_argument("--render", default=None, help="Only re-write the Markdown from an earlier run's JSON (no measuring).")
    args = p.parse_args(argv)

    if args.render:
        from deployinc.io import atomic_write_text

        data = json.loads(Path(args.render).read_text())
        old = argparse.Namespace(**data["args"])
        atomic_write_text(args.out, markdown(data["environment"], old, data["resnet50"], data["inception_cifar"],
                                             data["gates"]), force=True)
        log(f"re-rendered {args.out} from {args.render}")
        return 0

    from deployinc.io import atomic_write_text

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = environment(args.threads)
    log(f"CPU {env['cpu']}, AVX-512 VNNI {env['avx512_vnni']}, threads {args.threads}")
    res = {} if args.skip_resnet else bench_resnet50(args, work)
    inc = bench_inception(args, work)
    if args.skip_resnet:
        print(json.dumps(inc, indent=2, default=float))
        return 0
    g = gates(res, inc)
    env["load_average_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, markdown(env, args, res, inc, g), force=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"environment": env, "args": vars(args), "resnet50": res,
                                                            "inception_cifar": inc, "gates": g}, indent=2,
                                                           default=float) + "\n", force=True)
    log(f"wrote {out} and {out.with_suffix('.json')}")
    for x in g:
        log(f"{'PASS' if x['pass'] else ('NOT RUN' if x['pass'] is None else 'FAIL')}: {x['gate']}: {x['value']}")
    return 0 if all(x["pass"] is not False for x in g) else 1


if __name__ == "__main__":
    sys.exit(main())
