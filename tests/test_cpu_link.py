"""The cross-CPU round-trip probe that bench records (real measurement on this machine; no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from deployinc.bench.cpu_link import cpu_round_trip_ns, link_change_line

TWO_CPUS = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


@pytest.mark.skipif(not TWO_CPUS, reason="needs two usable CPUs")
def test_round_trip_between_two_cpus_is_measured_and_affinity_restored():
    before = os.sched_getaffinity(0)
    ns = cpu_round_trip_ns(rounds=200, repeats=3)
    assert ns is not None and 10 < ns < 1e6  # a Python loop takes tens of ns at least; a stuck peer would time out
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity API")
def test_one_usable_cpu_gives_none():
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from deployinc.bench.cpu_link import cpu_round_trip_ns; print(cpu_round_trip_ns())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_change_line_only_for_a_large_change():
    assert link_change_line(240.0, 330.0) is None  # within the near placement's spread
    assert link_change_line(None, 500.0) is None
    assert "from 410 ns to 240 ns" in link_change_line(410.0, 240.0)  # far to near


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity API")
def test_a_busy_peer_cannot_hang_the_probe():
    # both sides on one CPU: every round trip waits for the other's time slice, so the budget ends it
    cpu = min(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    ns = cpu_round_trip_ns(cpus=(cpu, cpu), budget_s=0.3)
    assert time.perf_counter() - t0 < 10  # a hang guard, not a speed check
    assert ns is None or ns > 1000  # no round trip finished in time, or only slow ones
