"""The deploy pipeline: model -> fp32 export -> artifacts -> each candidate verified and timed -> the choice.

Finished work lives in a private folder of the cache, keyed by the sha256 of the model (and its checkpoint) and of
every option that changes a result (:meth:`DeployRequest.key`): the fp32 export, each artifact, the eager-torch
baseline and each candidate's result are written atomically as they finish, so a deploy killed at any point and
run again with the same arguments picks up where it stopped. The package is assembled elsewhere
(:mod:`deployinc.deploy.package`) and put in place only when complete.
"""

from __future__ import annotations

import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..bench.harness import BenchSettings, benchmark_steady
from ..bench.subject import open_onnx
from ..core.cache import cache_subdir, read_regular
from ..core.graph import detect_precision, dims_of, image_input
from ..core.images import load_image_folder_with_report
from ..errors import BackendUnavailable, BadInputError, DeployincError
from ..export import export_pipeline
from ..io import atomic_write_bytes, atomic_write_text, load_onnx, save_onnx, sha256_file
from ..io.arrays import read_npz
from ..metadata import read_provenance
from ..precision.fp16 import convert_to_fp16
from ..core.metrics import preset, task_failures
from ..core.progress import Progress
from ..precision import fallback as fb
from ..precision.int8 import quantize_int8, write_int8
from ..precision.recipe import recipe_for
from .. import backends as B
from ..backends import backend_problem, bf16_native
from ..verify.accuracy import check_class_count, class_count
from ..verify.core import reference_run, run as verify_run
from ..verify.request import VerifyRequest
from ..subject import Subject
from ..subject.inputs import input_spec, sample_images
from .package import write_package
from .plan import Candidate, choose, plan
from .runoff import reference_row, run_off
from .request import DeployRequest, model_digest
from ..core.precisions import BF16, FP16, FP32, INT8, INT8_CPU, INT8_CPU_MIXED_BF16, INT8_CPU_MIXED_QDQ, QDQ

#: Results this format writes; an older cached result is recomputed.
RESULT_FORMAT = 1


class NoArtifact(DeployincError):
    """An artifact that is not made, with the verdict its candidates get: ``skipped`` (a mixed model where the
    whole-model one passes: not needed) or ``fail`` (no set of float layers passes; or, for the bf16-float file, bf16
    spends the search's margin and no widening within reach restores it)."""

    def __init__(self, message: str, verdict: str) -> None:
        super().__init__(message)
        self.verdict = verdict


@dataclass
class DeployResult:
    """What a deploy measured and decided (see :func:`deploy`)."""

    request: DeployRequest
    target: str
    target_reason: str
    fp32_path: Path
    state_dir: Path
    results: list[dict[str, Any]]
    baseline: dict[str, Any]
    left_out: list[dict[str, str]]
    chosen: dict[str, Any] | None
    why: str
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    package: Path | None = None
    #: The chosen lower-precision file judged again on other generated images (:func:`_second_look`), or None.
    second_look: dict[str, Any] | None = None
    #: The fastest passing candidates timed again, interleaved with ORT CPU fp32 (:mod:`.runoff`), or None.
    runoff: dict[str, Any] | None = None


class _Progress:
    """deploy's per-candidate progress on :class:`deployinc.core.progress.Progress`: a line per candidate and its
    verdict, and on a terminal with rich a live bar of the candidate's steps."""

    def __init__(self, req: DeployRequest, total: int):
        self.total = total
        self._p = Progress.for_stream(req.say) if req.log is not None else Progress(None)

    def start(self, i: int, cand: Candidate, steps: int) -> None:
        self._p.count(f"[{i}/{self.total}] {cand.id}", steps, line=f"[{i}/{self.total}] {cand.describe()}")

    def step(self, text: str) -> None:
        self._p.advance()
        self._p.update(note=text)

    def done(self, line: str) -> None:
        self._p.say(f"      {line}")

    def close(self) -> None:
        self._p.close()


def deploy(model: str, **options: Any) -> DeployResult:
    """Deploy ``model`` (a registry name, ``timm/<name>``, ``module:function``, or an fp32 ``.onnx`` file): the library
    form of ``deployinc deploy``. ``options`` are the fields of :class:`DeployRequest`. Writes the package folder
    when a candidate passes.

    When no candidate passes, the result's ``chosen`` is None and nothing is written (the CLI exits 1).

    Raises:
        BadInputError: Bad options or input (exit 2), before anything is written.
    """
    req = DeployRequest(model=model, **options)
    result = evaluate(req)
    if result.chosen is not None:
        result.package = write_package(result)
    return result


def _state_dir(req: DeployRequest, digest: str) -> Path:
    root, warnings = cache_subdir("deploy")
    for w in warnings:
        req.say(f"warning: {w}")
    path = root / req.key(digest)
    path.mkdir(mode=0o700, exist_ok=True)
    (path / "results").mkdir(mode=0o700, exist_ok=True)
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_regular(path, limit=64 << 20))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps({"format": RESULT_FORMAT, **data}, indent=1, default=str), force=True)


