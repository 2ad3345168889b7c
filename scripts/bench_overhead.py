#!/usr/bin/env python
"""Check that deployinc's benchmark harness adds nothing, and that it repeats.

1. Overhead: on one ONNX Runtime CPU session, alternate blocks of a bare loop (``t0 = perf_counter();
   session.run(None, feeds); perf_counter() - t0``) with blocks timed by deployinc's harness
   (:func:`deployinc.bench.timing.measure` on the runner's bench step), and compare the p50 of all samples of
   each. Alternating blocks put both under the same machine load. Passes when they are within 5%.
2. Repeatability: run ``deployinc bench MODEL --json`` twice, in two fresh processes, and compare the p50 of each
   backend. Passes when every pair is within 10%.

    python scripts/bench_overhead.py                     # googlenet, exported into a temporary folder
    python scripts/bench_overhead.py --model model.onnx --batch 8 --iters 200

Prints the numbers and exits 0 when both checks pass, 1 otherwise. A timing check is a script, not a unit test:
on a shared machine, rerun it when it is quiet (its output says the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def overhead(model_path: Path, batch: int, threads: int, iters: int, blocks: int, warmup: int) -> tuple[float, float]:
    import numpy as np

    from deployinc.bench import open_onnx
    from deployinc.bench.timing import measure
    from deployinc.runners.ort import OrtRunner

    m = open_onnx(model_path)
    x = m.inputs(batch)
    with OrtRunner(str(model_path), "cpu", threads=threads) as runner:
        feeds = {m.input_name: x}
        sess = runner.session
        for _ in range(warmup):
            sess.run(None, feeds)
        bare: list[float] = []
        harness: list[float] = []
        clock = time.perf_counter
        step = runner.bench_steps(feeds).e2e
        for b in range(blocks):
            order = ("bare", "harness") if b % 2 == 0 else ("harness", "bare")
            for which in order:
                if which == "bare":
                    for _ in range(iters):
                        t0 = clock()
                        sess.run(None, feeds)
                        bare.append(clock() - t0)
                else:
                    harness.extend(measure(step, iters=iters, warmup=1).samples)
        return float(np.median(bare)) * 1e3, float(np.median(harness)) * 1e3


def repeat(model_path: Path, batch: int, threads: int, iters: int, backends: str, tmp: Path, rounds: int = 3) -> dict[str, tuple[float, float]]:
    out = []
    for i in range(2):
        j = tmp / f"run{i}.json"
        cmd = [sys.executable, "-m", "deployinc", "bench", str(model_path), "--backends", backends, "--batch", str(batch),
               "--iters", str(iters), "--warmup", "10", "--threads", str(threads), "--rounds", str(rounds), "--json", str(j),
               "--no-progress", "--force"]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        out.append(json.loads(j.read_text()))
    pairs = {}
    for r in out[0]["results"]:
        if r["status"] != "ok":
            continue
        other = next(
            (s for s in out[1]["results"] if s["status"] == "ok" and (s["backend"], s["batch"], s["mode"]) == (r["backend"], r["batch"], r["mode"])),
            None,
        )
        if other is not None:
            pairs[f"{r['backend']} b{r['batch']} {r['mode']}"] = (r["stats"]["p50"], other["stats"]["p50"])
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="googlenet", help="an .onnx file, or a model name to export")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--iters", type=int, default=100, help="iterations per block (overhead) and per run (repeat)")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--backends", default="torch,ort-cpu", help="backends of the repeatability check")
    ap.add_argument("--repeat-iters", type=int, default=300,
                    help="iterations per repeated bench run: long enough to span the slow and fast spells of a shared host")
    ap.add_argument("--repeat-rounds", type=int, default=6, help="rounds of each repeated bench run")
    args = ap.parse_args(argv)

    from deployinc.bench.harness import default_threads

    threads = args.threads or default_threads()
    with tempfile.TemporaryDirectory(prefix="deployinc-overhead-") as tmp_s:
        tmp = Path(tmp_s)
        path = Path(args.model)
        if not args.model.endswith(".onnx"):
            from deployinc.export import export_pipeline

            path = tmp / f"{args.model}.onnx"
            export_pipeline(args.model, out=path, threads=threads, quick_check=False)
        print(f"model {args.model}, batch {args.batch}, threads {threads}, load average before {os.getloadavg()}")

        bare, harness = overhead(path, args.batch, threads, args.iters, args.blocks, warmup=20)
        ratio = harness / bare
        ok1 = abs(ratio - 1) <= 0.05
        print(
            f"overhead: bare session.run p50 {bare:.3f} ms, harness p50 {harness:.3f} ms on the same session "
            f"({args.blocks} alternating blocks of {args.iters}): ratio {ratio:.4f} -> {'PASS' if ok1 else 'FAIL'} (within 5%)"
        )

        pairs = repeat(path, args.batch, threads, args.repeat_iters, args.backends, tmp, args.repeat_rounds)
        ok2 = bool(pairs)
        for label, (a, b) in pairs.items():
            rel = b / a
            good = abs(rel - 1) <= 0.10
            ok2 &= good
            print(f"repeat ({args.repeat_iters} iterations in {args.repeat_rounds} rounds per run): {label}: run 1 p50 {a:.3f} ms, run 2 p50 {b:.3f} ms, ratio {rel:.4f} -> {'PASS' if good else 'FAIL'} (within 10%)")
        print(f"load average after {os.getloadavg()}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
