#!/usr/bin/env python
"""How stable a lower-precision verdict is: each file judged on several fresh sets of verification images.

deploy and verify judge a file on 16 generated images (seed 0). Where a precision's error sits near its preset
(int8 on a random-weight network, whose logits are nearly flat), the verdict depends on which 16 images were
drawn. This script exports the fp32 reference of ``--model`` (seeded random weights unless ``--weights``), then
judges every file given against it on ORT CPU, by the preset of the file's own precision, on ``--sets`` fresh sets
of ``--samples`` seeded natural-statistics images (seeds 100, 101, ...; none of them verify's, the calibration's or
a layer search's), and writes how many sets each file passes. Every file runs on ORT CPU (a file deploy ships for
OpenVINO is judged in its ORT form).

    python scripts/verdict_stability.py --model googlenet \\
        --file shipped=build/deploy-zoo/googlenet.deploy/model.onnx --file whole-int8=/tmp/gn.int8.onnx
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from deployinc.core.table import Table  # noqa: E402
import bench_int8 as B  # noqa: E402 - the sibling driver's helpers (log)

#: Seed of the first fresh set (verify and deploy's layer search use 0, deploy's calibration 1).
FIRST_SEED = 100


def judge_files(model: str, files: dict[str, Path], args: argparse.Namespace) -> dict[str, list[Any]]:
    """label -> one judgement per fresh set."""
    from deployinc.core.graph import detect_precision
    from deployinc.core.images import natural_images
    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.precision import fallback as F
    from deployinc.subject.inputs import input_spec

    ref_path = Path(args.work) / f"{model}.onnx"
    if not ref_path.is_file():
        B.log(f"{model}: export the fp32 reference")
        export_pipeline(model, out=ref_path, threads=args.threads, **({"weights": args.weights} if args.weights else {}))
    fp32 = load_onnx(ref_path).model
    spec = input_spec(fp32)
    loaded = {label: load_onnx(p).model for label, p in files.items()}
    out: dict[str, list[Any]] = {label: [] for label in files}
    for k in range(args.sets):
        images = natural_images(args.samples, spec.chw, spec.mean, spec.std, seed=FIRST_SEED + k)
        for label, m in loaded.items():
            precision, _ = detect_precision(m)
            out[label].append(F.onnx_oracle(fp32, images, spec.name, precision, threads=args.threads).judge(m))
        B.log(f"{model}: set {k + 1}/{args.sets} judged")
    return out


def markdown(model: str, files: dict[str, Path], results: dict[str, list[Any]], args: argparse.Namespace, started: str, seconds: float) -> str:
    from deployinc.core.env import machine

    m = machine(gpu=False)
    rows = []
    for label, js in results.items():
        cos = [j.metrics.get("cosine") for j in js if j.metrics.get("cosine") is not None]
        rows.append([label, f"`{files[label]}`", f"{sum(j.passed for j in js)} of {len(js)}", "".join("P" if j.passed else "F" for j in js),
                     f"{min(cos):.4f} to {max(cos):.4f}" if cos else "-"])  # fmt: skip
    lines = [f"# Verdict stability: {model}", "",
             f"Made by `python scripts/verdict_stability.py --model {model} ...` on {started} ({seconds:.0f} s), CPU: {m.cpu_model}. "
             f"Each file judged against the fp32 reference ({'weights ' + args.weights if args.weights else 'seeded random weights'}) "
             f"on ORT CPU by its precision's preset, on {args.sets} fresh sets of {args.samples} seeded natural-statistics images "
             f"(seeds {FIRST_SEED} to {FIRST_SEED + args.sets - 1}).", ""]  # fmt: skip
    lines += Table(["file", "path", "sets passed", "per set", "worst-image cosine per set"], rows).markdown_lines()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the model the files were made from (its fp32 export is the reference)")
    ap.add_argument("--file", action="append", default=[], metavar="LABEL=PATH", help="a file to judge, repeatable")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=str(ROOT / "build" / "verdict-stability"))
    ap.add_argument("--out-md", default=None)
    args = ap.parse_args(argv)
    from deployinc.io import atomic_write_text

    files: dict[str, Path] = {}
    for item in args.file:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--file {item!r}: give LABEL=PATH of an existing ONNX file")
        files[label] = Path(path)
    if not files or args.sets < 1 or args.samples < 1:
        ap.error("give at least one --file, and --sets / --samples of at least 1")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    results = judge_files(args.model, files, args)
    text = markdown(args.model, files, results, args, started, time.perf_counter() - t0)
    if args.out_md:
        atomic_write_text(Path(args.out_md), text, force=True)
        B.log(f"wrote {args.out_md}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