def evaluate(req: DeployRequest) -> DeployResult:
    """Every candidate verified and timed, and the choice; writes nothing outside the cache."""
    t0 = time.perf_counter()
    req.check()
    chw = req.known_chw()
    req.check_memory(chw)

    digest = model_digest(req)
    state = _state_dir(req, digest)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    candidates, left_out, target, why = plan(req, backend_problem, bf16_native(), cpus)
    req.say(f"target {target} ({why}); {len(candidates)} candidate(s)" + (f"; left out: {', '.join(d['backend'] + ' (' + d['reason'] + ')' for d in left_out)}" if left_out else ""))
    fp32 = _fp32_model(req, state)
    _check_against(req, fp32, chw)
    artifacts: dict[str, dict[str, Any]] = {FP32: {"path": str(fp32), "made": "export" if fp32.parent == state else "given"}}
    reused: list[str] = []
    subject = Subject.open(fp32, trust_code=req.trust_model_code)  # its torch reference: built once, on first use
    baseline = _baseline(req, state, fp32, target, reused, subject)
    progress = _Progress(req, len(candidates))
    results = []
    try:
        for i, cand in enumerate(candidates, 1):
            results.append(_candidate(req, state, fp32, cand, artifacts, progress, i, reused, subject))
    finally:
        progress.close()
    for r in results:  # a reused candidate's artifact: registered (read back, not remade) for the package
        if r.get("verdict") == "pass" and r["artifact"] not in artifacts:
            try:
                _artifact(req, state, fp32, r["artifact"], artifacts, subject)
            except DeployincError as exc:
                r["verdict"], r["reason"] = "error", exc.message
    runoff_path = state / "results" / "runoff.json"
    runoff = run_off(req, results, lambda r: Path(artifacts[r["artifact"]]["path"]), _read_json(runoff_path), lambda d: _write_json(runoff_path, d))
    _speedups(results, baseline, req)
    chosen, reason = choose(results, req)
    second = _second_look(req, state, chosen, artifacts, subject)
    return DeployResult(
        request=req, target=target, target_reason=why, fp32_path=fp32, state_dir=state, results=results, baseline=baseline,
        left_out=left_out, chosen=chosen, why=reason, artifacts=artifacts, reused=reused, seconds=time.perf_counter() - t0,
        second_look=second, runoff=runoff,
    )  # fmt: skip


#: Seed of the generated images the chosen lower-precision file is judged on again (verify's are seed 0, the
#: calibration's 1): images nothing in the deploy chose from.
SECOND_LOOK_SEED = 100


def _second_look(req: DeployRequest, state: Path, chosen: dict[str, Any] | None, artifacts: dict[str, dict[str, Any]],
                 subject: Subject | None) -> dict[str, Any] | None:  # fmt: skip
    """The chosen lower-precision file judged again, by the same rule, on as many generated images of another seed.
    Its candidates were judged, and a layer fallback searched, on verify's images; where the file's error sits at
    its preset (int8 on random weights, whose logits are nearly flat) a verdict on 16 images depends on the 16 drawn,
    and the report says so when this look disagrees. It does not change the choice. None for fp32, or with
    --accuracy-data (the user's labelled images are the verdict)."""
    if chosen is None or chosen["precision"] == FP32 or req.accuracy_data:
        return None
    model = Path(artifacts[chosen["artifact"]]["path"])
    path = state / f"{chosen['id']}.{sha256_file(model)[:16]}.second-look.json"  # a remade artifact is looked at again
    known = _read_json(path)
    if known is not None:
        return {k: v for k, v in known.items() if k != "format"}
    cand = Candidate(chosen["precision"], chosen["backend"], chosen["artifact"], dict(chosen.get("options") or {}))
    look: dict[str, Any] = {"seed": SECOND_LOOK_SEED, "samples": req.samples, "backend": cand.backend, "precision": cand.precision,
                            "threads": cand.options.get("threads", req.threads), "float_precision": cand.options.get("float")}  # fmt: skip
    try:
        out = _verify(req, model, cand, subject, seed=SECOND_LOOK_SEED)
    except DeployincError as exc:  # it informs, and never costs the package
        look.update(verdict="error", failures=[exc.message])
        return look
    look.update(verdict=out["verdict"], failures=(out.get("failures") or [out.get("reason") or ""])[:4],
                cosine=(out.get("metrics") or {}).get("cosine"), top1_agreement=(out.get("metrics") or {}).get("top1_agreement"))
    _write_json(path, look)
    req.say(f"{chosen['id']} judged again on {req.samples} other generated images (seed {SECOND_LOOK_SEED}): {look['verdict'].upper()}")
    return look


