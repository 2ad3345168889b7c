"""The backends ``deployinc verify`` runs, by name, behind the runner interface.

A backend that cannot run here (no GPU, provider or library missing, a provider that quietly fell back to the
CPU) is *skipped* with its reason: :func:`open_backend` returns the reason instead of a runner, never raises for
it, and never hands back a runner that runs somewhere other than asked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, BadInputError

#: Names accepted by ``--providers`` -> backend name.
ALIASES = {
    "cpu": "ort-cpu",
    "ort-cpu": "ort-cpu",
    "cuda": "ort-cuda",
    "ort-cuda": "ort-cuda",
    "tensorrt": "ort-trt",
    "trt": "ort-trt",
    "ort-trt": "ort-trt",
    "ort-tensorrt": "ort-trt",
    "trt-engine": "trt-engine",
    "tensorrt-engine": "trt-engine",
    "torch-cuda": "torch-cuda",
    "torch-fused": "torch-fused",
}
#: Backends in the order they are listed.
BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt-engine", "torch-cuda", "torch-fused")
#: Backends that run the ONNX file (the others run torch and need a torch reference).
ONNX_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt-engine")
#: Backends that fuse layers so that exposing an intermediate changes what is computed (localised by bisection).
FUSING_BACKENDS = ("ort-trt", "trt-engine")
_ORT_PROVIDER = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}


def available_names() -> str:
    """The accepted names with what each runs, for hints."""
    return (
        "cpu, cuda, tensorrt (ONNX Runtime execution providers; also ort-cpu, ort-cuda, ort-trt/trt), "
        "trt-engine (a native TensorRT engine), torch-cuda (eager torch on the GPU), "
        "torch-fused (deployinc's prepared torch model)"
    )


def parse_providers(text: str | None) -> list[str]:
    """``"cpu,cuda,tensorrt"`` -> backend names, refusing unknown ones.

    Raises:
        BadInputError: An unknown name (the available ones are listed, with what this ONNX Runtime build lists).
    """
    out: list[str] = []
    for raw in (t.strip().lower() for t in (text or "cpu").split(",")):
        if not raw:
            continue
        name = ALIASES.get(raw)
        if name is None:
            import difflib

            # "gpu" is spelled closest to "cpu", but a GPU provider is what it asks for.
            gpu = {"gpu": "cuda", "nvidia": "cuda", "ort-gpu": "ort-cuda", "gpu-trt": "tensorrt", "trt-gpu": "tensorrt"}
            close = [gpu[raw]] if raw in gpu else ["cuda"] if "gpu" in raw else difflib.get_close_matches(raw, list(ALIASES), n=1)
            listed = ""
            try:
                import onnxruntime as ort

                listed = f"; this onnxruntime lists {', '.join(ort.get_available_providers())}"
            except Exception:  # noqa: BLE001
                pass
            raise BadInputError(
                f"unknown provider {raw!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"available: {available_names()}{listed}",
            )
        if name not in out:
            out.append(name)
    if not out:
        raise BadInputError("no provider given to --providers", hint=f"available: {available_names()}")
    return out


def family(backend: str) -> str:
    """``cpu``, ``cuda`` or ``tensorrt``: which tolerance preset a backend gets."""
    if backend in ("ort-trt", "trt-engine"):
        return "tensorrt"
    if backend in ("ort-cuda", "torch-cuda"):
        return "cuda"
    return "cpu"


@dataclass
class Opened:
    """A backend that is ready (``runner``) or skipped (``reason``/``hint``)."""

    name: str
    runner: Any = None
    reason: str | None = None
    hint: str | None = None
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.runner is None


def trt_batch_range(batches: list[int], static: bool) -> str | None:
    """The TensorRT optimisation profile (``min,opt,max``) that covers every batch size verify runs: the smallest
    to the largest, tuned for the largest; None for a static batch (the model's own)."""
    if static:
        return None
    return f"{min(batches)},{max(batches)},{max(batches)}"


def _trt_options(onnx_path: Path | None, precision: str, batches: list[int], static: bool) -> dict[str, str]:
    try:
        from ..trt.ort_options import tensorrt_provider_options
    except ImportError:
        return {"trt_fp16_enable": "True"} if precision == "fp16" else {}
    if onnx_path is None:
        return {"trt_fp16_enable": "True"} if precision == "fp16" else {}
    return tensorrt_provider_options(onnx_path, precision=precision, batch=trt_batch_range(batches, static))


def _cuda_options() -> dict[str, str]:
    try:
        from ..trt.ort_options import cuda_provider_options
    except ImportError:
        return {"use_tf32": "0"}
    return cuda_provider_options(tf32=False)


def make_onnx_runner(
    name: str,
    model: Path | bytes,
    *,
    precision: str,
    threads: int | None,
    batches: list[int],
    static_batch: bool,
    onnx_path: Path | None = None,
) -> Any:
    """An (inactive) runner of an ONNX model on an ONNX backend (ORT providers, or a native TensorRT engine).

    A native engine is built from a file: ``model`` must then be a path.
    """
    if name == "trt-engine":
        from ..runners.tensorrt import TensorRTRunner

        src = model if isinstance(model, Path) else onnx_path
        if src is None:
            raise BackendUnavailable("the native TensorRT runner builds from a file", hint="pass the model's path")
        runner = TensorRTRunner(src, precision=precision, batch=trt_batch_range(batches, static_batch))
        runner.name = "trt-engine"
        return runner
    return make_ort_runner(
        name, model, precision=precision, threads=threads, batches=batches, static_batch=static_batch, onnx_path=onnx_path
    )


def make_ort_runner(
    name: str,
    model: Path | bytes,
    *,
    precision: str,
    threads: int | None,
    batches: list[int],
    static_batch: bool,
    onnx_path: Path | None = None,
) -> Any:
    """An (inactive) :class:`~deployinc.runners.ort.OrtRunner` for ``ort-cpu``/``ort-cuda``/``ort-trt``.

    Raises:
        BackendUnavailable: CUDA cannot run here (asked before computing TensorRT options, which need a GPU).
    """
    from ..runners.ort import OrtRunner, cuda_driver_problem

    provider = _ORT_PROVIDER[name]
    options: dict[str, Any] = {}
    if provider != "cpu":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not importable: {exc}", hint="pip install onnxruntime-gpu") from exc
        ep = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
        if ep not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{ep} is not in this onnxruntime build ({ort.__version__})",
                hint="install onnxruntime-gpu for CUDA and TensorRT",
            )
        problem = cuda_driver_problem()
        if problem is not None:
            raise BackendUnavailable(
                f"{ep} cannot run: {problem}",
                hint="run on a machine with an NVIDIA GPU and matching CUDA/cuDNN (and TensorRT) libraries",
            )
        if provider == "tensorrt":
            src = onnx_path if onnx_path is not None else (model if isinstance(model, Path) else None)
            options = _trt_options(src, precision, batches, static_batch)
        else:
            options = _cuda_options()
    src_model: Any = str(model) if isinstance(model, Path) else model
    return OrtRunner(src_model, provider, threads=threads, precision=precision, provider_options=options, name=name)


