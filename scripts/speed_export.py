"""Issue 2's speed targets, measured as a user sees them (not a unit test).

- ``deployinc --help`` in <= 0.3 s (it must not import torch);
- ``deployinc export googlenet`` end to end (load, prepare, export, simplify, quick check) in <= 15 s.

Each command runs as a fresh process, several times; the median is reported. Writes docs/speed_export.md.

    python scripts/speed_export.py [--runs 3] [--out docs/speed_export.md]
"""

from __future__ import annotations

import argparse
import os
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


def timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def table(rows: list[tuple[str, float, float, list[float]]]) -> Table:
    """The page's table: each command, its median and every run, its target and whether the median met it."""
    cells = [[f"`{cmd}`", f"{t:.2f}", ", ".join(f"{v:.2f}" for v in runs), f"{target:g}", "yes" if t <= target else "NO"] for cmd, t, target, runs in rows]
    return Table.aligned(["command", "median s", "every run s", "target s", "met"], cells, "lrlrc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "speed_export.md"))
    args = ap.parse_args()
    exe = shutil.which("deployinc") or str(Path(sys.executable).parent / "deployinc")
    rows = []
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        helps = [timed([exe, "--help"], tmp) for _ in range(args.runs + 2)]
        rows.append(("deployinc --help", statistics.median(helps), 0.3, helps))
        for exporter in ("dynamo", "torchscript"):
            times = []
            for _ in range(args.runs):
                times.append(timed([exe, "export", "googlenet", "--exporter", exporter, "--force"], tmp))
            rows.append((f"deployinc export googlenet --exporter {exporter}", statistics.median(times), 15.0, times))
    load_after = [round(v, 2) for v in os.getloadavg()]
    m = machine(gpu=False)
    lines = [
        "# Export speed (issue 2 targets)",
        "",
        f"Produced by `python scripts/speed_export.py --runs {args.runs}` on {m.cpu_model}, {m.logical_cpus} cores, "
        f"Python {m.python}. Each command is a fresh process (wall time from start to exit, imports "
        "included); the median of the runs is judged. Load average (1, 5, 15 min) before "
        f"{load_before}, after {load_after}. Every export recalibrates googlenet's BatchNorm statistics (random "
        "weights): deployinc reads no cache of its own during an export.",
        "",
        *table(rows).markdown_lines(),
    ]
    for cmd, t, target, _runs in rows:
        print(f"{cmd}: {t:.2f} s (target {target:g} s) {'ok' if t <= target else 'MISSED'}")
    from deployinc.io import atomic_write_text

    atomic_write_text(args.out, "\n".join(lines) + "\n", force=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