def _fp32_model(req: DeployRequest, state: Path) -> Path:
    """The fp32 ONNX file every artifact starts from: the user's file, or the export (made once per key)."""
    if req.model.endswith(".onnx"):
        path = Path(req.model)
        model = load_onnx(path, load_external=False).model
        precision, _ = detect_precision(model)
        if precision != FP32:
            raise BadInputError(f"{path} is already {precision}", hint="give deploy the fp32 export; it makes the fp16 and int8 variants itself")
        prov = read_provenance(model)
        if prov is None:
            raise BadInputError(
                f"{path} carries no deployinc provenance, so deploy cannot rebuild the torch model to verify against",
                hint="deploy the model by name or module:function (deploy exports it), or export it with deployinc export first",
            )
        if ":" in prov.model_spec and not req.trust_model_code:
            raise BadInputError(
                f"{path} names code to rebuild its reference ({prov.model_spec}); deploy imports it only when asked",
                hint="pass --trust-model-code if you trust that code, or deploy the spec itself: deployinc deploy " + prov.model_spec,
            )
        return path
    out = state / "fp32.onnx"
    if out.is_file():
        req.say(f"fp32 export: reusing {out}")
        return out

    req.say(f"exporting {req.model} to ONNX (fp32)")
    overrides: dict[str, Any] = {"weights": req.weights} if req.weights else {}
    if req.num_classes is not None:
        overrides["num_classes"] = req.num_classes
    if req.input_shape is not None:
        overrides["input_shape"] = tuple(req.input_shape)
    export_pipeline(req.model, out=out, force=True, threads=req.threads, **overrides)
    return out


def _check_against(req: DeployRequest, fp32: Path, chw: tuple[int, ...] | None) -> None:
    """What only the fp32 file tells, checked before any candidate runs: the batch sizes' memory (a model whose
    input size was not known before its export), and one ``--accuracy-data`` class per model output."""
    model = load_onnx(fp32, load_external=False).model
    if chw is None:
        req.check_memory(image_input(model, str(fp32)).chw)
    if req.accuracy_data is not None:
        check_class_count(req.accuracy_data, True, class_count([dims_of(o) for o in model.graph.output]), option="--accuracy-data")


