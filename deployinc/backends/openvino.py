"""The OpenVINO runtime itself (``pip install 'deployinc[openvino]'``): the backend ``openvino``.

OpenVINO reads the ONNX file directly (``Core.read_model``; a QDQ int8 file runs on its int8 kernels) and compiles
it for the CPU with two properties deployinc always sets, so a number means what it says:

* ``INFERENCE_PRECISION_HINT``: ``f32`` for fp32 (without it OpenVINO computes in bf16 on a CPU with AMX or
  AVX512-BF16, an error near 1e-2 relative), ``bf16`` for bf16 (refused where the CPU device does not list BF16
  among its ``OPTIMIZATION_CAPABILITIES``: OpenVINO would compute in f32 and call it bf16); fp16 and int8 files
  carry their own types and run at ``f32``.
* ``INFERENCE_NUM_THREADS``: the thread count asked for (0, OpenVINO's default, when none is).

An int8 file can also run with ``bf16`` as its hint (``float_precision="bf16"``): its int8 layers stay int8, and the
layers it leaves in float (a mixed file's fallback, the ops between) compute in bf16, what OpenVINO does by default
on a CPU with AMX. It needs native bf16 like the bf16 precision does.

Unlike ONNX Runtime's OpenVINO plugin provider (``ort-openvino``), which lists Intel hardware only, the runtime runs
on any x86-64 CPU (an AMD EPYC included) and on ARM.

Each input shape a runner is fed gets a model compiled for that shape alone (``Model.reshape`` to the fed shape, as
OpenVINO's guide advises for latency and ``benchmark_app -shape`` does): a dynamic batch dimension compiled as such
costs OpenVINO's CPU plugin its static memory plan and shape-specialised kernels: googlenet's whole-model int8 file
at batch 1 ran 7-18% faster compiled static, its mixed file up to 6% (eight rounds interleaved in one process, a
2-core AMD EPYC VM with avx512_vnni and avx512_bf16, 2026-12-07). The first compile, at activation, is for a batch of
1 (the batch latency is judged at); verify's batch 8 compiles another. A model with other dynamic dimensions than the
batch is compiled per fed shape too; one that will not take a static shape runs as read. This module is the whole
backend: its record, its probe and its runner.
"""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.precisions import BF16, FP32
from ..errors import BackendUnavailable, OnnxFileError
from ..runners.base import BaseRunner
from ..runners.steps import TimedSteps
from ._probe import installed
from ._record import Backend, register

if TYPE_CHECKING:
    import numpy as np

NAME = "openvino"
DISTRIBUTION = "openvino"
INSTALL_HINT = "pip install 'deployinc[openvino]' (the OpenVINO runtime: pip install openvino)"
#: The runner's precision -> OpenVINO's INFERENCE_PRECISION_HINT.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f32", "int8": "f32"}
DEVICE = "CPU"


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One ``openvino.Core`` per process (it holds the device plugins).

    Raises:
        BackendUnavailable: The runtime is not installed or cannot be imported.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        text = "is not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == "openvino" else f"cannot be imported: {str(exc)[:200]}"
        raise BackendUnavailable(f"the OpenVINO runtime ({DISTRIBUTION}) {text}", hint=INSTALL_HINT) from exc
    return ov.Core()


def capabilities() -> list[str]:
    """The CPU device's ``OPTIMIZATION_CAPABILITIES`` (``BF16 WINOGRAD FP32 INT8 ...``)."""
    return [str(c) for c in core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]


def _problem() -> str | None:
    if not installed("openvino"):
        return f"the OpenVINO runtime ({DISTRIBUTION}) is not installed"
    try:
        devices = list(core().available_devices)
    except BackendUnavailable as exc:
        return exc.message
    except Exception as exc:  # noqa: BLE001 - a broken runtime: the probe answers with the reason, never raises
        return f"the OpenVINO runtime cannot list its devices: {str(exc).strip()[:120] or type(exc).__name__}"
    return None if DEVICE in devices else f"the OpenVINO runtime offers no CPU device here (devices: {', '.join(devices) or 'none'})"


