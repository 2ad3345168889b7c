"""The backend record and its registry: what every command knows about a backend, in one place.

Each family module of :mod:`deployinc.backends` (``torch``, ``onnxruntime``, ``openvino``, ``tensorrt``...) defines
its backends as :class:`Backend` records and registers them with :func:`register`, the way Model Navigator
registers runner classes that declare their own provider and device kinds; the package then derives every table
the commands read (names, aliases, GPU backends, isolation, artifacts, presets) from the registered records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The registered records by canonical name, in registration order (the order names are listed in).
REGISTRY: dict[str, Backend] = {}


@dataclass(frozen=True)
class Backend:
    """One backend: a name every command accepts with the same meaning, and what it can do.

    Attributes:
        name: The canonical name (``ort-cpu``).
        summary: What it runs, one line (help text, ``names_text``).
        family: The module that defines it (``torch``, ``onnxruntime``, ``openvino``, ``tensorrt``...).
        aliases: Other accepted spellings (lower case).
        device: ``cpu`` or ``gpu`` (an NVIDIA GPU: skipped without one).
        onnx: Runs an ONNX file (False: eager torch, built by the stage that owns the module).
        problem: Why it cannot run here, or None: cheap (no session, no model, no torch import).
        artifacts: Precision -> the deploy artifact it runs at that precision (``fp32``, ``fp16``, ``int8-cpu``,
            ``int8-trt``); a precision it does not compute in is absent.
        from_fp32: Precisions it computes from the fp32 file by itself (TensorRT's build precision, OpenVINO's
            inference precision hint) rather than from a file of that precision.
        fuses: Fuses layers, so that exposing an intermediate output changes what is computed.
        builds_engine: Builds an engine for fixed shapes from a file (one build per batch size in bench).
        needs_file: Builds from a path, never from serialised bytes.
        isolate: verify and bench run it in a subprocess by default (native GPU code that can crash or hang).
        rank: Dependencies a user must install and run next to the model (deploy's tie-break: fewer first).
        tolerance: The tolerance-preset family: ``cpu``, ``cuda`` or ``tensorrt``.
        targets: The deploy targets (``cpu``, ``cuda``, ``tensorrt``) whose candidates include it.
        cuda_graph: Can capture a CUDA graph (bench ``--cuda-graph``).
        bench_default: In ``bench --backends``'s default set.
        search: Session options deploy's search tries besides the default (``threads``, ``cuda_graph``).
        int8_float_output: Runs a layer in int8 whenever its input and weights come through DequantizeLinear, even
            when its output stays float (OpenVINO's low-precision transformations); ONNX Runtime needs a
            QuantizeLinear after it. Deploy's mixed int8 candidate then runs the artifact that keeps the int8
            weights of the layers carried into float (``int8-cpu-mixed-qdq``).
        float_precisions: Precisions besides fp32 it can compute an int8 file's float layers in (OpenVINO: bf16,
            where the CPU has it natively; what OpenVINO itself does by default on a CPU with AMX). The int8 layers
            stay int8; verify judges the file by the int8 preset either way.
        check_target: The static support table ``deployinc check`` judges it with (None: none).
        checker: A check by the backend's own runtime instead of a table: the ONNX file's path -> a
            :class:`deployinc.trt.check.CheckReport` (``check --target`` then asks it).
        triton: Precision -> its Triton execution-accelerator block (None: the plain provider).
        build: Builds an inactive runner of an ONNX model (see :func:`deployinc.factory.onnx_runner`).
        usage: Precision, thread count and float precision (None: fp32) -> the Python lines that run the shipped ``model.onnx`` on it.
        options: Anything else a stage asks of one kind of backend (torch: ``prepared``, ``compile``).
    """

    name: str
    summary: str
    family: str
    problem: Callable[[], str | None]
    aliases: tuple[str, ...] = ()
    device: str = "cpu"
    onnx: bool = True
    artifacts: Mapping[str, str] = field(default_factory=dict)
    from_fp32: tuple[str, ...] = ()
    fuses: bool = False
    builds_engine: bool = False
    needs_file: bool = False
    isolate: bool = False
    rank: int = 9
    tolerance: str = "cpu"
    targets: tuple[str, ...] = ()
    cuda_graph: bool = False
    bench_default: bool = False
    search: tuple[str, ...] = ()
    int8_float_output: bool = False
    float_precisions: tuple[str, ...] = ()
    check_target: str | None = None
    checker: Callable[[str], Any] | None = None
    triton: Callable[[str], dict[str, str] | None] | None = None
    build: Callable[..., Any] | None = None
    usage: Callable[[str, int | None, str | None], list[str]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def artifact(self, precision: str) -> str | None:
        """The artifact it runs at ``precision``, or None when it cannot compute at that precision."""
        return self.artifacts.get(precision)

    def accelerator(self, precision: str) -> dict[str, str] | None:
        """Its Triton execution-accelerator block at ``precision`` (None: the plain provider)."""
        return self.triton(precision) if self.triton is not None else None


def register(*records: Backend) -> None:
    """Add backends to the registry.

    Raises:
        ValueError: A name or alias is taken already (two backends cannot answer to one name).
    """
    for rec in records:
        taken = {n for r in REGISTRY.values() for n in (r.name, *r.aliases)}
        clash = sorted({rec.name, *rec.aliases} & taken)
        if clash:
            raise ValueError(f"backend {rec.name!r}: {', '.join(clash)} already names a registered backend")
        REGISTRY[rec.name] = rec