@contextmanager
def _peak_rss() -> Iterator[dict[str, float | None]]:
    """``{"mib": peak RSS growth}`` over the block: the kernel's high-water mark reset at the start (Linux
    ``clear_refs`` 5), read at the end, minus the RSS at the start. None where that cannot be read."""
    box: dict[str, float | None] = {"mib": None}

    def status(key: str) -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return float(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = status("VmRSS")
    except OSError:
        start = None
    yield box
    peak = status("VmHWM")
    if start is not None and peak is not None:
        box["mib"] = max(0.0, peak - start)


def _calibration(req: DeployRequest, spec: Any) -> tuple[np.ndarray, str]:
    if req.data is not None:
        images, info = load_image_folder_with_report(req.data, spec.chw, spec.mean, spec.std, limit=req.calibration_images)
        return images, f"{len(images)} image(s) from {req.data}"
    return sample_images(spec, req.calibration_images, None, seed=1), f"{req.calibration_images} generated natural-statistics image(s) (seed 1)"


def _artifact(req: DeployRequest, state: Path, fp32: Path, name: str, artifacts: dict[str, dict[str, Any]], subject: Subject | None = None) -> Path:
    """The file of artifact ``name`` (fp16, int8-cpu, int8-trt), made once per key (a mixed one judged against
    ``subject``'s reference).

    Raises:
        DeployincError: It cannot be made (the reason goes to every candidate that needs it).
    """
    if name == FP32:
        return fp32
    known = artifacts.get(name)
    if known is not None and known.get("error"):
        raise NoArtifact(known["error"], known["verdict"]) if known.get("verdict") else DeployincError(known["error"])
    path = state / f"{name}.onnx"
    info_path = state / f"{name}.json"
    if path.is_file() and info_path.is_file():
        artifacts[name] = {"path": str(path), **(_read_json(info_path) or {}), "reused": True}
        return path

    t = time.perf_counter()
    src = load_onnx(fp32).model
    spec = input_spec(src)
    info: dict[str, Any]
    try:
        if name == INT8_CPU_MIXED_BF16:
            info = _bf16_form(req, state, fp32, src, spec.name, path, artifacts, subject)
        elif name.endswith(f"-{QDQ}"):  # written beside its mixed artifact, by the same search
            base = name[: -len(QDQ) - 1]
            _artifact(req, state, fp32, base, artifacts, subject)
            if not path.is_file():  # a state from before the twin was written: remake the pair
                (state / f"{base}.json").unlink(missing_ok=True)
                artifacts.pop(base, None)
                _artifact(req, state, fp32, base, artifacts, subject)
            if not path.is_file():
                raise DeployincError(f"{base} was made but not its OpenVINO form {path.name}")
            info = _qdq_info(artifacts[base])
        elif name.endswith("-mixed"):
            info = _mixed(req, state, fp32, name, path, spec, subject)
        elif name == FP16:
            res = convert_to_fp16(src, keep_io_types=True, images=sample_images(spec, 8, req.data, seed=1), keep_overflow_fp32=True, threads=req.threads)
            save_onnx(res.model, path, force=True)
            info = {"made": "convert --precision fp16 (I/O kept fp32)", "kept_fp32_nodes": len(res.kept_fp32_nodes)}
        else:
            images, source = _calibration(req, spec)
            target = "cpu" if name.startswith(INT8_CPU) else "tensorrt"
            method = "minmax" if name.endswith("-minmax") else "percentile"
            recipe = recipe_for(target)
            res8 = quantize_int8(fp32, images, target=target, method=method, spec=spec, data_source={"calibration": source}, recipe=recipe)
            write_int8(res8, path, force=True)
            info = {"made": f"quantize --target {target} --method {method} ({recipe.describe()})", "calibration": source,
                    "recipe": recipe.to_dict()}  # fmt: skip
    except NoArtifact as exc:
        artifacts[name] = {"error": exc.message, "verdict": exc.verdict}
        raise
    except BackendUnavailable:
        raise  # the candidate is skipped with the reason, as verify would skip it
    except DeployincError as exc:
        artifacts[name] = {"error": f"{name} could not be made: {exc.message}"}
        raise DeployincError(artifacts[name]["error"]) from exc
    info["seconds"] = round(time.perf_counter() - t, 2)
    _write_json(info_path, info)
    artifacts[name] = {"path": str(path), **info}
    req.say(f"made {name} in {info['seconds']:.1f} s: {info['made']}")
    return path


def _oracle(req: DeployRequest, state: Path, fp32: Path, input_name: str, subject: Subject | None = None) -> fb.Oracle:
    """The judge of a layer-fallback search: verify's own inputs and eager-torch reference outputs for this deploy
    (its --samples, or the --accuracy-data images and their labels), computed once and kept with the state (read
    back through the one checked array reader)."""
    path = state / "oracle.npz"
    samples = fb.search_image_count(req.samples)  # the first set is verify's own (the generator's prefix)
    try:
        z = read_npz(path, "deploy's oracle", "it is remade")
        x, labels = z["input"], z.get("labels")
        ref = {k[len("ref/") :]: v for k, v in z.items() if k.startswith("ref/")}
        if not ref or (not req.accuracy_data and len(x) != samples):
            raise KeyError("ref")
    except (BadInputError, KeyError):
        vreq = VerifyRequest(model=fp32, providers=B.REFERENCE, samples=samples, data=req.accuracy_data, labels=bool(req.accuracy_data),
                             threads=req.threads, trust_model_code=req.trust_model_code)  # fmt: skip
        x, ref, labels, input_name = reference_run(vreq, subject)
        if labels is None:  # a static batch larger than the images makes verify repeat them: the images alone
            x, ref = x[:samples], {k: v[:samples] for k, v in ref.items()}
        arrays = {"input": x, **{f"ref/{k}": v for k, v in ref.items()}}
        if labels is not None:
            arrays["labels"] = np.asarray(labels)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue(), force=True)
    goal = fb.TaskGoal(np.asarray(labels), max_drop=req.max_accuracy_drop) if labels is not None else None
    return fb.Oracle(x, input_name, ref, preset(INT8, B.REFERENCE), goal=goal, threads=req.threads, set_size=req.samples)


