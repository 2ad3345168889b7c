"""Crash isolation: run a backend in a subprocess so a native crash or a hang is that backend failing.

ONNX Runtime and TensorRT are native code; a malformed model can crash them (a segfault takes the whole
process) or make them hang. :func:`call_isolated` runs a function, named ``module:function`` so that nothing
unpicklable crosses over, in a fresh ``spawn``-ed interpreter (fork is unsafe once torch or ORT have started
threads), returns its result, re-raises its :class:`~deployinc.errors.DeployincError`, and turns a death by signal
or a timeout into :class:`~deployinc.errors.BackendCrashed` so the caller can go on with the other backends.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import signal
import traceback
from typing import Any

from .errors import BackendCrashed, DeployincError


def _child(conn: Any, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        module, _, name = target.partition(":")
        fn = getattr(importlib.import_module(module), name)
        conn.send(("ok", fn(*args, **kwargs)))
    except DeployincError as exc:
        conn.send(("error", exc))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        conn.send(("bug", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def call_isolated(target: str, *args: Any, timeout: float | None = 600.0, label: str | None = None, **kwargs: Any) -> Any:
    """Run ``target(*args, **kwargs)`` (``"package.module:function"``) in a subprocess; return its result.

    Args:
        target: Importable ``module:function``; arguments and the result must pickle.
        timeout: Seconds before the subprocess is killed and reported as hung (None: no limit).
        label: Name of the backend in messages (default: ``target``).

    Raises:
        BackendCrashed: The subprocess died by a signal, exited without a result, or timed out.
        DeployincError: Whatever expected error the function raised, re-raised here.
        RuntimeError: The function raised an unexpected exception (a bug), with its traceback text.
    """
    what = label or target
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, target, args, kwargs), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            proc.join(5)
            raise BackendCrashed(
                f"{what} did not finish within {timeout:g} s and was stopped",
                hint="raise --timeout, or check the model with deployinc check",
            )
        try:
            status, payload = parent.recv()
        except EOFError:
            proc.join(10)
            code = proc.exitcode
            how = _signal_name(code) if code is not None and code < 0 else f"exit code {code}"
            raise BackendCrashed(
                f"{what} crashed ({how}) in its isolated process",
                hint="the runtime failed in native code; try another backend, or run deployinc check on the model",
            ) from None
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if status == "ok":
        return payload
    if status == "error":
        raise payload
    raise RuntimeError(f"{what} raised in its isolated process: {payload}")


# Functions used by the tests (they must be importable by name in the child).


def _crash_for_test() -> None:  # pragma: no cover - runs in the child
    import ctypes

    ctypes.string_at(0)


def _hang_for_test() -> None:  # pragma: no cover - runs in the child
    import time

    time.sleep(3600)
