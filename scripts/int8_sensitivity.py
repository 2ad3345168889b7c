#!/usr/bin/env python
"""Where a whole-model int8 file's error comes from: each layer alone in float, the weights alone in int8, one run.

The layer fallback (``deployinc.precision.fallback``) is cheap when a few layers carry the error and costly when
every layer carries a little of it. This script says which case a model is, on this CPU: it exports the model
(seeded random weights unless ``--weights``), quantizes it with this CPU's recipe (percentile calibration on
seeded natural-statistics images), and judges against the fp32 file on ORT CPU, by the int8 preset, on
``--samples`` other seeded images:

- the fp32 model with only its Conv/Gemm weights rounded to int8 per output channel (what the weights alone cost);
- the whole int8 model with its weights rounded to nearest, and by GPTQ (deployinc's default);
- every candidate layer of the GPTQ file alone kept in float (the fallback's ranking), with its share of the
  layers' multiply-adds;
- each calibration method (minmax, entropy, percentile, mse) for the whole model, on the images deploy's layer
  search judges (96, in sets of ``--samples``), each set on its own by the int8 preset itself (not the search's
  tighter cosine);
- the error block by block: ``deployinc verify --localize`` of the whole int8 file against eager torch, the cosine
  at each value every path from the input to the output goes through (a block's output), on ``--samples`` images.

    python scripts/int8_sensitivity.py                       # googlenet, resnet50 -> docs/benchmarks/int8-sensitivity-<machine>.md
    python scripts/int8_sensitivity.py --models inception_cifar --out-md /tmp/s.md   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from deployinc.core.env import machine_slug  # noqa: E402
from deployinc.core.precisions import INT8  # noqa: E402
from deployinc.core.table import Table  # noqa: E402
import bench_int8 as B  # noqa: E402 - the sibling driver's helpers (log, machine name)


def weights_only(fp32: Any) -> Any:
    """``fp32`` with each Conv/Gemm weight rounded to symmetric int8 per output channel (activations stay float)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(fp32)
    weights = {n.input[1] for n in m.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1}
    for t in m.graph.initializer:
        if t.name in weights:
            w = numpy_helper.to_array(t)
            scale = np.abs(w).reshape(w.shape[0], -1).max(1) / 127.0
            scale = np.where(scale > 0, scale, 1.0).reshape([-1] + [1] * (w.ndim - 1))
            t.CopyFrom(numpy_helper.from_array((np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32), t.name))
    return m


