"""TensorRT for RTX through ONNX Runtime's plugin execution provider (``onnxruntime-ep-nv-tensorrt-rtx-cu13``): the
backend ``ort-trt-rtx``.

The wheel bundles TensorRT-RTX (``libtensorrt_rtx``, its ONNX parser) and the provider library
``libonnxruntime_providers_nv_tensorrt_rtx.so``; its module ``onnxruntime_ep_nv_tensorrt_rtx`` gives
``get_library_path()`` and ``get_ep_name()`` (``NvTensorRTRTXExecutionProvider``). ONNX Runtime (1.22 or newer)
loads the library once per process (``register_execution_provider_library``: registering it twice raises), then
lists the provider's *EP devices*; a session takes one through ``SessionOptions.add_provider_for_devices``, with the
provider's options (``enable_cuda_graph``, ``nv_profile_min/opt/max_shapes``...: ``tensorrt_rtx_provider_options.h``
in the wheel). TensorRT-RTX builds its engine for the GPU at hand when the session is created and is strongly typed:
an fp32 file computes in fp32, an fp16 file (``deployinc convert``) in fp16.

It needs an NVIDIA GPU (the support matrix lists RTX-class compute capabilities 7.5, 8.6, 8.9 and 12.0; a Hopper
H100 may refuse it), so deploy plans it only when ``--backends`` names it. The wheel (146 MB) is not a dependency
of deployinc: ``pip install onnxruntime-ep-nv-tensorrt-rtx-cu13``. This module is the whole backend: its record,
its probe and its runner.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable
from ..lazy import require
from ._probe import gpu_problem, installed
from ._record import Backend, register

NAME = "ort-trt-rtx"
DISTRIBUTION = "onnxruntime-ep-nv-tensorrt-rtx-cu13"
MODULE = "onnxruntime_ep_nv_tensorrt_rtx"
EP_NAME = "NvTensorRTRTXExecutionProvider"
INSTALL_HINT = f"pip install {DISTRIBUTION} (next to onnxruntime 1.22 or newer), on a machine with an NVIDIA RTX-class GPU"

_lock = threading.Lock()


def _problem() -> str | None:
    """Why it cannot run here: the package, then the GPU (the package is not imported: it loads TensorRT-RTX)."""
    reasons = []
    if not installed(MODULE):
        reasons.append(f"{DISTRIBUTION} is not installed")
    gpu = gpu_problem()
    if gpu is not None:
        reasons.append(gpu)
    return "; ".join(reasons) or None


def plugin() -> Any:
    """The ``onnxruntime_ep_nv_tensorrt_rtx`` module.

    Raises:
        BackendUnavailable: It is not installed, or cannot be imported (its bundled libraries did not load).
    """
    try:
        import onnxruntime_ep_nv_tensorrt_rtx as rtx
    except ImportError as exc:
        what = "is not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == MODULE else f"cannot be imported: {str(exc)[:200]}"
        raise BackendUnavailable(f"{DISTRIBUTION} {what}", hint=INSTALL_HINT) from exc
    return rtx


def devices(ort: Any) -> list[Any]:
    """Register the plugin's library with ``ort`` (once per process) and return its EP devices.

    Raises:
        BackendUnavailable: The package is missing, onnxruntime cannot load plugins, or the library does not load.
    """
    rtx = plugin()
    name = str(getattr(rtx, "get_ep_name", lambda: EP_NAME)())
    with _lock:
        if not hasattr(ort, "register_execution_provider_library"):
            raise BackendUnavailable(f"onnxruntime {ort.__version__} cannot load plugin execution providers (1.22 or newer can)", hint=INSTALL_HINT)
        found = [d for d in ort.get_ep_devices() if d.ep_name == name]
        if not found:
            try:
                ort.register_execution_provider_library(name, rtx.get_library_path())
            except Exception as exc:  # noqa: BLE001 - ORT raises Fail; a missing library FileNotFoundError
                text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                if "already registered" not in text:
                    raise BackendUnavailable(f"the TensorRT-RTX plugin cannot be registered with onnxruntime {ort.__version__}: {text}", hint=INSTALL_HINT) from exc
            found = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not found:
        raise BackendUnavailable(f"the TensorRT-RTX plugin offers no device here ({EP_NAME} lists none: no supported NVIDIA GPU)", hint=INSTALL_HINT)
    return found


@functools.lru_cache(maxsize=1)
def runner_class() -> Any:
    """``TensorRTRTXRunner``: an OrtRunner (the same infer, IO binding and timing) whose session is made on the
    plugin's GPU device through ``add_provider_for_devices`` instead of a provider name. Made on first use, so that
    naming the backend (``deployinc --help``) does not import numpy."""
    from ..runners.ort import OrtRunner, session_options  # lazy: numpy and the runner stay out of `deployinc --help`

    class TensorRTRTXRunner(OrtRunner):
        def _activate(self) -> None:
            ort = require("onnxruntime", "the TensorRT-RTX backend")
            found = devices(ort)
            so = session_options(self.threads, self.optimization, log_level=self.log_level)
            so.add_provider_for_devices(found[:1], {k: str(v) for k, v in self.provider_options.items()})
            sess = self.plugin_session(ort, so, EP_NAME, "run deployinc check --target tensorrt on the model", INSTALL_HINT)
            self._started(sess, EP_NAME, ort.__version__, tensorrt_rtx_plugin=getattr(plugin(), "__version__", None))

    return TensorRTRTXRunner


def _build(model: Any, *, file: Path | None, precision: str, threads: int | None, trt_batch: str | None,
           cuda_graph: bool, tf32: bool, name: str) -> Any:  # fmt: skip
    problem = gpu_problem()
    if problem is not None:
        raise BackendUnavailable(f"TensorRT-RTX cannot run: {problem}", hint=INSTALL_HINT)
    src: Any = model if isinstance(model, bytes) else str(model)
    runner = runner_class()(src, "cpu", threads=threads, precision=precision, name=name,
                               provider_options={"enable_cuda_graph": "1"} if cuda_graph else {})  # fmt: skip
    runner.device = "cuda"  # OrtRunner's provider name only picks its session kind; the device is the GPU's
    return runner


def _usage(precision: str, threads: int | None, float_precision: str | None = None) -> list[str]:
    return [
        "import numpy as np, onnxruntime as ort",
        f"import onnxruntime_ep_nv_tensorrt_rtx as rtx  # pip install {DISTRIBUTION}",
        "ort.register_execution_provider_library(rtx.get_ep_name(), rtx.get_library_path())",
        "so = ort.SessionOptions()",
        "so.add_provider_for_devices([d for d in ort.get_ep_devices() if d.ep_name == rtx.get_ep_name()][:1], {})",
        'sess = ort.InferenceSession("model.onnx", sess_options=so)',
        "name = sess.get_inputs()[0].name",
        "logits = sess.run(None, {name: images})[0]  # images: N x C x H x W float32, normalised",
    ]


register(
    Backend(
        NAME, "ONNX Runtime, TensorRT-RTX plugin execution provider (onnxruntime-ep-nv-tensorrt-rtx-cu13)", "tensorrt_rtx",
        _problem, aliases=("trt-rtx", "tensorrt-rtx", "nv-tensorrt-rtx"), device="gpu",
        artifacts={"fp32": "fp32", "fp16": "fp16"}, fuses=True, builds_engine=True, isolate=True, rank=2,
        tolerance="tensorrt", cuda_graph=True, check_target="tensorrt", build=_build, usage=_usage,
    ),
)  # fmt: skip
