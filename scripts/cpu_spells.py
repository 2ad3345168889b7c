#!/usr/bin/env python
"""Is this machine's speed steady? Times one ONNX Runtime CPU session in short blocks for a while.

On the 2-CPU VM deployinc is built on, ORT runs googlenet at about 15 ms or about 18 ms, in spells of seconds to
minutes, which makes two benchmark runs disagree although each is steady (docs/benchmarks/bench-overhead.md).
This script tells which part of the machine changes:

1. one thread, moved between the CPUs block by block: do the CPUs themselves differ or change speed?
2. all the threads together, with ORT's defaults and with the options that touch how threads share work
   (``session.dynamic_block_base``, spinning off), interleaved block by block: does the spell come from how the
   threads cooperate, and does an ORT option avoid it?
3. block by block, the round trip of a cache line between two CPUs (:func:`deployinc.bench.cpu_link.cpu_round_trip_ns`)
   beside ORT's time with all threads, and with ``--eager NAME`` eager torch's time on the same model
   (``deployinc.load_model(NAME)``) and the ratio, then a line per placement of the CPUs: blocks grouped in
   bands of round trip a factor sqrt(2) wide from the smallest seen.

    python scripts/cpu_spells.py googlenet.onnx --seconds 60
    python scripts/cpu_spells.py mobilenet_v2.onnx --only 3 --eager mobilenet_v2 --seconds 600

Prints a line per test; changes nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def describe(label: str, p50s: list[float]) -> str:
    import numpy as np

    a = np.asarray(p50s)
    counts, edges = np.histogram(a, bins=6)
    hist = ", ".join(f"{lo:.1f}-{hi:.1f}: {c}" for lo, hi, c in zip(edges[:-1], edges[1:], counts))
    return f"{label}: {len(a)} blocks, block p50 min {a.min():.2f} median {np.median(a):.2f} max {a.max():.2f} ms; histogram [{hist}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="an .onnx file (input named as in the file, float32 NCHW)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each test")
    ap.add_argument("--block", type=int, default=10, help="runs per block")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", default="1,2,3", help="which tests to run, e.g. 3")
    ap.add_argument("--eager", default=None, metavar="NAME", help="test 3: also time eager torch on this model name")
    args = ap.parse_args(argv)
    tests = {t.strip() for t in args.only.split(",")}

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

    if "1" in tests:
        one_thread_by_cpu(first, feeds, cpus, args)
    if "2" in tests:
        thread_options(session, feeds, args)
    if "3" in tests:
        by_placement(session(args.threads), feeds, args)
    print(f"load average after {os.getloadavg()}")
    return 0


def one_thread_by_cpu(first, feeds, cpus, args) -> None:
    """Test 1: one thread, moved between the CPUs block by block."""
    import numpy as np

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


def thread_options(session, feeds, args) -> None:
    """Test 2: all threads, ORT's default against the options that change how threads share work, interleaved."""
    import numpy as np

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


def by_placement(sess, feeds, args) -> None:
    """Test 3: per block, the CPUs' round trip, ORT's p50 and (with --eager) eager torch's p50, grouped by placement."""
    import numpy as np

    from deployinc.bench.cpu_link import cpu_round_trip_ns

    eager = None
    if args.eager:
        import torch

        import deployinc

        torch.set_num_threads(args.threads)
        module = deployinc.load_model(args.eager).module.eval()
        x = torch.from_numpy(next(iter(feeds.values())))

        def eager() -> None:
            with torch.inference_mode():
                module(x)

        for _ in range(5):
            eager()
    for _ in range(5):
        sess.run(None, feeds)
    blocks: list[tuple[float, float, float | None]] = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        link = cpu_round_trip_ns()
        if link is None:
            print("the CPUs' round trip cannot be measured here (one usable CPU, not Linux, or a saturated machine)")
            return
        ort_ms = float(np.median([_timed(sess, feeds) for _ in range(args.block)])) * 1e3
        eager_ms = float(np.median([_timed_call(eager) for _ in range(args.block)])) * 1e3 if eager else None
        blocks.append((link, ort_ms, eager_ms))
        extra = f", eager {eager_ms:.2f} ms, ratio {eager_ms / ort_ms:.2f}x" if eager_ms else ""
        print(f"  block: round trip {link:.0f} ns, ORT {ort_ms:.2f} ms{extra}", flush=True)
    if not blocks:
        return
    # group blocks by placement: bands of round trip a factor sqrt(2) wide, from the smallest value seen
    smallest = min(b[0] for b in blocks)
    bands: dict[int, list[tuple[float, float, float | None]]] = {}
    for b in blocks:
        bands.setdefault(int(math.log(b[0] / smallest, math.sqrt(2))), []).append(b)
    for k in sorted(bands):
        group = bands[k]
        lo, hi = smallest * math.sqrt(2) ** k, smallest * math.sqrt(2) ** (k + 1)
        links, orts = [b[0] for b in group], [b[1] for b in group]
        line = (
            f"round trip {lo:.0f}-{hi:.0f} ns: {len(group)} blocks (median {np.median(links):.0f} ns); "
            f"ORT p50 median {np.median(orts):.2f} ms"
        )
        if group[0][2] is not None:
            eagers = [b[2] for b in group]
            ratios = [b[2] / b[1] for b in group]
            line += f"; eager median {np.median(eagers):.2f} ms"
            line += f"; eager/ORT block by block median {np.median(ratios):.2f}x"
        print(line, flush=True)


def _timed_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed(session, feeds) -> float:
    return _timed_call(lambda: session.run(None, feeds))


if __name__ == "__main__":
    sys.exit(main())
