"""Issue 3's speed targets, measured as a user sees them (a script, not a timed test).

- ``deployinc verify googlenet.onnx`` (ORT CPU, batch 1 and 8, reference rebuilt from the metadata) in <= 10 s end
  to end; measured with the BatchNorm-statistics cache warm (what every verify after the first sees) and cold
  (the first verify of a random-weight model on a machine);
- ``deployinc verify`` of a googlenet with one weight tensor perturbed (``inception4c.branch2.1.conv.weight``),
  localised automatically, in <= 60 s, and the departure named at that module; also with the bisection over
  truncated graphs that TensorRT backends use (run here on ORT CPU, which has no GPU).

Every command runs as a fresh process; the median of ``--runs`` is reported. Writes a Markdown table.

    python scripts/verify_speed.py [--runs 3] [--onnx googlenet.onnx] [--out docs/verify_speed.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployinc.core.env import machine  # noqa: E402
from deployinc.core.table import Table  # noqa: E402

FAULT_TENSOR = "inception4c.branch2.1.conv.weight"
FAULT_MODULE = "inception4c.branch2.1"


CPU_TIMES: list[float] = []  # user + system seconds of each command, next to its wall time


def run(cmd: list[str], cwd: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    wait_quiet()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_TIMES.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return wall, p


QUIET = {"load": None, "max_wait": 0.0}
LOADS: list[float] = []


def wait_quiet() -> None:
    """With --quiet-load L, wait (up to --max-wait s) until the 1-minute load average is below L: the machine is
    shared, and other processes' work lands in the wall time."""
    limit = QUIET["load"]
    deadline = time.monotonic() + float(QUIET["max_wait"] or 0)
    while limit is not None and os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)
    LOADS.append(os.getloadavg()[0])


