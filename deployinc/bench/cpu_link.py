"""How far apart two of this process's CPUs are: the round trip of one cache line bounced between them.

Multi-threaded CPU inference hands data from core to core in every layer (one thread writes a slice of an
activation, the other reads it in the next layer), so its speed depends on how fast the two cores see each other's
writes. On a bare machine that is fixed by the topology; on a virtual machine the host decides where the virtual
CPUs run and may move them. On the 2-CPU VM deployinc is built on, this probe reads about 240 ns most of the time
(the near placement) and 400 ns to 1 µs in spells that last seconds to minutes (far); in the far placement ONNX
Runtime's two-thread mobilenet_v2 takes 6.8 ms instead of 4.1 ms and eager torch 17.3 ms instead of 12.9 ms,
while two independent single-thread matrix products keep their full speed (docs/benchmarks/cpu-roofline.md).
``deployinc bench`` records the round trip before and after a run with two threads or more so that a report says
which placement it was measured in.

The probe forks a child pinned to the second CPU; parent (pinned to the first) and child flip a counter in a shared
page with plain Python loops. Python adds a constant of one to two hundred ns (a C loop reads 50-140 ns near and
630-900 ns far on the same VM), so compare values from the same machine, not with other tools' numbers. It takes
about 5-10 ms and uses both CPUs while it runs.
"""

from __future__ import annotations

import os
import time
import warnings

#: Spin iterations after which the child gives up waiting for the parent (which kills it sooner when it stops).
_MAX_SPINS = 20_000_000


def cpu_round_trip_ns(
    rounds: int = 1000, repeats: int = 7, cpus: tuple[int, int] | None = None, budget_s: float = 1.0
) -> float | None:
    """Round-trip time in ns of a cache line bounced between two CPUs by two Python loops (best of the repeats).

    One untimed repeat first wakes both CPUs; the smallest of the timed repeats is returned, since other work on
    the machine can only add to a round trip, never take away from it (a busy loop pinned to the second CPU did
    not change the reading on the VM deployinc is built on: a repeat fits in one time slice).

    Args:
        rounds: Round trips per timed repeat.
        repeats: Timed repeats; the smallest is returned.
        cpus: The two CPUs (default: the first two this process may use).
        budget_s: Stop after this many seconds (a busy machine makes every round trip wait for a time slice) and
            keep the repeats done by then.

    Returns:
        None where it cannot be measured: fewer than two usable CPUs, no ``fork``/affinity (not Linux), or not one
        repeat done within ``budget_s``.
    """
    if not hasattr(os, "fork") or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        return _probe(rounds, repeats, cpus, budget_s)
    except (OSError, ValueError):  # no shared page, affinity refused, a CPU that is not there: not measurable
        return None


def _answer(flag: object, cpus: set[int], total: int) -> None:
    """The child's side: answer every odd value with the next even one, then leave without any cleanup."""
    code = 0
    try:
        os.sched_setaffinity(0, cpus)
        for i in range(total):
            want, spins = 2 * i + 1, 0
            while flag.value != want:  # type: ignore[attr-defined]
                spins += 1
                if spins > _MAX_SPINS:
                    code = 1
                    break
            if code:
                break
            flag.value = want + 1  # type: ignore[attr-defined]
    except BaseException:  # noqa: BLE001 - a forked child must never return into the caller's code
        code = 1
    os._exit(code)


def _probe(rounds: int, repeats: int, cpus: tuple[int, int] | None, budget_s: float) -> float | None:
    import ctypes
    import gc
    import mmap
    import signal

    saved = os.sched_getaffinity(0)
    if cpus is None:
        if len(saved) < 2:
            return None
        first, second = sorted(saved)[:2]
    else:
        first, second = cpus
    child_cpus, total = {second}, rounds * (repeats + 1)
    page = mmap.mmap(-1, mmap.PAGESIZE)
    flag = ctypes.c_int64.from_buffer(page)
    flag.value = 0
    # The child must run none of the parent's code: no garbage collection (finalizers of the parent's objects) and
    # no KeyboardInterrupt raised into the caller's frames. Both are held off across the fork; the parent restores
    # them at once, the child keeps them off until os._exit.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    parent, pid = os.getpid(), -1
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a multi-threaded process may deadlock the child; this child takes no
            # lock (it only reads and writes the shared page and leaves with os._exit).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            _answer(flag, child_cpus, total)
    except OSError:
        pid = -1
    finally:
        if os.getpid() != parent:  # the child, whatever happened: leave without running the caller's code
            os._exit(1)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if gc_was_enabled:
        gc.enable()
    if pid < 0:
        del flag
        page.close()
        return None
    times: list[float] = []
    finished = False
    deadline = time.perf_counter() + budget_s
    try:
        os.sched_setaffinity(0, {first})
        i = 0
        for rep in range(repeats + 1):
            t0 = time.perf_counter()
            for _ in range(rounds):
                flag.value = 2 * i + 1
                want, spins = 2 * i + 2, 0
                while flag.value != want:
                    spins += 1
                    if not spins & 4095 and time.perf_counter() > deadline:
                        raise TimeoutError
                i += 1
            if rep:  # the first repeat only wakes both sides
                times.append((time.perf_counter() - t0) / rounds * 1e9)
            if time.perf_counter() > deadline:
                raise TimeoutError
        finished = True
    except (OSError, TimeoutError):
        pass  # a busy machine or a peer that never ran: keep the repeats that completed, if any
    finally:
        if not finished:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored by the application: the child was reaped already
            pass
        try:
            os.sched_setaffinity(0, saved)
        finally:
            del flag
            page.close()
    return round(min(times), 1) if times else None


#: A change of the round trip by more than this factor suggests the CPUs were placed differently (on the VM deployinc
#: is built on, the near placement measures about 240 ns and the far one about 400 ns or more; repeated readings in
#: one placement, some under load, ranged up to about 1.5x).
LINK_CHANGE = 1.6


def link_change_line(before: float | None, after: float | None, factor: float = LINK_CHANGE) -> str | None:
    """A warning when the round trip after a run differs from the one before by more than ``factor``."""
    if not before or not after:
        return None
    if max(before, after) / min(before, after) <= factor:
        return None
    return (
        f"the CPUs' round trip went from {before:.0f} ns to {after:.0f} ns during the run: the host probably moved "
        "the CPUs, and multi-threaded timings change with it"
    )
