"""The runner interface every backend implements.

A runner is a context manager: :meth:`BaseRunner.activate` loads the model and acquires the device (no GPU is
touched before), :meth:`BaseRunner.infer` maps input names to arrays and returns output names to arrays, and
:meth:`BaseRunner.deactivate` releases everything. A runner that cannot run here raises
:class:`~deployinc.errors.BackendUnavailable` from :meth:`activate` with the reason, so callers report it as
*skipped* rather than crashing or quietly running elsewhere.

Each runner records its own timing: ``activate_seconds`` (session creation, engine build: first-run cost) and
``last_infer_seconds`` (wall time of the last :meth:`infer`, device synchronised).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ..core.precisions import FP32

if TYPE_CHECKING:  # numpy only in annotations: a backend's record can name its runner class without importing it
    import numpy as np


class BaseRunner(ABC):
    """One backend that runs a model.

    Attributes:
        name: Short backend name used in reports (``torch``, ``ort-cpu``, ``ort-cuda``...).
        device: ``cpu`` or ``cuda``.
        precision: ``fp32``, ``fp16``, ``bf16`` (a compute precision: ort-openvino) or ``int8``.
    """

    name: str = "base"
    device: str = "cpu"
    precision: str = FP32

    def __init__(self) -> None:
        self.is_active = False
        self.activate_seconds: float | None = None
        self.last_infer_seconds: float | None = None
        self.details: dict[str, Any] = {}

    # lifecycle ---------------------------------------------------------------------------------------------------
    def activate(self) -> None:
        """Load and prepare; raise BackendUnavailable when this backend cannot run here."""
        t0 = time.perf_counter()
        self._activate()
        self.activate_seconds = time.perf_counter() - t0
        self.is_active = True

    def deactivate(self) -> None:
        """Release the session, engine or device memory."""
        if self.is_active:
            self._deactivate()
        self.is_active = False

    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # inference ---------------------------------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays; return host arrays. Records ``last_infer_seconds``."""
        if not self.is_active:
            raise RuntimeError(f"runner {self.name} used before activate()")
        t0 = time.perf_counter()
        out = self._infer(feeds)
        self.last_infer_seconds = time.perf_counter() - t0
        return out

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    def input_names(self) -> list[str]:
        """Names of the model's inputs."""
        return ["input"]

    def output_names(self) -> list[str]:
        """Names of the model's outputs."""
        return ["logits"]

    def describe(self) -> dict[str, Any]:
        """What this runner is, for reports: backend, device, precision and backend-specific details."""
        return {"backend": self.name, "device": self.device, "precision": self.precision, **self.details}

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate(self) -> None:
        return None