def _bf16_form(req: DeployRequest, state: Path, fp32: Path, src: Any, input_name: str, path: Path, artifacts: dict[str, dict[str, Any]],
               subject: Subject | None) -> dict[str, Any]:  # fmt: skip
    """The mixed file's OpenVINO form made for its float layers in bf16 (:data:`INT8_CPU_MIXED_BF16`): its set was
    searched with those layers in fp32, keeping a tenth of the cosine budget in hand; bf16 adds its own error and may
    spend that margin, and a file at its preset's edge passes verify's 16 images by luck. So the file is judged in
    the form it ships in (that backend, its float layers in bf16), on the search's images by the search's tolerance,
    and where it misses the margin more layers of the search's ranking join its set until it holds
    (:func:`deployinc.precision.fallback.widen`); a widened file is also judged with its float layers in fp32 (what a
    server that cannot set the hint computes: Triton's OpenVINO accelerator). Where no widening within reach holds and
    the form with fp32 float layers misses the margin too (the backend's own int8 rounding, not bf16), or with
    ``--accuracy-data`` (the task rule, which verify applies), the file is kept as it is, and judged by verify alone
    as that candidate is. ``src``: the fp32 model (``fp32``'s, loaded), whose image input is ``input_name``.

    Raises:
        NoArtifact: No widening within reach keeps the margin where the fp32-float form does (``fail``), or the
            ``-qdq`` file itself is not made (its own verdict).
        BackendUnavailable: The backend cannot run here.
    """
    base = _artifact(req, state, fp32, INT8_CPU_MIXED_QDQ, artifacts, subject)
    info = {k: v for k, v in artifacts[INT8_CPU_MIXED_QDQ].items() if k not in ("path", "reused", "seconds")}
    model = load_onnx(base).model
    oracle = _oracle(req, state, fp32, input_name, subject)
    backend = B.names(lambda r: BF16 in r.float_precisions)[0]
    fallback = dict(info.get("fallback") or {})
    kept: dict[str, Any] = {"backend": backend, "float_precision": BF16, "added": []}
    if oracle.goal is None:
        if not fallback.get("ranking"):
            raise DeployincError(f"{INT8_CPU_MIXED_QDQ} carries no layer ranking to widen its set from (made by an older deployinc)")
        search, _ = fb.int8_search_oracles(oracle, req.samples)
        on = replace(search, backend=backend, float_precision=BF16)
        req.say(f"{INT8_CPU_MIXED_BF16}: judging {INT8_CPU_MIXED_QDQ} on {backend} with its float layers in {BF16} "
                f"({on.tolerance.name}, {on.describe()})")  # fmt: skip
        wide = fb.widen(model, fallback.get("float_nodes") or [], fallback.get("ranking") or [], on, fp32=src,
                        state=state / f"{INT8_CPU_MIXED_BF16}.search.json", state_key=sha256_file(base), say=req.say)  # fmt: skip
        kept.update(base_line=wide.base.line, line=wide.judgement.line, evaluations=wide.evaluations, images=len(on.inputs))
        if wide.passed and wide.added:
            model = wide.model
            rows = _added_rows(fallback, wide.added, src, model)
            kept["added"] = rows
            kept["fp32_float_layers"] = replace(on, float_precision=None).judge(model).line  # what a server without the hint runs
            fallback.update(float_nodes=list(fallback.get("float_nodes") or []) + wide.added, layers=list(fallback.get("layers") or []) + rows,
                            judgement=wide.judgement.to_dict(), judged_on=f"{backend} with its float layers in {BF16} (the set widened there)",
                            float_share=round(float(fallback.get("float_share") or 0) + sum(r["share"] for r in rows), 4))  # fmt: skip
            fb.stamp(model, INT8, fallback)
        elif not wide.passed:
            at_fp32 = replace(on, float_precision=None).judge(model)
            kept["fp32_float_layers"] = at_fp32.line
            if at_fp32.passed:  # bf16's own error spends the margin, and the next layers of the ranking do not restore it
                raise NoArtifact(f"its float layers in {BF16} spend the margin the layer search kept (it holds with fp32 float layers), and "
                                 f"{len(wide.added)} more layer(s) in float do not restore it: {wide.judgement.line}", "fail")  # fmt: skip
            kept["note"] = (f"with fp32 float layers too this file misses the layer search's margin on {backend}, so {BF16} is not what "
                            "spends it: kept as it is, and judged by verify alone, as that candidate is")  # fmt: skip
    else:
        kept["note"] = "judged on the task (--accuracy-data) by verify, as every candidate is: the set is kept as it is"
    save_onnx(model, path, force=True)
    info.update(fallback=fallback, float_form=kept)
    if kept["added"]:
        info["made"] += f"; {len(kept['added'])} more layer(s) in float to keep the search's margin with {BF16} float layers on {backend}"
    return info


def _added_rows(fallback: dict[str, Any], added: list[str], fp32: Any, widened: Any) -> list[dict[str, Any]]:
    """The fallback record's rows of the layers :func:`_bf16_form` added: module (named in the fp32 model ``fp32``,
    whose weights keep their module's name), gain alone in float (the search's ranking), share of the multiply-adds of
    the layers the search could keep in float (those ``widened`` still runs in int8, and its float ones), as the search's."""
    costs = fb.layer_costs(fp32)
    total = sum(costs.get(n, 0) for n in set(fb.layer_candidates(widened)) | set(fallback.get("float_nodes") or []) | set(added)) or 1
    gains = {r.get("node"): r.get("gain") for r in fallback.get("ranking") or []}
    return [{"node": n, "module": fb.module_label(fp32, n), "gain": gains.get(n), "alone": None, "share": round(costs.get(n, 0) / total, 4),
             "for": BF16} for n in added]  # fmt: skip


