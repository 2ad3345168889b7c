#!/usr/bin/env python
"""How stable a lower-precision verdict is: each file judged on several fresh sets of verification images.

deploy and verify judge a file on 16 generated images (seed 0). Where a precision's error sits near its preset
(int8 on a random-weight network, whose logits are nearly flat), the verdict depends on which 16 images were
drawn. This script exports the fp32 reference of ``--model`` (seeded random weights unless ``--weights``), then
judges every file given against it on ORT CPU, by the preset of the file's own precision, on ``--sets`` fresh sets
of ``--samples`` seeded natural-statistics images (seeds 100, 101, ...; none of them verify's, the calibration's or
a layer search's), and writes how many sets each file passes. Files run on ORT CPU, or on the backend named after
the path (``LABEL=PATH@openvino``: the file as deploy ships it for that backend, at the file's precision;
``LABEL=PATH@openvino:bf16``: an int8 file with its float layers in bf16, as deploy's ``-float-bf16`` candidate).

    python scripts/verdict_stability.py --model googlenet \\
        --file shipped=build/deploy-zoo/googlenet.deploy/model.onnx --file whole-int8=/tmp/gn.int8.onnx
    python scripts/verdict_stability.py --model resnet50 --file shipped=build/deploy-zoo/resnet50.deploy/model.onnx@openvino:bf16
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


def _oracle_on(backend: str | None, base: Any) -> Any:
    """``base`` (an ORT CPU oracle), its candidate run on ``backend`` instead (None: ORT CPU; ``openvino:bf16``: an
    int8 file's float layers in bf16): the layer search's own Oracle, pointed at that backend."""
    if backend is None:
        return base
    from dataclasses import replace

    import deployinc.backends as B

    name, _, floats = backend.partition(":")
    return replace(base, backend=str(B.canonical(name) or name), float_precision=floats or None)


def _backend_problem(backend: str, path: Path) -> str | None:
    """Why ``BACKEND[:FLOAT]`` cannot run the file at ``path`` (None when it can)."""
    import deployinc.backends as B
    from deployinc.core.graph import detect_precision
    from deployinc.io import load_onnx

    name, _, floats = backend.partition(":")
    if B.canonical(name) is None or not B.get(str(B.canonical(name))).onnx:
        return f"{name!r} is not an ONNX backend ({', '.join(B.ONNX_BACKENDS)})"
    if not floats:
        return None
    precision, _ = detect_precision(load_onnx(path).model)
    problem = B.float_precision_problem(floats, precision, [str(B.canonical(name))])
    return f"{problem[0]} ({problem[1]})" if problem else None


def judge_files(model: str, files: dict[str, Path], args: argparse.Namespace, backends: dict[str, str | None] | None = None) -> dict[str, list[Any]]:
    """label -> one judgement per fresh set (on ``backends[label]``, ORT CPU when None)."""
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
            oracle = _oracle_on((backends or {}).get(label), F.onnx_oracle(fp32, images, spec.name, precision, threads=args.threads))
            out[label].append(oracle.judge(m))
        B.log(f"{model}: set {k + 1}/{args.sets} judged")
    return out


def markdown(model: str, files: dict[str, Path], results: dict[str, list[Any]], args: argparse.Namespace, started: str, seconds: float,
             backends: dict[str, str | None] | None = None) -> str:  # fmt: skip
    from deployinc.core.env import machine

    m = machine(gpu=False)
    rows = []
    for label, js in results.items():
        cos = [j.metrics.get("cosine") for j in js if j.metrics.get("cosine") is not None]
        rows.append([label, f"`{files[label]}`", (backends or {}).get(label) or "ort-cpu", f"{sum(j.passed for j in js)} of {len(js)}", "".join("P" if j.passed else "F" for j in js),
                     f"{min(cos):.4f} to {max(cos):.4f}" if cos else "-"])  # fmt: skip
    lines = [f"# Verdict stability: {model}", "",
             f"Made by `python scripts/verdict_stability.py --model {model} ...` on {started} ({seconds:.0f} s), CPU: {m.cpu_model}. "
             f"Each file judged against the fp32 reference ({'weights ' + args.weights if args.weights else 'seeded random weights'}) "
             f"by its precision's preset, on {args.sets} fresh sets of {args.samples} seeded natural-statistics images "
             f"(seeds {FIRST_SEED} to {FIRST_SEED + args.sets - 1}).", ""]  # fmt: skip
    lines += Table(["file", "path", "runs on", "sets passed", "per set", "worst-image cosine per set"], rows).markdown_lines()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the model the files were made from (its fp32 export is the reference)")
    ap.add_argument("--file", action="append", default=[], metavar="LABEL=PATH[@BACKEND[:bf16]]",
                    help="a file to judge (on ORT CPU, or BACKEND; :bf16: an int8 file's float layers in bf16), repeatable")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=str(ROOT / "build" / "verdict-stability"))
    ap.add_argument("--out-md", default=None)
    args = ap.parse_args(argv)
    from deployinc.io import atomic_write_text

    files: dict[str, Path] = {}
    backends: dict[str, str | None] = {}
    for item in args.file:
        label, sep, rest = item.partition("=")
        path, at, backend = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not sep or not Path(path).is_file():
            ap.error(f"--file {item!r}: give LABEL=PATH[@BACKEND] of an existing ONNX file")
        problem = _backend_problem(backend, Path(path)) if backend else None
        if problem:
            ap.error(f"--file {item!r}: {problem}")
        files[label], backends[label] = Path(path), (backend or None)
    if not files or args.sets < 1 or args.samples < 1:
        ap.error("give at least one --file, and --sets / --samples of at least 1")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    results = judge_files(args.model, files, args, backends)
    text = markdown(args.model, files, results, args, started, time.perf_counter() - t0, backends)
    if args.out_md:
        atomic_write_text(Path(args.out_md), text, force=True)
        B.log(f"wrote {args.out_md}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