def measure_model(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from deployinc.core.images import natural_images
    from deployinc.export import export_pipeline
    from deployinc.io import load_onnx
    from deployinc.precision import fallback as F
    from deployinc.subject.inputs import input_spec
    from deployinc.precision.int8 import quantize_int8

    path = work / f"{name}.onnx"
    if not path.is_file():
        B.log(f"{name}: export")
        export_pipeline(name, out=path, threads=args.threads, **({"weights": args.weights} if args.weights else {}))
    fp32 = load_onnx(path).model
    spec = input_spec(fp32)
    cal = natural_images(args.calibration, spec.chw, spec.mean, spec.std, seed=1)
    nearest = quantize_int8(path, cal, method="percentile", target="cpu", spec=spec, weight_rounding="nearest")
    q = quantize_int8(path, cal, method="percentile", target="cpu", spec=spec, weight_rounding="gptq")
    oracle = F.onnx_oracle(fp32, natural_images(args.samples, spec.chw, spec.mean, spec.std, seed=0), spec.name, INT8, threads=args.threads)
    whole_nearest, whole, wonly = oracle.judge(nearest.model), oracle.judge(q.model), oracle.judge(weights_only(fp32))
    B.log(f"{name}: whole int8 {whole_nearest.line} (nearest), {whole.line} (gptq); weights alone in int8 {wonly.line}")
    costs = F.layer_costs(fp32)
    total = sum(costs.values()) or 1
    layers = []
    for k, n in enumerate(F.layer_candidates(q.model), 1):
        j = oracle.judge(F.keep_float(q.model, [n], fp32))
        layers.append({"node": n, "module": F.module_label(q.model, n), "cosine": j.metrics.get("cosine"), "passed": j.passed,
                       "share": costs.get(n, 0) / total})  # fmt: skip
        if k % 10 == 0:
            B.log(f"{name}: {k} layers judged")
    return {"model": name, "recipe": q.report["recipe"]["name"], "whole": whole.metrics, "whole_line": whole.line,
            "whole_nearest_line": whole_nearest.line, "gptq_layers": q.report["weight_rounding"].get("layers"),
            "weights_only": wonly.metrics, "weights_only_line": wonly.line, "layers": layers,
            "methods": methods(path, fp32, spec, cal, args), "blocks": blocks(q, work / f"{name}.int8.onnx", args)}  # fmt: skip


def methods(path: Path, fp32: Any, spec: Any, cal: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The whole model int8 by each calibration method (GPTQ weights), judged on deploy's search images by the preset."""
    from deployinc.core.images import natural_images
    from deployinc.core.metrics import compare_outputs
    from deployinc.precision import fallback as F
    from deployinc.precision.int8 import quantize_int8

    n, k = F.search_image_count(args.samples), args.samples
    oracle = F.onnx_oracle(fp32, natural_images(n, spec.chw, spec.mean, spec.std, seed=0), spec.name, INT8, threads=args.threads)
    rows = []
    for method in ("minmax", "entropy", "percentile", "mse"):
        q = quantize_int8(path, cal, method=method, target="cpu", spec=spec, weight_rounding="gptq")
        test = oracle.outputs(q.model)
        ref, out = (np.asarray(next(iter(d.values())), dtype=np.float64) for d in (oracle.reference, test))
        cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
        sets = [compare_outputs({a: v[i : i + k] for a, v in oracle.reference.items()}, {a: v[i : i + k] for a, v in test.items()}, oracle.tolerance)
                for i in range(0, n, k)]  # fmt: skip
        passing = sum(all(not c.failures for c in comps) for comps in sets)
        rows.append({"method": method, "min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)), "sets": len(sets), "sets_passing": passing})
        B.log(f"{method}: worst image cosine {cos.min():.4f}, {passing} of {len(sets)} sets pass")
    return rows


def blocks(q: Any, path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The cosine against eager torch at each single-tensor cut of the whole int8 file (verify's localisation)."""
    from deployinc.io import load_onnx, save_onnx
    from deployinc.verify.core import verify
    from deployinc.verify.localize import single_tensor_cuts

    save_onnx(q.model, path, force=True)
    rep = verify(path, providers="cpu", batches=[1], samples=args.samples, localize=True, localize_method="all", threads=args.threads)
    cuts = set(single_tensor_cuts(load_onnx(path).model))
    loc = rep.localization
    points = [p for p in (loc.points if loc is not None else []) if p.compared and p.onnx_value in cuts]
    return [{"module": p.module or "(output)", "type": p.module_type, "cosine": p.cosine} for p in points]


def markdown(entries: list[dict[str, Any]], args: argparse.Namespace, started: str, seconds: float) -> str:
    from deployinc.core.env import machine
    from deployinc.precision.recipe import cpu_int8_path

    m = machine(gpu=False)
    flags = m.features
    out = [f"# Where int8's error comes from, on {m.slug(cpus=False)}", "",
           f"Made by `python scripts/int8_sensitivity.py --models {args.models}` on {started} ({seconds:.0f} s). CPU: {m.cpu_model}; "
           f"int8/bf16 flags: {flags}; the int8 path here: {cpu_int8_path()}.", "",
           f"Each model: {'the weights in ' + args.weights if args.weights else 'seeded random weights, BatchNorm recalibrated'}; "
           f"int8 by this CPU's recipe, percentile calibration on {args.calibration} seeded natural-statistics images; judged "
           f"against the fp32 file on ORT CPU by the int8 preset (per-image cosine >= 0.99) on {args.samples} other seeded "
           "images. 'min cosine' is the worst image's.", ""]  # fmt: skip
    for e in entries:
        cos = [x["cosine"] for x in e["layers"] if x["cosine"] is not None]
        best = max(e["layers"], key=lambda x: x["cosine"] or 0.0) if e["layers"] else None
        out += [f"## {e['model']}", "",
                f"- whole model int8 (recipe {e['recipe']}), weights rounded to nearest: {e['whole_nearest_line']}",
                f"- whole model int8, weights rounded by GPTQ ({e['gptq_layers']} layers; deployinc's default): {e['whole_line']}",
                f"- only the weights in int8 (per channel, nearest), activations float: {e['weights_only_line']}",
                f"- each of the {len(e['layers'])} layers alone in float: min cosine from {min(cos):.4f} to {max(cos):.4f}"
                + (f" (best: `{best['module']}`, {100 * best['share']:.2f}% of the multiply-adds)" if best else "")
                + f"; {sum(bool(x['passed']) for x in e['layers'])} of them alone pass", ""]  # fmt: skip
        out += [f"Calibration methods, the whole model (GPTQ weights), on {e['methods'][0]['sets'] * args.samples if e['methods'] else 0} "
                f"images in sets of {args.samples}, each judged by the preset on its own:", ""]
        out += Table(["method", "worst image cosine", "median image cosine", "sets passing"],
                     [[x["method"], f"{x['min_cosine']:.4f}", f"{x['median_cosine']:.4f}", f"{x['sets_passing']} of {x['sets']}"]
                      for x in e["methods"]]).markdown_lines()  # fmt: skip
        out += ["", f"The error block by block (`deployinc verify --localize` of the whole int8 file against eager torch, {args.samples} "
                "images, worst image): the cosine at each value every path from the input to the output goes through.", ""]
        out += Table(["point (torch module)", "type", "cosine"], [[x["module"], x["type"], f"{x['cosine']:.4f}"] for x in e["blocks"]]).markdown_lines()
        out += ["", "Each layer alone in float:", ""]
        out += Table(["layer (torch module)", "ONNX node", "min cosine, this layer alone in float", "share of multiply-adds"],
                     [[x["module"], x["node"], f"{x['cosine']:.4f}", f"{100 * x['share']:.2f}%"] for x in e["layers"]]).markdown_lines()  # fmt: skip
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="googlenet,resnet50")
    ap.add_argument("--weights", default=None, help="a checkpoint for every model (default: seeded random weights)")
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=str(ROOT / "build" / "int8-sensitivity"))
    ap.add_argument("--out-md", default=None)
    args = ap.parse_args(argv)
    from deployinc.io import atomic_write_text

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    entries = [measure_model(m.strip(), work, args) for m in args.models.split(",") if m.strip()]
    out = Path(args.out_md or ROOT / "docs" / "benchmarks" / f"int8-sensitivity-{machine_slug(cpus=False)}.md")
    atomic_write_text(out, markdown(entries, args, started, time.perf_counter() - t0), force=True)
    B.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
