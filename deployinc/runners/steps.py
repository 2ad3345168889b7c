"""What a runner hands the benchmark harness: bare callables to time, nothing wrapped around them.

A runner's ``bench_steps(...)`` returns :class:`TimedSteps`. ``e2e`` goes from host arrays to host arrays (what a
Python pipeline sees: host-to-device copies, inference, device-to-host copies); ``compute`` runs on inputs already
on the device and leaves the outputs there (GPU only; on the CPU there are no copies and ``compute`` is None).
``sync`` waits for queued device work; the harness calls it before stopping the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TimedSteps:
    """Callables to time for one runner and one input batch.

    Attributes:
        e2e: Host arrays in, host arrays out.
        compute: Device-resident inputs and outputs (None on the CPU, where it would equal ``e2e``).
        sync: Device synchronisation, or None on the CPU.
        notes: How the steps run (IO binding, CUDA graph...), for reports.
        close: Releases what the steps hold (device buffers, captured graphs).
    """

    e2e: Callable[[], Any]
    compute: Callable[[], Any] | None = None
    sync: Callable[[], Any] | None = None
    notes: list[str] = field(default_factory=list)
    close: Callable[[], Any] | None = None

    def modes(self) -> dict[str, Callable[[], Any]]:
        """``{"compute": ..., "e2e": ...}``, compute first, only those that exist."""
        out: dict[str, Callable[[], Any]] = {}
        if self.compute is not None:
            out["compute"] = self.compute
        out["e2e"] = self.e2e
        return out