def compile_config(precision: str, threads: int | None, float_precision: str | None = None) -> dict[str, Any]:
    """The CPU properties for a runner's precision, thread count and (an int8 file's) float precision."""
    hint = PRECISION_HINTS.get(precision, "f32") if float_precision in (None, FP32) else PRECISION_HINTS[float_precision]
    return {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": int(threads or 0)}


class OpenVINORunner(BaseRunner):
    """An ONNX model (a path or serialised bytes) compiled by the OpenVINO runtime for the CPU, once per input shape
    it is fed (at most :attr:`MAX_SHAPES` kept)."""

    #: Compiled models kept (one per input shape: verify's batches 1 and 8, a benchmark's sizes); the least recently
    #: used goes first.
    MAX_SHAPES = 4

    def __init__(self, model: str | os.PathLike[str] | bytes, *, precision: str = "fp32", threads: int | None = None, name: str = NAME,
                 float_precision: str | None = None):  # fmt: skip
        super().__init__()
        self.model = model if isinstance(model, bytes) else str(os.fspath(model))
        self.precision, self.threads, self.name, self.device = precision, threads, name, "cpu"
        self.float_precision = None if float_precision == FP32 else float_precision
        self.compiled: Any = None
        self.request: Any = None
        self._read: Any = None
        self._by_shape: dict[tuple[tuple[int, ...], ...], tuple[Any, Any]] = {}
        self._dynamic: tuple[Any, Any] | None = None  # the model as read, where a static shape would not compile
        self._names: list[str] = []
        self._fixed = False

    def _activate(self) -> None:
        ov_core = core()
        caps = capabilities()
        if BF16 in (self.precision, self.float_precision) and "BF16" not in caps:
            raise BackendUnavailable(
                f"this CPU has no native bf16 (OpenVINO's capabilities: {' '.join(caps) or 'none'}): OpenVINO would compute in f32",
                hint="bf16 needs AMX-BF16 or AVX512-BF16 (Xeon Sapphire Rapids or newer, Zen 4 or newer); run fp32 here",
            )
        try:
            self._read = ov_core.read_model(io.BytesIO(self.model) if isinstance(self.model, bytes) else self.model)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError / its own types for a model it cannot read
            msg = " | ".join(ln.strip() for ln in str(exc).strip().splitlines()[:3])[:300] or type(exc).__name__
            raise OnnxFileError(f"the OpenVINO runtime cannot read the model: {msg}", hint="run deployinc check on it; try --providers ort-cpu") from exc
        config = compile_config(self.precision, self.threads, self.float_precision)
        self._by_shape = {}
        self._names = [i.get_any_name() for i in self._read.inputs]
        self._fixed = all(i.get_partial_shape().is_static for i in self._read.inputs)  # one compiled model serves it
        first = _batch_of_one(self._read)
        self._dynamic = None
        try:
            self.compiled, self.request = self._compile(first)
        except BackendUnavailable:
            if first is None:
                raise
            self._dynamic = self.compiled, self.request = self._compile(None)  # it will not take a static batch: as it is
        import openvino as ov

        self.details = {
            "openvino": ov.get_version(),
            "openvino_device": str(ov_core.get_property(DEVICE, "FULL_DEVICE_NAME")),
            "openvino_capabilities": caps,
            "openvino_config": {k: _text(self.compiled.get_property(k)) for k in config},  # what it compiled with
            "openvino_shapes": "as read (dynamic): a static shape would not compile" if self._dynamic else "static, compiled per input shape fed",
            "threads": self.threads,
            **({"float_precision": self.float_precision} if self.float_precision else {}),
        }

    def _compile(self, shapes: tuple[tuple[int, ...], ...] | None) -> tuple[Any, Any]:
        """The compiled model and its infer request for input ``shapes`` (None: the model's own, dynamic ones)."""
        if shapes is not None and shapes in self._by_shape:
            self._by_shape[shapes] = self._by_shape.pop(shapes)  # the most recently used goes last, evicted last
            return self._by_shape[shapes]
        try:
            model = self._read
            if shapes is not None:
                model = self._read.clone()
                model.reshape({port: list(shape) for port, shape in zip(model.inputs, shapes)})
            compiled = core().compile_model(model, DEVICE, compile_config(self.precision, self.threads, self.float_precision))
        except Exception as exc:  # noqa: BLE001 - a model the CPU plugin does not take: skipped with the reason
            msg = " | ".join(ln.strip() for ln in str(exc).strip().splitlines()[:3])[:300] or type(exc).__name__
            raise BackendUnavailable(f"OpenVINO could not compile the model for the CPU: {msg}", hint="run deployinc check on it; try --providers ort-cpu") from exc
        pair = (compiled, compiled.create_infer_request())
        if shapes is not None:
            while len(self._by_shape) >= self.MAX_SHAPES:
                self._by_shape.pop(next(iter(self._by_shape)))
            self._by_shape[shapes] = pair
        return pair

    def _for(self, feeds: dict[str, np.ndarray]) -> tuple[Any, Any]:
        """The compiled model and request for these inputs' shapes (the read model's fixed ones: the one compiled)."""
        if self._dynamic is not None or self._fixed:
            return self._dynamic or (self.compiled, self.request)
        try:
            return self._compile(tuple(tuple(int(d) for d in feeds[n].shape) for n in self._names))
        except BackendUnavailable:  # a graph that will not take a static shape (a batch fixed inside it): the dynamic model
            self._dynamic = self._compile(None)
            return self._dynamic

    def compiled_shapes(self) -> list[tuple[tuple[int, ...], ...]]:
        """The input shapes a model is compiled for now, static each (empty for a model whose shapes are fixed)."""
        return list(self._by_shape)

    def _deactivate(self) -> None:
        self.request = self.compiled = self._read = self._dynamic = None
        self._by_shape = {}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        compiled, request = self._for(feeds)
        got = request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return {out.get_any_name(): np.array(got[out], copy=True) for out in compiled.outputs}

    def input_names(self) -> list[str]:
        return [i.get_any_name() for i in self.compiled.inputs]

    def output_names(self) -> list[str]:
        return [o.get_any_name() for o in self.compiled.outputs]

    def bench_steps(self, feeds: dict[str, np.ndarray]) -> TimedSteps:
        """``e2e``: the infer request's ``infer`` on host arrays, the call a user makes (the CPU: no copies), with the
        model compiled for these shapes (before the timing starts)."""
        import numpy as np

        bound = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        _, request = self._for(bound)
        return TimedSteps(e2e=lambda: request.infer(bound), notes=["OpenVINO infer request (synchronous), host arrays, compiled for these shapes"])


def _batch_of_one(model: Any) -> tuple[tuple[int, ...], ...] | None:
    """The input shapes with a dynamic first (batch) dimension set to 1, where every other dimension is fixed; None
    otherwise (a fixed shape needs no reshape; other dynamic dimensions wait for the shapes fed)."""
    shapes = []
    for port in model.inputs:
        dims = list(port.get_partial_shape())
        if not dims or any(d.is_dynamic for d in dims[1:]):
            return None
        shapes.append((1 if dims[0].is_dynamic else int(dims[0].get_length()), *(int(d.get_length()) for d in dims[1:])))
    return tuple(shapes) if any(port.get_partial_shape().is_dynamic for port in model.inputs) else None


def _text(value: Any) -> str:
    """A compiled model's property as OpenVINO spells it (``f32``, not ``<Type: 'float32'>``)."""
    return str(value.to_string()) if hasattr(value, "to_string") else str(value)


def _build(model: Any, *, file: Path | None, precision: str, threads: int | None, trt_batch: str | None,
           cuda_graph: bool, tf32: bool, name: str, float_precision: str | None = None) -> OpenVINORunner:  # fmt: skip
    return OpenVINORunner(model, precision=precision, threads=threads, name=name, float_precision=float_precision)


def check(model: str) -> Any:
    """``deployinc check --target openvino``: OpenVINO itself asked, not a table. The file is read by
    ``Core.read_model`` (an operator it cannot convert is an error naming it) and each operation of the converted
    model is looked up in ``Core.query_model(model, "CPU")`` (one the CPU plugin does not take is an error).

    Raises:
        BackendUnavailable: The runtime is not installed.
        BadInputError: The file is not a readable ONNX file.
    """
    from collections import Counter

    from ..io import load_onnx  # lazy: io imports onnx; the records load with deployinc --help
    from ..trt.check import CheckReport, NodeIssue  # lazy: trt.check imports numpy; the records load with deployinc --help

    proto = load_onnx(model, check_graph=False).model
    ov_core = core()
    opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = CheckReport(NAME, str(model), opset, int(proto.ir_version), len(proto.graph.node),
                         dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
                         title=f"the OpenVINO runtime {_version()} on this machine's CPU (read_model, then query_model)")  # fmt: skip
    try:
        converted = ov_core.read_model(str(model))
    except RuntimeError as exc:
        report.issues.append(NodeIssue("", "<model>", "error", f"OpenVINO cannot read the file: {_first_line(exc)}"))
        return report
    supported = ov_core.query_model(converted, DEVICE)
    for op in converted.get_ops():
        kind = op.get_type_name()
        if kind not in ("Parameter", "Result", "Constant") and op.get_friendly_name() not in supported:
            report.issues.append(NodeIssue(op.get_friendly_name(), kind, "error", "the OpenVINO CPU plugin does not take it (query_model)"))
    report.notes.append(f"{len(supported)} of {len(converted.get_ops())} OpenVINO operations taken by the CPU plugin")
    return report


def _version() -> str:
    try:
        import openvino as ov

        return str(ov.__version__).split("-")[0]
    except ImportError:
        return "?"


def _first_line(exc: BaseException) -> str:
    """The line of an OpenVINO error that says what is wrong (its first lines name C++ source files)."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip(" -")]
    noise = ("Exception from ", "Check '", "FrontEnd API failed", "Model wasn't fully converted", "Summary:")
    useful = [ln for ln in lines if not ln.startswith(noise)] or lines or ["(no message)"]
    return "; ".join(useful[:2])[:240]


def _usage(precision: str, threads: int | None, float_precision: str | None = None) -> list[str]:
    config = json.dumps(compile_config(precision, threads, float_precision))
    return [
        "import numpy as np, openvino as ov  # pip install openvino",
        "core = ov.Core()",
        'model = core.read_model("model.onnx")',
        "shape = model.inputs[0].partial_shape; shape[0] = 1  # a static batch of 1, as deploy timed it (or your batch size)",
        "model.reshape(shape)",
        f'compiled = core.compile_model(model, "CPU", {config})',
        "logits = compiled(images)[0]  # images: 1 x C x H x W float32 (the batch compiled for), normalised",
    ]


register(
    Backend(
        NAME, "the OpenVINO runtime on the CPU (reads the ONNX file; any x86-64 CPU)", "openvino", _problem,
        aliases=("ov", "openvino-runtime"), artifacts={"fp32": "fp32", "bf16": "fp32", "int8": "int8-cpu"},
        from_fp32=("bf16",), int8_float_output=True, float_precisions=("bf16",), rank=1, targets=("cpu",), check_target=NAME, checker=check,
        triton=lambda _p: {"name": "openvino"}, build=_build, usage=_usage,
    ),
)  # fmt: skip

