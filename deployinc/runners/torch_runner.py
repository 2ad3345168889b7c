"""Eager PyTorch runner: the reference every other backend is compared with, on CPU or CUDA."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..core.outputs import first_output
from ..errors import BackendUnavailable
from .base import BaseRunner
from .steps import TimedSteps
from ..core.precisions import FP16, FP32, INT8


#: The process-wide TF32 flags as they were before the first active CUDA runner set them, and how many CUDA runners
#: are active: the flags are put back only when the last one deactivates, whatever the order of deactivation.
_TF32 = {"active": 0, "saved": None}


def _tf32_enter(value: bool) -> None:
    """Set cuDNN's and cuBLAS's TF32 flags to ``value`` for an activating runner, remembering the originals once."""
    import torch

    if _TF32["active"] == 0:
        _TF32["saved"] = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    _TF32["active"] += 1
    torch.backends.cudnn.allow_tf32 = value
    torch.backends.cuda.matmul.allow_tf32 = value


def _tf32_exit() -> None:
    """A runner deactivates: the last one puts the flags back as they were before the first."""
    import torch

    if _TF32["active"] == 0:
        return
    _TF32["active"] -= 1
    if _TF32["active"] == 0 and _TF32["saved"] is not None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _TF32["saved"]
        _TF32["saved"] = None


def _tf32_apply(value: bool) -> None:
    import torch

    if torch.backends.cudnn.allow_tf32 != value or torch.backends.cuda.matmul.allow_tf32 != value:
        torch.backends.cudnn.allow_tf32 = value
        torch.backends.cuda.matmul.allow_tf32 = value


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
        tf32: On CUDA, let cuDNN convolutions and matmuls use TF32 (torch's default for convolutions). Off by
            default: fp32 means fp32 (TF32 alone moves googlenet's logits by about 4e-3 relative on an H100). The
            flags are process-wide: activation sets them, :meth:`infer` re-applies this runner's choice when another
            active runner changed them, and the last active CUDA runner to deactivate puts back what was there
            before the first one activated.
    """

    def __init__(
        self,
        module: Any,
        device: str = "cpu",
        precision: str = FP32,
        threads: int | None = None,
        compile: bool = False,
        name: str = "torch",
        output_name: str = "logits",
        example: np.ndarray | None = None,
        tf32: bool = False,
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
        self.tf32 = tf32
        self._run: Any = None
        self._tf32_entered = False

    def _activate(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device here", hint="run on a machine with an NVIDIA GPU")
        if self.precision == INT8:
            raise BackendUnavailable("eager torch has no int8 path in deployinc", hint="use ort-cpu with a quantized model")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self.device.startswith("cuda") and not self._tf32_entered:  # activated twice: counted once
            _tf32_enter(self.tf32)
            self._tf32_entered = True
        try:
            self._run = self._build(torch)
        except BaseException:
            if self._tf32_entered:  # not active, so deactivation will not run: put the flags back now
                _tf32_exit()
                self._tf32_entered = False
            raise
        self.details = {"threads": torch.get_num_threads(), "torch": torch.__version__, "compile": self.compile}
        if self.device.startswith("cuda"):
            self.details["tf32"] = self.tf32

    def _build(self, torch: Any) -> Any:
        """The callable to time: the module in eval mode on the device and precision, compiled on request."""
        module = self.module.eval()
        if self.device != "cpu" or self.precision == FP16:
            # .to() and .half() change a module in place: work on a copy, so that the caller's CPU fp32 module (shared
            # with other backends, prepare's CPU self-check) stays as it was.
            module = copy.deepcopy(module).to(self.device)
        if self.precision == FP16:
            module = module.half()
        self._dtype = torch.float16 if self.precision == FP16 else torch.float32
        run = module
        if self.compile:
            try:
                run = torch.compile(module)
                if self.example is not None:
                    with torch.inference_mode():
                        run(torch.from_numpy(self.example).to(self.device, self._dtype))
            except Exception as exc:  # noqa: BLE001 - inductor can fail in many ways (no compiler, unsupported op)
                raise BackendUnavailable(f"torch.compile failed here: {str(exc).splitlines()[0][:200]}") from exc
        return run

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self._tf32_entered:
            _tf32_apply(self.tf32)
        x = torch.from_numpy(np.ascontiguousarray(next(iter(feeds.values())))).to(self.device, self._dtype)
        with torch.inference_mode():
            y = first_output(self._run(x))
        self.synchronize()
        return {self.output_name: y.float().cpu().numpy()}

    def _deactivate(self) -> None:
        self._run = None  # drops the device copy of the module
        if self.device.startswith("cuda"):
            import torch

            if self._tf32_entered:
                _tf32_exit()
                self._tf32_entered = False
            torch.cuda.empty_cache()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def output_names(self) -> list[str]:
        return [self.output_name]

    # benchmarking -------------------------------------------------------------------------------------------------
    def bench_steps(self, x: np.ndarray, cuda_graph: bool = False) -> Any:
        """Callables for the benchmark harness (:class:`~deployinc.runners.steps.TimedSteps`).

        ``e2e`` is the module as a user calls it: ``torch.from_numpy`` (moved to the device and cast when needed),
        the forward pass under ``torch.inference_mode()``, the output back to a host array. On CUDA, ``compute``
        runs the forward pass on an input already on the device and ``sync`` is ``torch.cuda.synchronize``.

        With ``cuda_graph`` (CUDA, eager modules only) the forward pass is captured once into a
        ``torch.cuda.CUDAGraph`` on a static input buffer after three warm-up passes on a side stream, as PyTorch's
        CUDA graph documentation prescribes; ``compute`` replays it and ``e2e`` copies the host batch into the
        static input, replays, and copies the static output back.
        """
        import torch

        if not self.is_active:
            raise RuntimeError(f"runner {self.name} used before activate()")
        run, dev, dtype = self._run, self.device, self._dtype
        host = np.ascontiguousarray(x)
        on_cuda = dev.startswith("cuda")

        if not on_cuda:
            if cuda_graph:
                raise BackendUnavailable("CUDA graphs need a CUDA device", hint="drop --cuda-graph on the CPU")
            cast = dtype != torch.float32 or host.dtype != np.float32

            def e2e_cpu() -> np.ndarray:
                with torch.inference_mode():
                    t = torch.from_numpy(host)
                    y = first_output(run(t.to(dtype) if cast else t))
                    return (y.float() if cast else y).numpy()

            return TimedSteps(e2e=e2e_cpu, notes=["eager forward under torch.inference_mode on host tensors"])

        sync = torch.cuda.synchronize
        if cuda_graph:
            if self.compile:
                raise BackendUnavailable(
                    "CUDA graph capture of a torch.compile module is not done by deployinc",
                    hint="use torch.compile(mode='reduce-overhead') yourself, or bench torch with --cuda-graph",
                )
            static_in = torch.from_numpy(host).to(dev, dtype)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    run(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                static_out = first_output(run(static_in))
            sync()
            src = torch.from_numpy(host)

            def e2e_graph() -> np.ndarray:
                static_in.copy_(src)  # host -> device into the captured buffer
                graph.replay()
                return static_out.float().cpu().numpy()  # device -> host (synchronises)

            def close() -> None:
                graph.reset()

            return TimedSteps(
                e2e=e2e_graph,
                compute=graph.replay,
                sync=sync,
                notes=["CUDA graph: captured once on a static input, replayed"],
                close=close,
            )

        x_dev = torch.from_numpy(host).to(dev, dtype)

        def compute() -> Any:
            with torch.inference_mode():
                return run(x_dev)

        def e2e() -> np.ndarray:
            with torch.inference_mode():
                y = first_output(run(torch.from_numpy(host).to(dev, dtype)))
                return y.float().cpu().numpy()

        return TimedSteps(e2e=e2e, compute=compute, sync=sync, notes=["eager forward under torch.inference_mode"])
