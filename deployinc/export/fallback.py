"""Export by the first path that works: the exporter asked for, then the other one, then (when the user did not
pin the opset) a higher opset.

:func:`export_with_fallback` tries, in order:

1. the requested exporter at the requested opset (a path whose graph ONNX Runtime's CPU provider cannot run at
   batch 1 and 2 counts as failed: :func:`~deployinc.export.ort_run_problem`);
2. the other exporter (dynamo <-> torchscript) at the same opset;
3. only when the opset is not pinned (no ``--opset`` flag, no ``export.opset`` in the user's config file): opset 18
   (the dynamo exporter's own, so nothing needs lowering) and then the highest supported one, each with the
   requested exporter first.

The torch.export-based exporter's output at its native opset is cached, so trying it again at a higher opset after
a failed lowering costs nothing, and an exporter failure is not repeated. Each attempt is recorded
(:class:`ExportPath`) for the screen and the provenance metadata. When every path fails, one
:class:`UnexportableError` names the operator and, where it can be found, the torch module that uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import export as E  # the package: its names are read at call time (it imports this module first)
from ..errors import ExportError

__all__ = ["Attempt", "ExportPath", "UnexportableError", "export_with_fallback", "locate_op"]


class UnexportableError(ExportError):
    """No exporter exports the model at any opset deployinc may use; the message names the operator."""


@dataclass
class Attempt:
    """One exporter at one opset; ``error`` is None for the path that produced the model."""

    exporter: str
    opset: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"exporter": self.exporter, "opset": self.opset, "error": self.error}


@dataclass
class ExportPath:
    """The paths tried, in order, and what was asked for."""

    exporter: str
    opset: int
    opset_pinned: bool
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def used(self) -> Attempt | None:
        """The attempt that produced the model (None when none did)."""
        return next((a for a in self.attempts if a.error is None), None)

    @property
    def fell_back(self) -> bool:
        """Whether the model came from another path than the one asked for."""
        used = self.used
        return used is not None and (used.exporter, used.opset) != (self.exporter, self.opset)

    def summary(self) -> str | None:
        """``dynamo failed at opset 17: <reason>; exported with torchscript at opset 17``, or None without a
        fallback."""
        used = self.used
        if used is None or not self.fell_back:
            return None
        failed = "; ".join(f"{a.exporter} failed at opset {a.opset}: {a.error}" for a in self.attempts if a.error)
        text = f"{failed}; exported with {used.exporter} at opset {used.opset}"
        if used.opset != self.opset:
            text += f" (opset {self.opset} was a default, not pinned; pass --opset to require one)"
        return text

    def to_dict(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.attempts]


def _plan(exporter: str, opset: int, opset_pinned: bool, fallback: bool) -> list[tuple[str, int]]:
    other = next(e for e in E.EXPORTERS if e != exporter)
    plan = [(exporter, opset)]
    if not fallback:
        return plan
    if opset in E.SUPPORTED_OPSETS[other]:
        plan.append((other, opset))
    if not opset_pinned:
        for higher in (18, max(E.SUPPORTED_OPSETS[exporter])):
            if higher > opset:
                plan += [(e, higher) for e in (exporter, other) if higher in E.SUPPORTED_OPSETS[e]]
    return list(dict.fromkeys(plan))


def _short(exc: ExportError, exporter: str) -> str:
    prefix = f"the {exporter} exporter failed: "
    return exc.message[len(prefix) :] if exc.message.startswith(prefix) else exc.message


def export_with_fallback(
    module: Any,
    input_shape: tuple[int, ...],
    opset: int = 17,
    exporter: str = "dynamo",
    dynamic_batch: bool = True,
    *,
    opset_pinned: bool = True,
    fallback: bool = True,
) -> tuple[Any, ExportPath]:
    """Export ``module`` by the first path that works (see the module docstring).

    Args:
        module: The prepared ``nn.Module``.
        input_shape: N, C, H, W of the example input.
        opset: The opset asked for.
        exporter: The exporter asked for.
        dynamic_batch: Symbolic batch dimension.
        opset_pinned: The user chose ``opset``: never export at another one.
        fallback: Try other paths at all (False: exactly the one asked for).

    Returns:
        The ONNX model and the record of the paths tried.

    Raises:
        BadInputError: Unsupported exporter/opset asked for.
        UnexportableError: No path works (with ``fallback=False``: the one path's own ExportError).
    """
    import onnx

    E.check_opset(exporter, opset)
    path = ExportPath(exporter, opset, opset_pinned)
    native: dict[int, Any] = {}  # dynamo's raw output (or its failure) per native opset
    errors: list[ExportError] = []
    for exp, o in _plan(exporter, opset, opset_pinned, fallback):
        try:
            if exp == "dynamo":
                key = max(o, 18)
                if key not in native:
                    try:
                        native[key] = E.run_exporter(module, input_shape, o, exp, dynamic_batch)
                    except ExportError as exc:
                        native[key] = exc
                        raise
                elif isinstance(native[key], ExportError):
                    continue  # the same export failed already
                raw = onnx.ModelProto()
                raw.CopyFrom(native[key])
            else:
                raw = E.run_exporter(module, input_shape, o, exp, dynamic_batch)
            model = E.finish_export(raw, o, exp)
            problem = E.ort_run_problem(model, input_shape, dynamic_batch) if fallback else None
            if problem is not None:  # valid ONNX that does not run: another path may give one that does
                raise ExportError(f"the {exp} exporter's {DOES_NOT_RUN}: {problem}", hint="try the other exporter")
        except ExportError as exc:
            path.attempts.append(Attempt(exp, o, _short(exc, exp)))
            errors.append(exc)
            continue
        path.attempts.append(Attempt(exp, o))
        return model, path
    if not fallback:
        raise errors[0]
    raise _unexportable(module, input_shape, path, errors) from errors[-1]


_OP_PATTERNS = (
    r"OpOverload\(op='(\w+)\.(\w+)'",
    r"target=torch\.ops\.(\w+)\.(\w+)",
    r"unrecognized namespace (\w+)::(\w+)",
    r"operator '(\w+)::(\w+)'",
    r"'(\w+)\.(\w+)\.default'",
)


def _operator(errors: list[ExportError]) -> tuple[str | None, str | None]:
    """(operator, torch module) named by the failures, best first: torch operators over ONNX ones."""
    texts = [re.sub(r"\x1b\[[0-9;]*m", "", str(e.__cause__ or e)) for e in errors]
    module = next((m.group(1) for t in texts if (m := re.search(r"from torch module ([\w.]+)", t))), None)
    for pattern in _OP_PATTERNS:
        for t in texts:
            m = re.search(pattern, t)
            if m:
                return f"{m.group(1)}::{m.group(2)}", module
    for t in texts:
        m = re.search(r"node \S+ \((\w+)\)", t) or re.search(r"op (\w+) does not exist", t)
        if m:
            return f"ONNX {m.group(1)}", module
    return None, module


def locate_op(module: Any, input_shape: tuple[int, ...], op: str) -> str | None:
    """Path of the innermost submodule whose forward calls the torch operator ``op`` (``ns::name``) first, found
    by one forward pass under a dispatch mode; ``""`` for the top-level forward; None when it never runs."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    stack: list[str] = []
    found: list[str] = []

    class _Find(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if not found and func._schema.name == op:
                found.append(stack[-1] if stack else "")
            return func(*args, **(kwargs or {}))

    def enter(name: str) -> Any:
        def hook(_module: Any, _args: Any) -> None:
            stack.append(name)

        return hook

    def leave(_module: Any, _args: Any, _out: Any) -> None:  # must return None: a value would replace the output
        if stack:
            stack.pop()

    hooks = []
    for name, sub in module.named_modules():
        hooks.append(sub.register_forward_pre_hook(enter(name)))
        hooks.append(sub.register_forward_hook(leave))
    try:
        with torch.no_grad(), _Find():
            module(torch.zeros(tuple(input_shape)))
    except Exception:  # noqa: BLE001 - best effort: the error message then names no module
        pass
    finally:
        for h in hooks:
            h.remove()
    if not found:
        return None
    where = found[0]
    if type(module).__name__ == "SelectOutput" and where.startswith("model"):
        where = where[len("model") :].lstrip(".")  # prepare's output wrapper: keep the user's module paths
    return where


def _first_sentence(text: str, limit: int = 160) -> str:
    head = re.split(r"(?<=[\w>)'\]])\.\s", text, maxsplit=1)[0]
    return head if len(head) <= limit else head[: limit - 3] + "..."


def _grouped(attempts: list[Attempt]) -> str:
    """``dynamo at opset 17, 21: <reason>; torchscript at opset 17: <reason>`` (same reasons merged)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for a in attempts:
        groups.setdefault((a.exporter, _first_sentence(a.error or "")), []).append(a.opset)
    return "; ".join(f"{e} at opset {', '.join(map(str, o))}: {r}" for (e, r), o in groups.items())


#: The mark of an attempt whose graph was written but does not run (the ORT probe in export_with_fallback).
DOES_NOT_RUN = "graph does not run"


def _unexportable(module: Any, input_shape: tuple[int, ...], path: ExportPath, errors: list[ExportError]) -> UnexportableError:
    batch1_only = any(DOES_NOT_RUN in str(e) and "at batch 2" in str(e) for e in errors)
    if errors and all(DOES_NOT_RUN in str(e) for e in errors):  # every exporter wrote a graph; none runs
        return UnexportableError(
            f"every export path wrote a graph ONNX Runtime cannot run ({_grouped(path.attempts)})",
            hint=("the model seems to work at batch 1 only: export it with --no-dynamic-batch" if batch1_only else
                  "export with --no-fallback to keep the first path's file and see its quick check; --debug shows the traceback"),
        )  # fmt: skip
    op, where = _operator(errors)
    if op is not None and where is None and "::" in op and not op.startswith("ONNX"):
        where = locate_op(module, input_shape, op)
    tried = _grouped(path.attempts)
    if op is None:
        message = f"no export path works ({tried})"
    else:
        place = f" in torch module {where}" if where else (" in the model's own forward" if where == "" else "")
        message = f"no export path works for operator {op}{place} ({tried})"
    target = f"{op}{f' in {where}' if where else ''}" if op else "the failing operation"
    hint = (
        f"replace {target} with operations the exporters support, or register an ONNX translation for it "
        "(torch.onnx.export custom_translation_table, or torch.onnx.register_custom_op_symbolic)"
    )
    if batch1_only:
        hint = f"if the model works at batch 1 only, export it with --no-dynamic-batch; otherwise {hint}"
    if path.opset_pinned:
        hint += f"; only opset {path.opset} was tried because it was pinned: a higher --opset may work"
    return UnexportableError(message, hint=hint + "; --debug shows the traceback")
