#!/usr/bin/env python
"""Is this machine's speed steady? Times one ONNX Runtime CPU session in short blocks for a while.

On the 2-CPU VM deployinc is built on, ORT runs googlenet at about 15 ms or about 18 ms, in spells of seconds to
minutes, which makes two benchmark runs disagree although each is steady (docs/benchmarks/bench-overhead.md).
This script tells which part of the machine changes:

1. one thread, moved between the CPUs block by block: do the CPUs themselves differ or change speed?
2. all the threads together, with ORT's defaults and with the options that touch how threads share work
   (``session.dynamic_block_base``, spinning off), interleaved block by block: does the spell come from how the
   threads cooperate, and does an ORT option avoid it?

    python scripts/cpu_spells.py googlenet.onnx --seconds 60

Prints a line per test; changes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def describe(label: str, p50s: list[float]) -> str:
    import numpy as np

    a = np.asarray(p50s)
    counts, edges = np.histogram(a, bins=6)
    hist = ", ".join(f"{lo:.1f}-{hi:.1f}: {c}" for lo, hi, c in zip(edges[:-1], edges[1:], counts))
    return f"{label}: {len(a)} blocks, block p50 min {a.min():.2f} median {np.median(a):.2f} max {a.max():.2f} ms; histogram [{hist}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="an .onnx file (input named as in the file, float32 NCHW)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each of the two tests")
    ap.add_argument("--block", type=int, default=10, help="runs per block")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime as ort

    def session(threads: int, **config: str):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        for k, v in config.items():
            so.add_session_config_entry(k, v)
        return ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])

    first = session(1)
    inp = first.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feeds = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    cpus = sorted(os.sched_getaffinity(0))
    print(f"model {args.model}, CPUs {cpus}, load average before {os.getloadavg()}", flush=True)

    # 1. one thread, CPU by CPU
    per_cpu: dict[int, list[float]] = {c: [] for c in cpus}
    end = time.perf_counter() + args.seconds
    for _ in range(5):
        first.run(None, feeds)
    while time.perf_counter() < end:
        for c in cpus:
            os.sched_setaffinity(0, {c})
            per_cpu[c].append(float(np.median([_timed(first, feeds) for _ in range(args.block)])) * 1e3)
    os.sched_setaffinity(0, set(cpus))
    for c in cpus:
        print(describe(f"1 thread on CPU {c}", per_cpu[c]), flush=True)

    # 2. all threads, ORT's default against the options that change how threads share work, interleaved
    variants = {
        "default": session(args.threads),
        "dynamic_block_base=4": session(args.threads, **{"session.dynamic_block_base": "4"}),
        "spinning off": session(args.threads, **{"session.intra_op.allow_spinning": "0"}),
    }
    for s in variants.values():
        for _ in range(5):
            s.run(None, feeds)
    res: dict[str, list[float]] = {k: [] for k in variants}
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        for k, s in variants.items():
            ts = [_timed(s, feeds) for _ in range(args.block)]
            res[k].append(float(np.median(ts)) * 1e3)
    base = np.asarray(res["default"])
    for k, v in res.items():
        ratio = np.asarray(v) / base
        print(describe(f"{args.threads} threads, {k}", v) + f"; block by block over default: median {np.median(ratio):.3f}", flush=True)
    print(f"load average after {os.getloadavg()}")
    return 0


def _timed(session, feeds) -> float:
    t0 = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
