#!/usr/bin/env python
"""Does ONNX Runtime's CUDA provider run a model faster with ``prefer_nhwc=1`` (channels-last convolutions)?

For each model (exported into --workdir when missing), fp32 and fp16 (deployinc's fp16 conversion, fp32 I/O),
prefer_nhwc 0 and 1, batch 1 and 64: the compute p50 through IO binding, timed with deployinc's one method
(:func:`deployinc.bench.timing.measure`), and the first two logits so a layout change that alters results shows.
GPU only; prints one line per case.

    python scripts/bench_ort_cuda_layout.py googlenet resnet50 mobilenet_v2 --workdir /tmp/zoo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--workdir", default="zoo-onnx", help="where exported ONNX files are kept")
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--iters", type=int, default=60)
    args = ap.parse_args(argv)

    import numpy as np
    import onnx

    from deployinc.bench.timing import measure, summarize
    from deployinc.errors import DeployincError
    from deployinc.export import export_pipeline
    from deployinc.precision.fp16 import convert_to_fp16
    from deployinc.runners.ort import OrtRunner

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batch.split(",")]
    for name in args.models:
        path = work / f"{name}.onnx"
        if not path.exists():
            export_pipeline(name, out=path, quick_check=False)
        model = onnx.load(str(path))
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        fp16 = convert_to_fp16(model, keep_io_types=True).model.SerializeToString()
        for prec, src in (("fp32", str(path)), ("fp16", fp16)):
            for nhwc in ("0", "1"):
                try:
                    runner = OrtRunner(src, "cuda", provider_options={"prefer_nhwc": nhwc, "use_tf32": "0"})
                    runner.activate()
                except DeployincError as exc:
                    print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
                    return 2
                for b in batches:
                    x = np.random.default_rng(0).standard_normal((b, *dims[1:]), dtype=np.float32)
                    steps = runner.bench_steps({runner.input_names()[0]: x})
                    m = measure(steps.compute, iters=args.iters, warmup=10, sync=steps.sync, max_time_s=2.0)
                    s = summarize(m.samples, b)
                    out = steps.e2e()[0]
                    print(f"{name:12s} {prec} prefer_nhwc={nhwc} batch {b:3d}: compute p50 {s.p50:7.2f} ms min {s.min:7.2f}  out[0,:2]={out[0, :2]}", flush=True)
                    steps.close()
                runner.deactivate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
