#!/usr/bin/env python
"""The int8 recipes on this CPU: accuracy against eager torch fp32 and batch-1 latency against fp32 ORT, one run.

What ``deployinc.precision.recipe`` chooses per CPU rests on this measurement: each model is exported, quantized with
each recipe (u8s8, u8s8 with reduce_range, s8s8; percentile calibration on the same seeded natural-statistics
images), verified by ``deployinc verify``'s int8 preset against eager torch fp32, and timed with ``deployinc bench``
at one thread against the fp32 file, the files interleaved over ``--rounds`` rounds (a speed-up is the median of the
per-round ratios). A thin driver: the quantizer, verify and bench are the library's (through
``scripts/bench_int8.py``'s helpers).

    python scripts/int8_recipes.py                          # googlenet, resnet50 -> docs/benchmarks/int8-recipes-<machine>.md
    python scripts/int8_recipes.py --models inception_cifar --rounds 1 --iters 10 --out-md /tmp/r.md   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from deployinc.core.env import machine_slug  # noqa: E402
from deployinc.core.table import Table  # noqa: E402
import bench_int8 as B  # noqa: E402 - the sibling driver's helpers (verify_file, bench_files, round_ratio)

RECIPES = ("u8s8", "u8s8-reduce-range", "s8s8")


def measure_model(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from deployinc.core.images import natural_images
    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.subject.inputs import input_spec
    from deployinc.precision.int8 import quantize_int8, write_int8
    from deployinc.precision.recipe import recipe_named

    fp32 = work / f"{name}.onnx"
    if not fp32.is_file():
        B.log(f"{name}: export")
        export_pipeline(name, out=fp32, threads=args.threads)
    spec = input_spec(load_onnx(fp32, load_external=False).model)
    cal = natural_images(args.calibration, spec.chw, spec.mean, spec.std, seed=1)
    files = {"fp32": fp32}
    entry: dict[str, Any] = {"model": name, "recipes": {}}
    for r in RECIPES:
        out = work / f"{name}.{r}.onnx"
        t0 = time.perf_counter()
        res = quantize_int8(fp32, cal, method="percentile", target="cpu", recipe=recipe_named(r), spec=spec)
        write_int8(res, out, force=True)
        v = B.verify_file(out, threads=args.threads, batch=8, samples=args.samples)
        entry["recipes"][r] = {"verify": v["summary"], "quantize_seconds": round(time.perf_counter() - t0, 1), "recipe": res.report["recipe"]}
        B.log(f"{name} {r}: {B.verify_line(v['summary'])}")
        files[r] = out
    lat = B.bench_files(files, torch_with=None, rounds=args.rounds, iters=args.iters, warmup=args.warmup, threads=1)
    entry["latency"] = {k: {kk: v.get(kk) for kk in ("p50_ms", "min_ms", "round_p50_ms", "unsteady", "problem")} for k, v in lat["rows"].items()}
    for r in RECIPES:
        entry["recipes"][r]["speedup_vs_fp32"] = B.round_ratio(lat["rows"], "fp32", r)
    entry["environment"] = lat["environment"]
    return entry


def markdown(data: dict[str, Any]) -> str:
    env = data["models"][0]["environment"] if data["models"] else {}
    cpu = env.get("cpu") or {}
    lines = [
        "# int8 recipes on this CPU",
        "",
        f"Made by `{data['command']}` on {data['started']} ({data['seconds']:.0f} s).",
        "",
        f"Machine: {cpu.get('model', '?')}, {cpu.get('usable_cpus', '?')} usable CPUs; int8/bf16 flags: "
        f"{', '.join(data['flags']) or 'none'}; ONNX Runtime's int8 path here: **{data['cpu_path']}**; deployinc's recipe for it: "
        f"**{data['chosen']}**.",
        "",
        "Each recipe: percentile calibration on the same seeded natural-statistics images; verified by `deployinc verify`'s int8 "
        "preset (per-image cosine >= 0.99, tie-aware top-1 >= 0.95, top-5 >= 0.99) against eager torch fp32 on "
        f"{data['samples']} images at batch 8; p50 at batch 1, one thread, files interleaved over {data['rounds']} round(s); "
        "speed-up = median over rounds of fp32 p50 / recipe p50 (same run). Random weights with BatchNorm recalibrated "
        "(logits are nearly flat, so raw top-1 agreement is low for every recipe; the verdict's top-1 is tie-aware).",
        "",
    ]
    rows: list[list[str]] = []
    for m in data["models"]:
        fp = m["latency"].get("fp32", {})
        rows.append([m["model"], "fp32", "-", "-", "-", "-", B._f(fp.get("p50_ms"), ".2f"), "1.00"])
        for r, e in m["recipes"].items():
            v = e["verify"]
            rows.append([m["model"], r, v["verdict"].upper(), B._f(v.get("min_cosine"), ".4f"), B._f(v.get("top1_agreement"), ".3f"),
                         B._f(v.get("top1_tie_aware"), ".3f"), B._f(m["latency"].get(r, {}).get("p50_ms"), ".2f"), B._f(e.get("speedup_vs_fp32"), ".2f")])  # fmt: skip
    head = ["model", "recipe", "verdict", "min cosine", "top-1 agr. (raw)", "top-1 (tie-aware)", "p50 ms", "x fp32 ORT"]
    lines += Table(head, rows).markdown_lines()
    flagged = [f"{m['model']} {k}: {'; '.join(v['unsteady'])}" for m in data["models"] for k, v in m["latency"].items() if v.get("unsteady")]
    if flagged:
        lines += ["", "Timings bench flagged unsteady (compare within a round, not across runs):", *[f"- {x}" for x in flagged]]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from deployinc.core.env import speed_flags
    from deployinc.precision.recipe import cpu_int8_path, recipe_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="googlenet,resnet50")
    ap.add_argument("--work", default=str(ROOT / "build" / "int8-recipes"))
    ap.add_argument("--out-md", default=None, help="default docs/benchmarks/int8-recipes-<machine>.md")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="threads of export and verify (timing is at one thread)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data: dict[str, Any] = {"command": "python scripts/int8_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                            "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "flags": speed_flags(),
                            "cpu_path": cpu_int8_path(), "chosen": recipe_for("cpu").name, "samples": args.samples, "rounds": args.rounds,
                            "models": [measure_model(m, work, args) for m in args.models.split(",") if m]}  # fmt: skip
    data["seconds"] = time.perf_counter() - t0
    machine = machine_slug(cpus=False)
    out = Path(args.out_md or ROOT / "docs" / "benchmarks" / f"int8-recipes-{machine}.md")
    from deployinc.io import atomic_write_text

    atomic_write_text(out, markdown(data), force=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1, default=str), force=True)
    B.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
