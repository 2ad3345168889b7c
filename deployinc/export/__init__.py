"""Export a prepared PyTorch model to ONNX, and the whole ``deployinc export`` pipeline.

Two exporters: the torch.export-based one (``dynamo``, the default; needs onnxscript; its graph is optimised by
onnxscript, which folds constants) and the TorchScript one (``torchscript``; deprecated in torch but fast and
still sound). The dynamo exporter writes opset 18 at the lowest; lower opsets are reached by
:mod:`deployinc.export.downgrade`. ``deployinc export`` falls back to the other exporter, and to a higher opset when
the user did not pin one, when the requested path fails (:mod:`deployinc.export.fallback`). Every result has one input ``input`` [N, C, H, W] (N symbolic unless
``dynamic_batch=False``) and one output ``logits``, passes ``onnx.checker.check_model(full_check=True)``, and
carries an IR version that the installed ONNX Runtime can read.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import io as dio
from ..config import ExportConfig, bundled_config_path, load_config, tomllib, validate
from ..core.floor import budget_text, measure, widen
from ..core.images import natural_images
from ..core.metrics import compare_outputs, one_line, preset
from ..core.progress import Progress
from ..errors import BadInputError, ExportError
from ..metadata import Provenance, versions, write_provenance
from ..models import loading
from ..models.bn_cache import store_bn_stats
from ..prepare import prepare
from ..runners.ort import OrtRunner
from ..runners.torch_runner import TorchRunner
from ..simplify import simplify as run_simplify
from .downgrade import downgrade_opset
from .fallback import ExportPath, UnexportableError, export_with_fallback  # noqa: F401 - UnexportableError re-exported

EXPORTERS = ("dynamo", "torchscript")
#: Opsets deployinc exports, per exporter (both checked by tests; dynamo below 18 via downgrade).
SUPPORTED_OPSETS = {"dynamo": tuple(range(13, 22)), "torchscript": tuple(range(13, 22))}
from ..core.graph import INPUT_NAME, OUTPUT_NAME, guard_pad_before_maxpool, node_counts, reinfer_shapes  # noqa: F401 - re-exported
from ..core.precisions import FP32


def check_opset(exporter: str, opset: int) -> None:
    """Raise a clear error for an exporter/opset pair deployinc does not export."""
    if exporter not in EXPORTERS:
        raise BadInputError(f"unknown exporter {exporter!r}", hint=f"use one of {', '.join(EXPORTERS)}")
    ok = SUPPORTED_OPSETS[exporter]
    if opset not in ok:
        raise BadInputError(
            f"opset {opset} is not supported by the {exporter} exporter (supported: {ok[0]}..{ok[-1]})",
            hint=f"pass --opset between {ok[0]} and {ok[-1]}",
        )


@lru_cache(maxsize=1)
def max_readable_ir_version() -> int:
    """The highest ONNX IR version the installed ONNX Runtime loads (probed once with a one-node model)."""
    import onnx
    from onnx import TensorProto, helper

    try:
        import onnxruntime as ort
    except ImportError:
        return onnx.IR_VERSION
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    for ir in range(onnx.IR_VERSION, 6, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = ir
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            return ir
        except Exception:  # noqa: BLE001 - "Unsupported model IR version"
            continue
    return 7


def cap_ir_version(model: Any) -> list[str]:
    """Lower ``model.ir_version`` to what the installed ONNX Runtime reads; return a note when it did."""
    cap = max_readable_ir_version()
    if model.ir_version > cap:
        old = model.ir_version
        model.ir_version = cap
        return [f"IR version {old} lowered to {cap}, the highest the installed onnxruntime reads"]
    return []


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the exporters' progress chatter and deprecation warnings (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _reason(exc: BaseException) -> str:
    """One line that says why an exporter failed.

    The dynamo exporter's first line is generic ("Failed to convert the exported program..."); the cause is the
    first entry of its "## Exception summary".
    """
    text = _ANSI.sub("", str(exc))
    if "## Exception summary" in text:
        for line in text.split("## Exception summary", 1)[1].splitlines():
            m = re.match(r"\s*<class '[\w.]+'>:\s*(.+)", line)
            if m:
                return m.group(1).strip()[:300]
    return _first_line(exc)


@contextlib.contextmanager
def _quiet_fds() -> Any:
    """Send file descriptors 1 and 2 to a temporary file: the TorchScript exporter's C++ side prints its whole IR
    graph to stdout when it fails (which a fallback to the other exporter would otherwise show)."""
    import sys
    import tempfile

    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # no such descriptor: nothing to silence
                    continue
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def run_exporter(module: Any, input_shape: tuple[int, ...], opset: int, exporter: str, dynamic_batch: bool = True) -> Any:
    """One exporter's raw output (``onnx.ModelProto``): the dynamo exporter writes ``max(opset, 18)``.

    Raises:
        ExportError: The exporter failed; the message carries its one-line reason.
    """
    import onnx
    import torch

    shape = tuple(input_shape)
    if exporter == "dynamo" and dynamic_batch and shape[0] == 1:
        # torch.export specialises a dimension whose example size is 1: torchvision's ViT traced at batch 1 bakes
        # that 1 into a reshape of its second attention layer, and the graph fails at batch 2. Traced at batch 2,
        # the batch stays symbolic (the quick check then runs batch 1 and 2).
        shape = (2, *shape[1:])
    x = torch.zeros(shape, dtype=torch.float32)
    dyn = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                program = torch.onnx.export(
                    module,
                    (x,),
                    dynamo=True,
                    opset_version=max(opset, 18),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=dyn,
                    optimize=True,
                    verify=False,
                    report=False,
                )
                return program.model_proto
            buf = io.BytesIO()
            with _quiet_fds():
                torch.onnx.export(
                    module,
                    (x,),
                    buf,
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=dyn,
                    do_constant_folding=True,
                )
            return onnx.load_model_from_string(buf.getvalue())
    except Exception as exc:  # noqa: BLE001 - both exporters raise a wide range of types
        raise ExportError(
            f"the {exporter} exporter failed: {_reason(exc)}",
            hint="try the other exporter (--exporter torchscript or dynamo); run with --debug for the traceback",
        ) from exc


def finish_export(model: Any, opset: int, exporter: str) -> Any:
    """Bring an exporter's raw output to ``opset`` (lowering it if needed), cap its IR version and check it.

    Raises:
        ExportError: The opset cannot be reached, or the result is not valid ONNX.
    """
    import onnx

    model, shape_note = reinfer_shapes(model)  # before the lowering, which reads static sizes from these annotations
    have = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if have is not None and have > opset:
        model = downgrade_opset(model, opset)
        have = opset
    if have != opset:
        raise ExportError(
            f"the {exporter} exporter wrote opset {have}, not the {opset} asked for",
            hint="choose another --opset or exporter",
        )
    guarded = guard_pad_before_maxpool(model)
    pad_note = (f"{guarded} zero Pad(s) before a MaxPool written with the value -0.0 (equal to 0): ONNX Runtime's PadFusion would fold a "
                "0 into the MaxPool's own padding, which pads with -inf, and compute windows of negative values wrong") if guarded else None  # fmt: skip
    for note in [*([shape_note] if shape_note else []), *([pad_note] if pad_note else []), *cap_ir_version(model)]:  # kept on the model for export_pipeline, which moves it to its notes
        entry = model.metadata_props.add()
        entry.key, entry.value = "deployinc.export.note", note
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model is not valid ONNX: {_first_line(exc)}", hint="try the other exporter") from exc
    return model


def ort_run_problem(model: Any, input_shape: tuple[int, ...], dynamic_batch: bool = True) -> str | None:
    """Why ONNX Runtime's CPU provider cannot run ``model`` on zeros at batch 1 and 2 (1 alone when the batch is
    static), or None when it can. The numbers are not judged here (the quick check does that): this tells an
    exporter whose graph is valid ONNX but does not run (a batch baked into a reshape) from one that works, so the
    fallback can try the other exporter. A model too large to serialise in memory is not probed (None).
    """
    import numpy as np

    try:
        data = model.SerializeToString()
    except ValueError:  # over protobuf's 2 GiB: the quick check (from the written file) is the test
        return None
    batches = (1, 2) if dynamic_batch else (input_shape[0],)
    where = "load its graph"
    try:
        with OrtRunner(data, "cpu", threads=1) as runner:
            for b in batches:
                where = f"run its graph at batch {b}"
                runner.infer({INPUT_NAME: np.zeros((b, *input_shape[1:]), np.float32)})
    except Exception as exc:  # noqa: BLE001 - whatever ORT raises, the answer is "this path's graph does not run"
        text = getattr(exc, "message", None) or str(exc)
        return f"ONNX Runtime cannot {where}: {(text.splitlines() or [''])[0][:200]}"
    return None


def export_onnx(
    module: Any,
    input_shape: tuple[int, ...],
    opset: int = 17,
    exporter: str = "dynamo",
    dynamic_batch: bool = True,
) -> Any:
    """Export ``module`` (already prepared: eval mode, one output) to an ``onnx.ModelProto``, with one exporter at
    one opset (no fallback; :func:`deployinc.export.fallback.export_with_fallback` tries the other paths).

    Args:
        module: The prepared ``nn.Module``.
        input_shape: N, C, H, W of the example input.
        opset: ai.onnx opset of the result.
        exporter: ``dynamo`` or ``torchscript``.
        dynamic_batch: Make the batch dimension symbolic (``batch``).

    Raises:
        BadInputError: Unsupported exporter/opset.
        ExportError: The exporter failed or produced something invalid.
    """
    check_opset(exporter, opset)
    model = run_exporter(module, input_shape, opset, exporter, dynamic_batch)
    return finish_export(model, opset, exporter)


@dataclass
class ExportResult:
    """What ``deployinc export`` produced and how."""

    path: Path | None
    model: Any
    provenance: Any
    prepare_report: Any
    simplify_report: Any
    quick_check: list[Any]
    quick_check_line: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.quick_check)


def resolve_config(
    model: str | None = None, config: str | os.PathLike[str] | None = None, **overrides: Any
) -> Any:
    """The :class:`~deployinc.config.ExportConfig` for a model name and/or config file, flags applied last.

    ``deployinc export googlenet`` uses the bundled ``googlenet.toml`` when there is one.
    """
    if config is not None:
        cfg = load_config(config)
        if model is not None and model != cfg.model:
            cfg = cfg.with_overrides(model=model)
    elif model is not None:
        bundled = bundled_config_path(model) if ":" not in model and "/" not in model else None
        cfg = load_config(bundled) if bundled else ExportConfig(model=model)
    else:
        raise BadInputError("no model given", hint="deployinc export NAME, or deployinc export --config FILE")
    return validate(cfg.with_overrides(**overrides))


def opset_pinned(config: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> bool:
    """Whether the user chose the opset: an ``opset`` override (``--opset``), or ``export.opset`` in a config file
    they named. A bundled config's opset is deployinc's default for that model, not a pin."""
    if overrides.get("opset") is not None:
        return True
    if config is None:
        return False

    try:
        data = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # resolve_config read it already; be safe and keep the opset fixed
        return True
    section = data.get("export")
    return isinstance(section, dict) and "opset" in section


#: export's stages (load, prepare, export, simplify, check, write) print through the one progress.
Stages = Progress


def export_pipeline(
    model: str | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    simplify: bool = True,
    quick_check: bool = True,
    threads: int | None = None,
    log: Any = None,
    fallback: bool = True,
    stages: Stages | None = None,
    **overrides: Any,
) -> ExportResult:
    """Load, prepare, export, simplify, check and save a model: the library form of ``deployinc export``.

    Args:
        model: Model spec (registry name, ``timm/<name>``, ``package.module:function``).
        config: Export config file (TOML); ``model`` overrides its model name.
        out: Output ``.onnx`` path, or an existing directory (the file is named after the model); ``None``
            writes nothing and returns the model in memory.
        force: Overwrite an existing output.
        simplify: Run the simplifier named in the config.
        quick_check: Compare ORT CPU with the prepared torch module at batch 1 and 2.
        threads: torch and ORT intra-op threads.
        log: ``callable(str)`` for progress lines: one as each stage starts (load, recalibrate BatchNorm,
            prepare, export, simplify, check, write) and one with its seconds as it ends, and each stage's summary.
        stages: The :class:`Stages` printing those lines (default: plain lines through ``log``); the CLI passes
            one with a spinner on a terminal.
        fallback: When the requested exporter fails, try the other one, and, unless the opset is pinned (given
            here or in ``config``), a higher opset (see :mod:`deployinc.export.fallback`). False: exactly the
            requested path or its error.
        **overrides: ExportConfig fields (weights, num_classes, input_shape, opset, exporter, dynamic_batch,
            simplifier, skip_passes, aux_heads, mean, std, seed).
    """
    stages = stages if stages is not None else Stages(log)
    cfg = resolve_config(model, config, **overrides)
    timings: dict[str, float] = {}
    target: Path | None = None
    if out is not None:
        target = Path(out)
        if target.is_dir() or str(out).endswith(("/", os.sep)):
            target = target / f"{cfg.name}.onnx"
        dio.check_output_path(target, force)  # fail before minutes of work, not after
    try:
        return _run_pipeline(cfg, config, overrides, target, force, simplify, quick_check, threads, fallback, stages, timings)
    except BaseException:
        stages.abort()
        raise
    finally:
        stages.close()


def _run_pipeline(
    cfg: Any, config: Any, overrides: dict[str, Any], target: Path | None, force: bool, simplify: bool,
    quick_check: bool, threads: int | None, fallback: bool, stages: Stages, timings: dict[str, float],
) -> ExportResult:
    """The stages of :func:`export_pipeline` once its arguments are checked."""
    say = stages.say
    if cfg.input_shape is None and ":" in str(cfg.model):
        say("note: no --input-shape: exporting at 1,3,224,224 (the default for user models)")
    stages.start("load", f"{cfg.model}, {loading.weights_text(str(cfg.model), cfg.weights)}")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    loaded = loading.load_model(
        cfg.model,
        weights=cfg.weights,
        num_classes=cfg.num_classes,
        input_shape=cfg.input_shape,
        mean=cfg.mean,
        std=cfg.std,
        seed=cfg.seed,
        on_stage=stages.start,
    )
    timings["load"] = time.perf_counter() - t0
    info = loaded.info
    input_shape = (1, *info.input_size)
    for note in loaded.notes:
        say(note)
    stages.start("prepare", "eval, auxiliary heads, dropout, Conv+BN folding, self-check")
    t = time.perf_counter()
    prepared, prep_report = prepare(
        loaded.module,
        input_shape,
        aux_heads=tuple(cfg.aux_heads) + tuple(info.aux_heads),
        skip=tuple(cfg.skip_passes),
        mean=info.mean,
        std=info.std,
    )
    timings["prepare"] = time.perf_counter() - t
    say(f"prepare: {prep_report.summary()}")
    for line in prep_report.notes():
        say(line)
    stages.start("export", f"{cfg.exporter} exporter, opset {cfg.opset}, {','.join(map(str, input_shape))}")
    t = time.perf_counter()
    onnx_model, path = export_with_fallback(
        prepared,
        input_shape,
        cfg.opset,
        cfg.exporter,
        cfg.dynamic_batch,
        opset_pinned=opset_pinned(config, overrides),
        fallback=fallback,
    )
    timings["export"] = time.perf_counter() - t
    if path.fell_back:
        say(f"export fallback: {path.summary()}")
    notes = [p.value for p in onnx_model.metadata_props if p.key == "deployinc.export.note"]  # finish_export's
    kept = [p for p in onnx_model.metadata_props if p.key != "deployinc.export.note"]
    del onnx_model.metadata_props[:]
    onnx_model.metadata_props.extend(kept)
    notes += cap_ir_version(onnx_model)

    simp_report = None
    if simplify and cfg.simplifier != "none":
        stages.start("simplify", cfg.simplifier)
        t = time.perf_counter()
        onnx_model, simp_report = run_simplify(onnx_model, cfg.simplifier, input_shape=input_shape, threads=threads)
        timings["simplify"] = time.perf_counter() - t
        say(simp_report.summary())
        notes += simp_report.notes
        notes += cap_ir_version(onnx_model)

    prov = _provenance(cfg, loaded, input_shape, prep_report, simp_report, path)
    write_provenance(onnx_model, prov)
    if loaded.bn_recalibrated:
        # prepare() deep-copied, so loaded.module still holds the recalibrated statistics: cache them for verify.
        store_bn_stats(prov, loaded.module)

    checks: list[Any] = []
    line = "quick check skipped"
    if quick_check:
        batches = "1 and 2" if cfg.dynamic_batch else "1"
        stages.start("check", f"ORT CPU vs torch, batch {batches}")
        t = time.perf_counter()
        checks, line = quick_parity(onnx_model, prepared, input_shape, info.mean, info.std, cfg.dynamic_batch, threads)
        timings["quick_check"] = time.perf_counter() - t
        say(f"quick check (ORT CPU vs torch, batch {batches}): {line}")
    if target is not None:
        stages.start("write", str(target))
        t = time.perf_counter()
        dio.save_onnx(onnx_model, target, force=force)
        timings["save"] = time.perf_counter() - t
    stages.end()
    timings["total"] = time.perf_counter() - t0
    return ExportResult(
        path=target,
        model=onnx_model,
        provenance=prov,
        prepare_report=prep_report,
        simplify_report=simp_report,
        quick_check=checks,
        quick_check_line=line,
        timings=timings,
        notes=notes,
    )


def _provenance(cfg: Any, loaded: Any, input_shape: tuple[int, ...], prep_report: Any, simp_report: Any, path: ExportPath) -> Any:
    """The :class:`~deployinc.metadata.Provenance` of an export: what it was made from, and the path it took."""
    info = loaded.info
    used = path.used
    return Provenance(
        model_spec=cfg.model,
        weights=loaded.weights,
        weights_sha256=loaded.weights_sha256,
        state_sha256=loaded.state_sha256,
        seed=loaded.seed,
        bn_recalibrated=loaded.bn_recalibrated,
        num_classes=info.num_classes,
        input_shape=list(input_shape),
        mean=list(info.mean),
        std=list(info.std),
        passes=prep_report.applied + (simp_report.applied if simp_report else []),
        exporter=used.exporter,
        opset=used.opset,
        dynamic_batch=cfg.dynamic_batch,
        family=info.family,
        config=cfg.source,
        tolerances=cfg.tolerances or None,
        versions=versions(),
        aux_heads=[c for p in prep_report.passes if p.name == "remove_aux_heads" for c in p.changed],
        export_path=path.to_dict(),
        fallback=path.summary(),
        opset_pinned=path.opset_pinned,
    )


def quick_parity(
    onnx_model: Any,
    module: Any,
    input_shape: tuple[int, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dynamic_batch: bool = True,
    threads: int | None = None,
) -> tuple[list[Any], str]:
    """ORT CPU against the prepared torch module on natural images at batch 1 and 2 (1 when static).

    Uses the same runners and comparison as ``deployinc verify``. When the fp32 preset fails, the torch module's
    own float32 error (a float64 run on the same inputs, :mod:`deployinc.core.floor`) is measured and the
    outputs are judged against ``max(preset, 2 x floor)``, as verify does; the line says so.
    """
    import numpy as np

    batches = (1, 2) if dynamic_batch else (input_shape[0],)
    x = natural_images(sum(batches), input_shape[1:], mean, std, seed=2024)
    pairs = []
    with OrtRunner(onnx_model.SerializeToString(), "cpu", threads=threads) as ort_r, TorchRunner(module, threads=threads) as t_r:
        start = 0
        for b in batches:
            feed = {INPUT_NAME: np.ascontiguousarray(x[start : start + b])}
            start += b
            pairs.append((t_r.infer(feed), ort_r.infer(feed)))
    base = preset(FP32, "cpu")
    results = [c for ref, got in pairs for c in compare_outputs(ref, got, base)]
    if all(c.passed for c in results):
        return results, one_line(results)
    ref_all = {k: np.concatenate([ref[k] for ref, _ in pairs]) for k in pairs[0][0]}
    floor = measure(module, x, ref_all, batch=max(batches))
    tol = widen(base, FP32, floor)
    if tol is not base:
        results = [c for ref, got in pairs for c in compare_outputs(ref, got, tol)]
        return results, f"{one_line(results)} (torch fp32 vs fp64: {floor.worst_rel:.1e}; {budget_text(tol, base, floor)})"
    return results, f"{one_line(results)} ({floor.line()})"
