"""Eager PyTorch runner: the reference every other backend is compared with, on CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from .base import BaseRunner


def first_output(out: Any) -> Any:
    """The main output of a module: the tensor itself, or the first of a tuple/namedtuple/dict."""
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


class TorchRunner(BaseRunner):
    """Runs an ``nn.Module`` eagerly (or through ``torch.compile``).

    Args:
        module: The module (set to eval mode on activation).
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``fp16`` (the module and inputs are cast).
        threads: torch intra-op threads on the CPU (process-wide; recorded).
        compile: Run ``torch.compile(module)``; failure to compile makes the backend unavailable.
        example: An input batch; with ``compile``, activation runs it once so that compilation (which is lazy)
            happens, and fails, in :meth:`activate` rather than in the first timed call.
        name: Backend name in reports.
        output_name: Name of the single output.
    """

    def __init__(
        self,
        module: Any,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        compile: bool = False,
        name: str = "torch",
        output_name: str = "logits",
        example: np.ndarray | None = None,
    ):
        super().__init__()
        self.module = module
        self.device = device
        self.precision = precision
        self.threads = threads
        self.compile = compile
        self.name = name
        self.output_name = output_name
        self.example = example
        self._run: Any = None

    def _activate(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device here", hint="run on a machine with an NVIDIA GPU")
        if self.precision == "int8":
            raise BackendUnavailable("eager torch has no int8 path in deployinc", hint="use ort-cpu with a quantized model")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        module = self.module.eval().to(self.device)
        if self.precision == "fp16":
            module = module.half()
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        run = module
        if self.compile:
            try:
                run = torch.compile(module)
                if self.example is not None:
                    with torch.inference_mode():
                        run(torch.from_numpy(self.example).to(self.device, self._dtype))
            except Exception as exc:  # noqa: BLE001 - inductor can fail in many ways (no compiler, unsupported op)
                raise BackendUnavailable(f"torch.compile failed here: {str(exc).splitlines()[0][:200]}") from exc
        self._run = run
        self.details = {"threads": torch.get_num_threads(), "torch": torch.__version__, "compile": self.compile}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(next(iter(feeds.values())))).to(self.device, self._dtype)
        with torch.inference_mode():
            y = first_output(self._run(x))
        self.synchronize()
        return {self.output_name: y.float().cpu().numpy()}

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def output_names(self) -> list[str]:
        return [self.output_name]