def plant_fault(src: Path, dst: Path) -> None:
    """Add noise (half the tensor's std) to one middle-layer weight tensor; keep the metadata."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from deployinc.io import save_onnx

    m = onnx.load(str(src))
    t = next(t for t in m.graph.initializer if t.name == FAULT_TENSOR)
    a = numpy_helper.to_array(t).copy()
    a += np.random.default_rng(0).standard_normal(a.shape).astype(a.dtype) * float(a.std()) * 0.5
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    save_onnx(m, dst, force=True)


def table(rows: list[tuple[str, float, float, float, str]]) -> Table:
    """The page's table: each command, its median wall and CPU time, its target, whether it met it, and its output."""
    cells = [[what, f"{t:.2f}", f"{cpu_s:.2f}", f"{target:.0f}", "yes" if t <= target else "no", note] for what, t, cpu_s, target, note in rows]
    return Table.aligned(["command", "wall, median (s)", "CPU (s)", "target (s)", "met", "output"], cells, "lrrrcl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--onnx", default=None, help="an existing googlenet export (default: export one first, untimed)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "verify_speed.md"))
    ap.add_argument("--quiet-load", type=float, default=None, help="wait for a 1-minute load average below this")
    ap.add_argument("--max-wait", type=float, default=600.0, help="longest wait for a quiet machine, per command")
    args = ap.parse_args()
    QUIET["load"], QUIET["max_wait"] = args.quiet_load, args.max_wait
    exe = shutil.which("deployinc") or str(Path(sys.executable).parent / "deployinc")
    rows: list[tuple[str, float, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        cache = Path(tmp) / "cache"
        env["DEPLOYINC_CACHE_DIR"] = str(cache)
        model = Path(args.onnx).resolve() if args.onnx else Path(tmp) / "googlenet.onnx"
        if not args.onnx:
            print("exporting googlenet (not timed) ...", flush=True)
            _, p = run([exe, "export", "googlenet", "--out", str(model)], tmp, env)
            if p.returncode != 0:
                raise SystemExit(f"export failed:\n{p.stderr}")
        verify = [exe, "verify", str(model), "--providers", "cpu", "--batch", "1,8"]

        cold = []
        c0 = len(CPU_TIMES)
        for _ in range(args.runs):
            shutil.rmtree(cache, ignore_errors=True)
            s, p = run(verify, tmp, env)
            assert p.returncode == 0, p.stdout + p.stderr
            cold.append(s)
        print(f"verify, cold cache: {[round(c, 2) for c in cold]}", flush=True)
        cold_cpu = statistics.median(CPU_TIMES[c0:])
        warm = []
        c0 = len(CPU_TIMES)
        for _ in range(args.runs):
            s, p = run(verify, tmp, env)
            assert p.returncode == 0, p.stdout + p.stderr
            warm.append(s)
        print(f"verify, warm cache: {[round(w, 2) for w in warm]}", flush=True)
        warm_cpu = statistics.median(CPU_TIMES[c0:])
        summary = next((ln for ln in p.stdout.splitlines() if ln.startswith("PASS")), "")
        rows.append(("deployinc verify googlenet.onnx (ORT CPU, batch 1,8; BN-stats cache warm)", statistics.median(warm), warm_cpu, 10.0, summary))
        rows.append(("deployinc verify googlenet.onnx (ORT CPU, batch 1,8; cold: BN recalibration)", statistics.median(cold), cold_cpu, 10.0, ""))

        bad = Path(tmp) / "googlenet-fault.onnx"
        plant_fault(model, bad)
        loc = []
        line = ""
        c0 = len(CPU_TIMES)
        for _ in range(args.runs):
            s, p = run([exe, "verify", str(bad), "--providers", "cpu"], tmp, env)
            assert p.returncode == 1, p.stdout + p.stderr
            line = next((ln.strip() for ln in p.stdout.splitlines() if "first over budget" in ln), "")
            assert FAULT_MODULE in line, p.stdout
            loc.append(s)
        print(f"verify + localisation of {FAULT_TENSOR}: {[round(v, 2) for v in loc]}", flush=True)
        rows.append((f"planted fault ({FAULT_TENSOR} perturbed): verify + automatic localisation", statistics.median(loc), statistics.median(CPU_TIMES[c0:]), 60.0, line[:160]))

        bis = []
        c0 = len(CPU_TIMES)
        for _ in range(args.runs):
            s, p = run([exe, "verify", str(bad), "--providers", "cpu", "--localize-method", "bisect"], tmp, env)
            assert p.returncode == 1, p.stdout + p.stderr
            line = next((ln.strip() for ln in p.stdout.splitlines() if "first over budget" in ln), "")
            assert FAULT_MODULE in line, p.stdout
            bis.append(s)
        runs = next((ln.strip() for ln in p.stdout.splitlines() if ln.strip().startswith("localisation on")), "")
        print(f"verify + localisation by bisection (truncated graphs, as for TensorRT): {[round(v, 2) for v in bis]}", flush=True)
        rows.append(("same, localised by bisection over truncated graphs (TensorRT's method, here on ORT CPU)", statistics.median(bis), statistics.median(CPU_TIMES[c0:]), 60.0, runs[:160]))

    m = machine(gpu=False)
    flags = f" --quiet-load {args.quiet_load:g}" if args.quiet_load is not None else ""
    lines = [
        "# deployinc verify: speed",
        "",
        f"Machine: {m.cpu_model}, {m.logical_cpus} logical CPUs (shared with other work: 1-minute load average "
        f"{min(LOADS):.2f} to {max(LOADS):.2f} when the commands started). Python {m.python}. "
        f"Produced by `python scripts/verify_speed.py --runs {args.runs}{flags}`; each figure is the median of "
        "a fresh `deployinc` process, imports included: wall time, and the CPU time (user + system) it used.",
        "",
        *table(rows).markdown_lines(),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    from deployinc.io import atomic_write_text

    atomic_write_text(args.out, text, force=True)


if __name__ == "__main__":
    main()
