#!/usr/bin/env python
"""OpenVINO's int8 on a CPU without VNNI, measured on one with it: each recipe's accuracy and speed with oneDNN capped.

OpenVINO's CPU plugin runs on oneDNN, which honours ``ONEDNN_MAX_CPU_ISA``: capped at ``AVX2`` it takes the kernels
an AMD EPYC Zen 3 takes (no VNNI: u8 x s8 pairs summed in int16 by VPMADDUBSW), at ``AVX512_CORE`` those of an
AVX-512 CPU without VNNI (Skylake-SP). Each model is exported and quantized once per recipe (u8s8, u8s8 with
reduce_range; percentile calibration on the same seeded natural-statistics images); then, in one child process per
cap, ``deployinc verify --providers openvino`` judges each file by its preset against eager torch fp32 (int8 preset:
per-image cosine >= 0.99, tie-aware top-1 >= 0.95) and each file is timed at batch 1 on OpenVINO (p50 of three
rounds of ``deployinc bench``, files interleaved), against the fp32 file on OpenVINO under the same cap. What the numbers say of a real
CPU without VNNI: its kernels and saturation are the same code; its cache sizes and clock are not.

    python scripts/int8_openvino_isa.py                    # googlenet, resnet50 -> docs/benchmarks/int8-openvino-isa-<machine>.md
    python scripts/int8_openvino_isa.py --models inception_cifar --iters 5 --samples 8 --out /tmp/isa.md   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

RECIPES = ("u8s8", "u8s8-reduce-range")
#: The caps measured, ``none`` first (the CPU as it is).
CAPS = ("none", "AVX512_CORE", "AVX2")
CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def make_files(name: str, work: Path, calibration: int) -> dict[str, str]:
    """The fp32 export and one int8 file per recipe (made once; a file already in ``work`` is reused)."""
    from deployinc.core.images import natural_images
    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.precision.int8 import quantize_int8, write_int8
    from deployinc.precision.recipe import recipe_named
    from deployinc.subject.inputs import input_spec

    fp32 = work / f"{name}.onnx"
    if not fp32.is_file():
        export_pipeline(name, out=fp32)
    spec = input_spec(load_onnx(fp32, load_external=False).model)
    files = {"fp32": str(fp32)}
    for r in RECIPES:
        out = work / f"{name}.{r}.onnx"
        if not out.is_file():
            res = quantize_int8(fp32, natural_images(calibration, spec.chw, spec.mean, spec.std, seed=1), method="percentile",
                                target="cpu", recipe=recipe_named(r), spec=spec)  # fmt: skip
            write_int8(res, out, force=True)
        files[r] = str(out)
    return files


def child(files: dict[str, str], samples: int, iters: int) -> dict[str, Any]:
    """In the capped process: each file verified on OpenVINO, then timed at batch 1 with ``deployinc.bench``, three
    rounds with the files in turn (:func:`bench_int8.bench_files`)."""
    import bench_int8 as B
    from deployinc.core.env import isa_cap
    from deployinc.precision.recipe import cpu_int8_path, recipe_for
    from deployinc.verify.core import run as verify_run
    from deployinc.verify.request import VerifyRequest

    out: dict[str, Any] = {"cap": isa_cap(), "int8_path": cpu_int8_path(), "recipe": recipe_for("cpu").name, "files": {}}
    for label, path in files.items():
        d = verify_run(VerifyRequest(model=Path(path), providers="openvino", batches=[8], samples=samples, localize=False)).to_dict()
        out["files"][label] = {"verify": B.verify_summary(d)}
    lat = B.bench_files({k: Path(v) for k, v in files.items()}, torch_with=None, rounds=3, iters=iters, warmup=5, threads=None, backend="openvino")
    for label, row in lat["rows"].items():
        out["files"][label]["p50_ms"] = [round(v, 3) if v is not None else None for v in row["round_p50_ms"]]
        out["files"][label]["unsteady"] = row.get("unsteady", [])
    return out


def run_capped(cap: str, files: dict[str, str], samples: int, iters: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in CAP_VARS}
    if cap != "none":
        env["ONEDNN_MAX_CPU_ISA"] = cap
    cmd = [sys.executable, __file__, "--child", json.dumps(files), "--samples", str(samples), "--iters", str(iters)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"the {cap} run failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def rows(name: str, cap: str, res: dict[str, Any]) -> list[list[str]]:
    """One table row per file: verdict, min cosine, top-1, p50 (the median of the rounds, their range; ``!`` where
    bench called a round unsteady), and the median over rounds of fp32's p50 over the file's in the same round."""
    import bench_int8 as B

    lat = {label: {"round_p50_ms": f.get("p50_ms") or []} for label, f in res["files"].items()}
    out = []
    for label, f in res["files"].items():
        v, p = f["verify"], sorted(x for x in lat[label]["round_p50_ms"] if x is not None)
        cos = f"{v['min_cosine']:.4f}" if "min_cosine" in v else "-"
        top = f"{v['top1_tie_aware']:.3f}" if "top1_tie_aware" in v else "-"
        p50 = f"{statistics.median(p):.2f} ({p[0]:.2f}-{p[-1]:.2f})" + ("!" if f.get("unsteady") else "") if p else "-"
        ratio = B.round_ratio(lat, "fp32", label)
        out.append([name, cap, res["int8_path"], label, str(v["verdict"]).upper(), cos, top, p50, f"{ratio:.2f}x" if ratio else "-"])
    return out


def markdown(entries: list[dict[str, Any]], started: str, seconds: float, args: argparse.Namespace) -> str:
    from deployinc.core.env import machine
    from deployinc.core.table import Table

    m = machine(gpu=False)
    head = ["model", "oneDNN cap", "int8 path deployinc sees", "file", "verdict", "min cosine", "top-1 (tie-aware)", "p50 ms (3 rounds)",
            "x OpenVINO fp32 (same round)"]  # fmt: skip
    body = [row for e in entries for cap in CAPS for row in rows(e["model"], cap, e["caps"][cap])]
    chosen = "; ".join(f"{cap}: {entries[0]['caps'][cap]['recipe']}" for cap in CAPS) if entries else "-"
    return "\n".join([
        f"# OpenVINO int8 without VNNI, on {m.slug()}",
        "",
        f"Made by `python scripts/int8_openvino_isa.py --models {args.models}` on {started} ({seconds:.0f} s). CPU: {m.cpu_model}; "
        f"int8/bf16 flags: {m.features}; default threads.",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        f"Verified on {args.samples} seeded images at batch 8; timed over {args.iters} runs per round.",
        "",
        *Table(head, body).markdown_lines(),
        "",
        "`!`: deployinc bench called a round's timing unsteady; the ratios compare files within a round.",
        "",
        f"deployinc's recipe under each cap: {chosen}.",
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="googlenet,resnet50")
    ap.add_argument("--work", default=str(ROOT / "build" / "int8-openvino-isa"))
    ap.add_argument("--out", default=None, help="the markdown page (default docs/benchmarks/int8-openvino-isa-<machine>.md)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.samples, args.iters)))
        return 0
    from deployinc.core.env import isa_cap, machine_slug
    from deployinc.io import atomic_write_text

    if isa_cap():
        raise SystemExit(f"{isa_cap()} is set: this script sets the caps itself (unset it)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started, t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
    entries = []
    for name in [m for m in args.models.split(",") if m.strip()]:
        files = make_files(name, work, args.calibration)
        entries.append({"model": name, "caps": {cap: run_capped(cap, files, args.samples, args.iters) for cap in CAPS}})
        print(f"{name}: measured under {', '.join(CAPS)}", flush=True)
    out = Path(args.out) if args.out else ROOT / "docs" / "benchmarks" / f"int8-openvino-isa-{machine_slug()}.md"
    atomic_write_text(out, markdown(entries, started, time.perf_counter() - t0, args), force=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(entries, indent=1), force=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