def _mixed(req: DeployRequest, state: Path, fp32: Path, name: str, path: Path, spec: Any, subject: Subject | None = None) -> dict[str, Any]:
    """The int8 model with the fewest layers kept in float that pass (see :mod:`deployinc.precision.fallback`).

    Raises:
        NoArtifact: The whole-model int8 passes (not needed), or no set of float layers passes.
    """
    images, source = _calibration(req, spec)
    oracle, plain = _oracle(req, state, fp32, spec.name, subject), None
    if oracle.goal is None:  # the search's judge, and the verdict's own (verify's images by the preset)
        oracle, plain = fb.int8_search_oracles(oracle, req.samples)
    req.say(f"{name}: searching the layers to keep in float (judged by {'the task rule' if oracle.goal else oracle.tolerance.name} "
            f"on {oracle.describe()} against eager torch fp32)")  # fmt: skip
    recipe = recipe_for("cpu")
    res, found = fb.int8_with_fallback(fp32, images, oracle, method="percentile", target="cpu", recipe=recipe, spec=spec,
                                       data_source={"calibration": source}, state=state / f"{name}.search.json",
                                       state_key=sha256_file(fp32), say=req.say, twin=True, whole_enough=plain)  # fmt: skip
    if found.whole.passed:
        raise NoArtifact(f"not needed: the whole-model int8 passes ({found.whole.line})", "skipped")
    if not found.passed:
        raise NoArtifact(f"no set of float layers passes: {found.judgement.line}", "fail")
    write_int8(res, path, force=True)
    if found.qdq_model is not None:  # before this artifact's record: a run killed in between remakes both
        save_onnx(found.qdq_model, path.with_name(f"{name}-{QDQ}.onnx"), force=True)
    twin = fb.twin_record(found)

    def made(n: int) -> str:
        return f"quantize --target cpu --method percentile ({recipe.describe()}) + layer fallback: {n} layer(s) in float"

    return {"made": made(len(found.float_nodes)), "calibration": source, "recipe": recipe.to_dict(), "fallback": found.record(),
            "qdq_fallback": twin, "qdq_made": made(len(twin["float_nodes"]))}  # fmt: skip


def _qdq_info(mixed: dict[str, Any]) -> dict[str, Any]:
    """The record of a mixed artifact's ``-qdq`` twin: the layers the ORT form carries into float keep their int8
    weights here, so a runtime that runs them in int8 (OpenVINO) computes only the chosen ones in float; the chosen
    set is the search's cheapest passing one by that measure (``qdq_fallback``, made as ``qdq_made`` says; without
    them, the ORT form's own set)."""
    info = {k: v for k, v in mixed.items() if k not in ("path", "reused", "seconds", "qdq_fallback", "qdq_made")}
    own = mixed.get("qdq_fallback") or (fb.chosen_only(mixed["fallback"]) if mixed.get("fallback") else None)
    if own:
        info["fallback"] = own
    info["made"] = f"{mixed.get('qdq_made') or mixed.get('made', '')}; carried-along layers' weights left int8 (behind DequantizeLinear)"
    return info