def open_backend(
    name: str,
    *,
    onnx_path: Path,
    onnx_bytes: bytes | None,
    reference: Any,
    precision: str,
    threads: int | None,
    batches: list[int],
    static_batch: bool,
) -> Opened:
    """Create and activate one backend; a backend that cannot run here comes back skipped with the reason."""
    import time

    t0 = time.perf_counter()
    try:
        if name in ONNX_BACKENDS:
            runner = make_onnx_runner(
                name,
                onnx_bytes if (onnx_bytes is not None and name != "trt-engine") else onnx_path,
                precision=precision,
                threads=threads,
                batches=batches,
                static_batch=static_batch,
                onnx_path=onnx_path,
            )
        elif name == "torch-cuda":
            if reference is None or reference.module is None:
                raise BackendUnavailable("torch-cuda needs a torch reference", hint="drop --against, or drop torch-cuda")
            from ..runners.torch_runner import TorchRunner

            runner = TorchRunner(
                reference.module, device="cuda", precision="fp16" if precision == "fp16" else "fp32", name="torch-cuda"
            )
            # The reference module stays on the CPU: the CUDA runner gets its own copy.
            runner.module = copy.deepcopy(reference.module)
        elif name == "torch-fused":
            if reference is None or reference.module is None:
                raise BackendUnavailable("torch-fused needs a torch reference", hint="drop --against, or drop torch-fused")
            from ..prepare import prepare
            from ..runners.torch_runner import TorchRunner

            info = reference.info
            chw = tuple(info.input_size) if info is not None else (3, 224, 224)
            prepared, _ = prepare(
                reference.module,
                (1, *chw),
                aux_heads=tuple(info.aux_heads) if info is not None else (),
                mean=tuple(info.mean) if info is not None else None,
                std=tuple(info.std) if info is not None else None,
            )
            runner = TorchRunner(prepared, device="cpu", threads=threads, name="torch-fused")
        else:  # pragma: no cover - parse_providers refuses other names
            raise BadInputError(f"unknown backend {name!r}", hint=available_names())
        runner.activate()
    except BackendUnavailable as exc:
        return Opened(name=name, reason=exc.message, hint=exc.hint, seconds=time.perf_counter() - t0)
    return Opened(name=name, runner=runner, seconds=time.perf_counter() - t0)


def run_isolated_outputs(
    name: str,
    onnx_path: str,
    x: Any,
    batches: list[int],
    *,
    precision: str,
    threads: int | None,
    static_batch: bool,
    input_elem_type: int,
) -> dict[str, Any]:
    """Run one ONNX backend over ``x`` at every batch size; meant for a subprocess (:func:`deployinc.isolate.call_isolated`).

    Returns ``{"describe": ..., "activate_seconds": ..., "outputs": {batch: {output: array}}, "seconds": {batch: s}}``.

    Raises:
        BackendUnavailable: The backend cannot run here (re-raised in the parent, reported as skipped).
    """
    import time

    import numpy as np

    runner = make_onnx_runner(
        name, Path(onnx_path), precision=precision, threads=threads, batches=batches, static_batch=static_batch,
        onnx_path=Path(onnx_path),
    )
    runner.activate()
    try:
        in_name = runner.input_names()[0]
        dtype = {10: np.float16, 11: np.float64}.get(input_elem_type, np.float32)
        outs: dict[int, dict[str, Any]] = {}
        secs: dict[int, float] = {}
        for b in batches:
            n = (x.shape[0] // b) * b
            t = time.perf_counter()
            parts: dict[str, list[Any]] = {}
            for i in range(0, n, b):
                got = runner.infer({in_name: np.ascontiguousarray(x[i : i + b].astype(dtype))})
                for k, v in got.items():
                    parts.setdefault(k, []).append(np.asarray(v))
            outs[b] = {k: np.concatenate(v) for k, v in parts.items()}
            secs[b] = time.perf_counter() - t
        return {"describe": runner.describe(), "activate_seconds": runner.activate_seconds, "outputs": outs, "seconds": secs}
    finally:
        runner.deactivate()
