#!/usr/bin/env python
"""How close is ONNX Runtime to this CPU's arithmetic peak, and what does that leave for "x times eager torch"?

For each model: its multiply-adds (deployinc's profiler), this machine's fp32 matrix-multiply rate (the best of
numpy's and torch's sgemm on 2048x2048 matrices with the same thread count: a practical peak), and the p50 of
eager torch and ORT CPU at batch 1 measured by deployinc's harness in one interleaved run. It prints the rate ORT
achieves as a fraction of that peak, and the largest speedup over eager torch any backend could show if it ran
at the peak. A target above that bound cannot be met by a faster runtime, only by less arithmetic.

    python scripts/cpu_roofline.py googlenet mobilenet_v2 --workdir zoo-onnx
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sgemm_rate(threads: int, n: int = 2048, reps: int = 10) -> dict[str, float]:
    """GFLOP/s of an n x n x n fp32 matrix product (best of ``reps``) through numpy and through torch."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = {}
    for lib, f in (("numpy", lambda: a @ b), ("torch", lambda: ta @ tb)):
        f()
        best = min(_time(f) for _ in range(reps))
        out[lib] = 2 * n**3 / best / 1e9
    return out


def _time(f) -> float:  # noqa: ANN001
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--workdir", default="zoo-onnx", help="where exported ONNX files are kept")
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--iters", type=int, default=60)
    args = ap.parse_args(argv)

    from deployinc.bench import BenchSettings, benchmark, open_onnx
    from deployinc.bench.harness import default_threads
    from deployinc.export import export_pipeline
    from deployinc.models import load_model
    from deployinc.profile import profile_model

    threads = args.threads or default_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    rates = sgemm_rate(threads)
    peak = max(rates.values())
    print(f"fp32 sgemm 2048^3 with {threads} threads: numpy {rates['numpy']:.0f} GFLOP/s, torch {rates['torch']:.0f} GFLOP/s; peak taken as {peak:.0f}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        path = work / f"{name}.onnx"
        if not path.exists():
            export_pipeline(name, out=path, quick_check=False)
        subject = open_onnx(path)
        loaded = load_model(name, weights="none")
        macs = profile_model(loaded.module, (1, *subject.chw), name=name, fused=False).loaded.total.macs
        s = BenchSettings(backends=["torch", "ort-cpu"], batches=[1], iters=args.iters, warmup=10, rounds=3, threads=threads)
        rep = benchmark(subject, s)
        torch_ms = rep.find("torch", "fp32", 1, "e2e").stats.p50
        ort_ms = rep.find("ort-cpu", "fp32", 1, "e2e").stats.p50
        floor_ms = 2 * macs / (peak * 1e9) * 1e3
        print(
            f"{name}: {macs / 1e9:.3f} GMACs; eager torch p50 {torch_ms:.2f} ms ({2 * macs / torch_ms / 1e6:.0f} GFLOP/s), "
            f"ORT CPU p50 {ort_ms:.2f} ms ({2 * macs / ort_ms / 1e6:.0f} GFLOP/s, {100 * floor_ms / ort_ms:.0f}% of peak); "
            f"ORT over eager {torch_ms / ort_ms:.2f}x; at the peak ({floor_ms:.2f} ms) the bound is {torch_ms / floor_ms:.2f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
