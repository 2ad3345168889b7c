#!/usr/bin/env python
"""Check that deployinc's benchmark harness adds nothing, and that it repeats.

1. Overhead: on one ONNX Runtime CPU session, alternate blocks of a bare loop (``t0 = perf_counter();
   session.run(None, feeds); perf_counter() - t0``) with blocks timed by deployinc's harness
   (:func:`deployinc.bench.timing.measure` on the runner's bench step). Each bare block is paired with the
   harness block run right next to it (same machine state), and the verdict is the median over pairs of the
   ratio of their p50s: within 5% passes. The p50 of all samples of each is printed too; it is what a host that
   changes speed in the middle of the run (this VM does, see docs/benchmarks/bench-overhead.md) disturbs.
2. Repeatability: run ``deployinc bench MODEL --json`` twice, in two fresh processes, and compare the p50 of each
   backend. Passes when every pair is within 10%. The p50 of each round of each run is printed, so a run that sat
   wholly in a slow or fast state of the host shows as such.

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


def overhead(model_path: Path, batch: int, threads: int, iters: int, blocks: int, warmup: int) -> dict[str, list[list[float]]]:
    """Per-block samples (seconds) of the bare loop and of the harness, blocks in the order of the pairs."""

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
        bare: list[list[float]] = []
        harness: list[list[float]] = []
        clock = time.perf_counter
        step = runner.bench_steps(feeds).e2e
        for b in range(blocks):
            order = ("bare", "harness") if b % 2 == 0 else ("harness", "bare")
            for which in order:
                if which == "bare":
                    block = []
                    for _ in range(iters):
                        t0 = clock()
                        sess.run(None, feeds)
                        block.append(clock() - t0)
                    bare.append(block)
                else:
                    harness.append(measure(step, iters=iters, warmup=1).samples)
        return {"bare": bare, "harness": harness}


def repeat(model_path: Path, batch: int, threads: int, iters: int, backends: str, tmp: Path, rounds: int = 3) -> dict[str, tuple[dict, dict]]:
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
            pairs[f"{r['backend']} b{r['batch']} {r['mode']}"] = (r, other)
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="googlenet", help="an .onnx file, or a model name to export")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--iters", type=int, default=100, help="iterations per block (overhead) and per run (repeat)")
    ap.add_argument("--blocks", type=int, default=10, help="alternating blocks of the overhead check (pairs)")
    ap.add_argument("--backends", default="torch,ort-cpu", help="backends of the repeatability check")
    ap.add_argument("--repeat-iters", type=int, default=300,
                    help="iterations per repeated bench run: long enough to span the slow and fast spells of a shared host")
    ap.add_argument("--repeat-rounds", type=int, default=6, help="rounds of each repeated bench run")
    args = ap.parse_args(argv)

    import numpy as np

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

        blocks = overhead(path, args.batch, threads, args.iters, args.blocks, warmup=20)
        med = lambda xs: float(np.median(xs)) * 1e3  # noqa: E731
        bare_p50 = [med(b) for b in blocks["bare"]]
        harness_p50 = [med(b) for b in blocks["harness"]]
        pair_ratios = [h / b for h, b in zip(harness_p50, bare_p50)]
        ratio = float(np.median(pair_ratios))
        ok1 = abs(ratio - 1) <= 0.05
        pooled = med([x for b in blocks["harness"] for x in b]) / med([x for b in blocks["bare"] for x in b])
        print("overhead: p50 per block, bare / harness (ms): " + ", ".join(f"{b:.2f}/{h:.2f}" for b, h in zip(bare_p50, harness_p50)))
        print(
            f"overhead: harness over bare session.run on the same session, median of {len(pair_ratios)} adjacent block "
            f"pairs of {args.iters}: ratio {ratio:.4f} -> {'PASS' if ok1 else 'FAIL'} (within 5%); all samples pooled: {pooled:.4f}"
        )

        pairs = repeat(path, args.batch, threads, args.repeat_iters, args.backends, tmp, args.repeat_rounds)
        ok2 = bool(pairs)
        for label, (r1, r2) in pairs.items():
            a, b = r1["stats"]["p50"], r2["stats"]["p50"]
            rel = b / a
            good = abs(rel - 1) <= 0.10
            ok2 &= good
            print(f"repeat ({args.repeat_iters} iterations in {args.repeat_rounds} rounds per run): {label}: run 1 p50 {a:.3f} ms, run 2 p50 {b:.3f} ms, ratio {rel:.4f} -> {'PASS' if good else 'FAIL'} (within 10%)")
            for i, r in enumerate((r1, r2), 1):
                rounds_p50 = r.get("stretch_p50_ms") or []
                print(f"    run {i} p50 per round (ms): " + ", ".join(f"{v:.2f}" for v in rounds_p50))
        print(f"load average after {os.getloadavg()}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