def _timing(rows: list[Any], batches: list[int], backend: str | None = None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Per batch size: p50 / p99 (ms) and images/s of the ok rows (end to end where there is a choice)."""
    out: dict[str, dict[str, Any]] = {}
    problem = None
    for b in batches:
        rows_b = [r for r in rows if r.batch == b and (backend is None or r.backend == backend)]
        ok = [r for r in rows_b if r.status == "ok" and r.stats is not None]
        pick = next((r for r in ok if r.mode == "e2e"), ok[0] if ok else None)
        if pick is None:
            bad = next((r for r in rows if r.status != "ok" and (backend is None or r.backend == backend)), None)
            problem = bad.reason if bad is not None else "no timing"
            continue
        st = pick.stats
        # images/s at the median latency: the mean (bench's throughput) carries the first iterations' outliers
        out[str(b)] = {"p50_ms": st.p50, "p99_ms": st.p99, "min_ms": st.min, "images_per_s": b * 1000.0 / st.p50 if st.p50 > 0 else None,
                       "mean_images_per_s": st.throughput, "mode": pick.mode, "iters": st.iters,
                       "unsteady": pick.unsteady_reasons()}  # fmt: skip
    return out, problem


def _baseline(req: DeployRequest, state: Path, fp32: Path, target: str, reused: list[str], subject: Subject | None = None) -> dict[str, Any]:
    """Eager torch (plain, fused, torch.compile) on the target's device, timed like every candidate (the model:
    ``subject``'s torch reference)."""
    path = state / "results" / "baseline.json"
    cached = _read_json(path)
    if cached is not None:
        reused.append("baseline")
        return cached

    names = B.eager_baseline(req.torch_compile)
    device = "cuda" if target in ("cuda", "tensorrt") else "cpu"
    req.say(f"timing the eager baseline: {', '.join(names)} on {device}" + (" (torch.compile takes a while the first time)" if req.torch_compile else ""))
    s = BenchSettings(backends=names, batches=list(req.batches), precisions=[FP32], warmup=req.warmup, iters=req.iters, threads=req.threads, device=device)
    s.validate()
    model = open_onnx(fp32, trust_code=req.trust_model_code)
    if subject is not None:
        model.use_subject(subject)
    rep = benchmark_steady(model, s, log=lambda _m: None)  # an unsteady row: measured again once
    data: dict[str, Any] = {"rows": {}, "environment": rep.environment, "finished": time.time()}  # wall clock: a cache stamp
    for name in names:
        timing, problem = _timing(rep.rows, list(req.batches), name)
        data["rows"][name] = {"timing": timing, "problem": problem}
    _write_json(path, data)
    return data


def _metrics(vr: Any, backend: str) -> dict[str, Any]:
    """Worst max_rel, cosine and top-1 agreement over the batches and outputs, and the accuracy rows."""
    m: dict[str, Any] = {"max_rel": None, "cosine": None, "top1_agreement": None, "nonfinite": 0}
    for b in vr.backends:
        for r in b.results:
            for c in r.outputs:
                m["nonfinite"] += int(c.nan + c.inf)
                m["max_rel"] = c.max_rel if m["max_rel"] is None else max(m["max_rel"], c.max_rel)
                m["cosine"] = c.cosine if m["cosine"] is None else min(m["cosine"], c.cosine)
                agree = c.top1_raw if c.top1_raw is not None else c.top1  # plain arg-max agreement (the verdict's is tie-aware)
                if agree is not None:
                    m["top1_agreement"] = agree if m["top1_agreement"] is None else min(m["top1_agreement"], agree)
        if b.tolerance is not None:
            m["preset"] = b.tolerance.name
            m["budget"] = b.tolerance.describe() if hasattr(b.tolerance, "describe") else str(b.tolerance)
    if vr.accuracy is not None:
        rows = vr.accuracy.rows
        m["accuracy_images"] = vr.accuracy.images
        m["top1_reference"] = rows.get("reference", {}).get("top1")
        mine = [v["top1"] for k, v in rows.items() if k != "reference"]
        m["top1_accuracy"] = min(mine) if mine else None
    return m


def _verify(req: DeployRequest, path: Path, cand: Candidate, subject: Subject | None = None, seed: int = 0) -> dict[str, Any]:
    threads = cand.options.get("threads", req.threads)
    vreq = VerifyRequest(
        model=path, providers=cand.backend, precision=cand.precision, samples=req.samples, threads=threads,
        data=req.accuracy_data, labels=bool(req.accuracy_data), trust_model_code=req.trust_model_code, seed=seed,
        float_precision=cand.options.get("float"),
    )  # fmt: skip
    vr = verify_run(vreq, subject)
    out: dict[str, Any] = {"metrics": _metrics(vr, cand.backend), "failures": vr.failures()[:8], "verify_seconds": round(sum(vr.timings.values()), 2)}
    skipped = [b for b in vr.backends if b.status == "skipped"]
    if skipped:
        out["verdict"], out["reason"] = "skipped", skipped[0].reason
    else:
        out["verdict"] = vr.verdict.lower()  # pass, fail or inconclusive (a skipped backend is handled above)
        if vr.inconclusive:
            out["reason"] = vr.inconclusive[0]
        else:
            _judge_rule(req, cand, out)
    if vr.localization is not None:
        summary = vr.localization.to_dict().get("summary")
        if summary:
            out["localization"] = summary
    out["inputs"] = {k: vr.inputs.get(k) for k in ("source", "samples", "folder", "kind") if k in vr.inputs}
    return out


def _judge_rule(req: DeployRequest, cand: Candidate, out: dict[str, Any]) -> None:
    """Which rule decides: with labelled images (``--accuracy-data``) a lower-precision candidate is judged on the
    task (accuracy drop against fp32, top-1 agreement, no NaN/Inf: :func:`deployinc.core.metrics.task_failures`),
    its preset's cosine and max_rel reported beside it; fp32 candidates, and every candidate without labels, by
    their precision's preset."""
    m = out["metrics"]
    if not req.accuracy_data or cand.precision == FP32:
        out["rule"] = f"preset {m.get('preset', cand.precision)}"
        return
    fails = task_failures(m.get("nonfinite", 0), m.get("top1_reference"), m.get("top1_accuracy"), m.get("top1_agreement"), req.max_accuracy_drop)
    out["rule"] = f"task: accuracy drop <= {req.max_accuracy_drop:g} point(s), top-1 agreement >= 0.99 (the {m.get('preset', cand.precision)} preset reported, not judged)"
    other = [f for f in out.get("failures", []) if " batch " not in f]  # a crash or a failed check: not the rule's to lift
    if out["verdict"] == "fail" and not fails and not other:
        out["preset_failures"] = out.get("failures", [])
        out["failures"] = []
    out["verdict"] = "fail" if (fails or other) else "pass"
    if fails:
        out["failures"] = fails + [f"(preset: {f})" for f in out.get("failures", [])][:4]


def _bench(req: DeployRequest, path: Path, cand: Candidate) -> dict[str, Any]:
    threads = cand.options.get("threads", req.threads)
    s = BenchSettings(
        backends=[cand.backend], batches=list(req.batches), precisions=[cand.precision], warmup=req.warmup, iters=req.iters,
        threads=threads, cuda_graph=bool(cand.options.get("cuda_graph")), float_precision=cand.options.get("float"),
    )  # fmt: skip
    s.validate()
    with _peak_rss() as mem:
        rep = benchmark_steady(open_onnx(path, trust_code=req.trust_model_code), s, log=lambda _m: None)  # an unsteady row: measured again once
    timing, problem = _timing(rep.rows, list(req.batches), cand.backend)
    out: dict[str, Any] = {"timing": timing, "peak_rss_mib": mem["mib"]}
    if problem and not timing:
        out["bench_problem"] = problem
    return out


def _candidate(
    req: DeployRequest, state: Path, fp32: Path, cand: Candidate, artifacts: dict[str, dict[str, Any]], progress: _Progress, i: int, reused: list[str],
    subject: Subject | None = None,
) -> dict[str, Any]:
    """One candidate's result: made, verified (against ``subject``'s reference), timed; read back when a previous run
    finished it."""
    path = state / "results" / f"{cand.id}.json"
    cached = _read_json(path)
    progress.start(i, cand, 3)
    if cached is not None:
        reused.append(cand.id)
        progress.done(f"{cached['verdict'].upper()} (reused from an earlier run)")
        return cached
    res: dict[str, Any] = {"id": cand.id, "precision": cand.precision, "backend": cand.backend, "artifact": cand.artifact, "options": cand.options}
    t = time.perf_counter()
    try:
        progress.step("making the artifact")
        art = _artifact(req, state, fp32, cand.artifact, artifacts, subject)
        progress.step("verifying")
        res.update(_verify(req, art, cand, subject))
        if res["verdict"] in ("pass", "fail", "inconclusive"):  # each row of the table has its time
            progress.step("timing")
            res.update(_bench(req, art, cand))
            if not res.get("timing"):
                res["verdict"], res["reason"] = "error", f"it did not time: {res.get('bench_problem', 'no timing')}"
    except BackendUnavailable as exc:
        res["verdict"], res["reason"] = "skipped", exc.message
    except NoArtifact as exc:
        res["verdict"], res["reason"] = exc.verdict, exc.message
    except BadInputError:
        raise  # the user's model, data or options, not this candidate: exit 2 (finished candidates stay cached)
    except DeployincError as exc:
        res["verdict"], res["reason"] = "error", exc.message
    res["seconds"] = round(time.perf_counter() - t, 2)
    res["finished"] = time.time()  # wall clock on purpose: the run-off's cache key compares it across processes
    _write_json(path, res)
    progress.done(_line(res, req))
    return res


def _line(res: dict[str, Any], req: DeployRequest) -> str:
    m = res.get("metrics") or {}
    bits = [res["verdict"].upper()]
    if m.get("cosine") is not None:
        bits.append(f"cos {m['cosine']:.6f}")
    if m.get("top1_agreement") is not None:
        bits.append(f"top-1 {m['top1_agreement']:.3f}")
    row = (res.get("timing") or {}).get(str(req.batches[0]))
    if row:
        bits.append(f"p50 {row['p50_ms']:.2f} ms at batch {req.batches[0]}")
    if res.get("reason"):
        bits.append(res["reason"])
    return ", ".join(bits) + f" ({res.get('seconds', 0):.0f} s)"


def _speedups(results: list[dict[str, Any]], baseline: dict[str, Any], req: DeployRequest) -> None:
    """Each candidate's p50 speedup over eager torch and over plain ORT CPU fp32, per batch size (same run). Where
    the run-off timed ORT CPU fp32 again, a candidate it timed too is compared with that timing (the same rounds),
    one it did not with ORT fp32's first timing."""
    torch_rows = (baseline.get("rows") or {}).get(B.BASELINE, {}).get("timing", {})
    plain = next((r for r in results if r["id"] == f"{FP32}-{B.REFERENCE}"), None)
    for r in results:
        sp: dict[str, dict[str, float | None]] = {}
        for b, row in (r.get("timing") or {}).items():
            t = torch_rows.get(b, {}).get("p50_ms")
            o = (reference_row(plain, r, b, req.batches[0]) or {}).get("p50_ms")
            sp[b] = {"vs_torch": (t / row["p50_ms"]) if t else None, "vs_ort_fp32": (o / row["p50_ms"]) if o else None}
        r["speedup"] = sp
