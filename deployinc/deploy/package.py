"""The package folder deploy writes: the chosen model, the evidence, and a Triton model repository.

    <name>.deploy/
      model.onnx                 the chosen artifact (run it as report.md says: backend, precision, options)
      variants/<candidate>.onnx  the other passing artifacts (--keep-variants)
      report.md                  one table of every candidate, the choice and why, where the numbers come from
      latency.png                p50 latency (and images/s) of every candidate and the eager baseline
      report.json                every number
      environment.json           the machine and versions the numbers come from
      triton/<name>/config.pbtxt + triton/<name>/1/model.onnx
      manifest.json              sha256 and size of every other file

It is built in a private working folder next to the destination and moved in by one rename when complete; an
existing package is replaced (with ``--force`` only) by renaming it aside first and removing it after the new one
is in place, so at every moment the destination holds a whole package or nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import onnx

from .. import backends as B
from ..errors import BadInputError
from ..io import copy_onnx, sha256_file
from ..io.atomic import work_dir
from .report import render_markdown, report_dict, write_plot
from .request import MANIFEST
from .triton import io_specs, triton_config, validate, write_repository

def accelerator_for(chosen: dict[str, Any]) -> dict[str, str] | None:
    """The Triton execution-accelerator block of the chosen candidate (None: the plain provider): its backend
    record's."""
    return B.get(chosen["backend"]).accelerator(chosen["precision"])


def preferred_batches(chosen: dict[str, Any]) -> list[int]:
    """Batch sizes of the chosen candidate within 90% of its best images/s (Triton's preferred batch sizes)."""
    timing = chosen.get("timing") or {}
    rates = {int(b): r["images_per_s"] for b, r in timing.items() if r and r.get("images_per_s")}
    if not rates:
        return []
    best = max(rates.values())
    return sorted(b for b, v in rates.items() if v >= 0.9 * best)


def precision_notes(chosen: dict[str, Any], artifact: dict[str, Any]) -> list[str]:
    """config.pbtxt's comment lines on the model's precision: the int8 recipe and the layers kept in float."""
    out = [f"precision: {chosen['precision']} on {chosen['backend']}"]
    recipe = artifact.get("recipe")
    if recipe:
        out[0] += f" (int8 recipe {recipe.get('name')}, for the CPU int8 path {recipe.get('cpu_path')})"
    floats = (chosen.get("options") or {}).get("float")
    form = artifact.get("float_form") or {}
    if floats and form.get("added"):
        out.append(f"its float layers computed in {floats} (OpenVINO's INFERENCE_PRECISION_HINT {floats}); with them in fp32 "
                   f"(a server without the hint) it was judged on the layer search's images: {form.get('fp32_float_layers', 'not judged')}")  # fmt: skip
    elif floats:
        out.append(f"its float layers computed in {floats} (OpenVINO's INFERENCE_PRECISION_HINT {floats}); "
                   f"a server that runs them in fp32 computes what the candidate without it did")  # fmt: skip
    layers = (artifact.get("fallback") or {}).get("layers") or []
    if layers:
        out.append(f"kept in float ({len(layers)} layers): " + ", ".join(str(x.get("module")) for x in layers))
        also = (artifact.get("fallback") or {}).get("also_float") or []
        if also:
            out.append("computed in float with them: " + ", ".join(str(x.get("module")) for x in also))
    return out


def timing_notes(chosen: dict[str, Any], max_batch_size: int) -> list[str]:
    """config.pbtxt's comment line on what deploy timed: the batch sizes and their p50, and the larger batches the
    dynamic batcher may form that nobody timed (empty when every batch up to ``max_batch_size`` was timed)."""
    timed = {int(b): r["p50_ms"] for b, r in (chosen.get("timing") or {}).items() if r and r.get("p50_ms")}
    if not timed:
        return []
    sizes = ", ".join(f"batch {b}: p50 {timed[b]:.2f} ms" for b in sorted(timed))
    line = f"deploy timed it on {chosen['backend']} at {sizes}"
    if max_batch_size > max(timed):
        line += (f"; the dynamic batcher below may form batches up to {max_batch_size}, which were not timed "
                 f"(deploy --batch 1,{max_batch_size} times them)")  # fmt: skip
    return [line]


def triton_text(name: str, model_path: Path, chosen: dict[str, Any], batches: list[int], notes: Sequence[str] = ()) -> str:
    """config.pbtxt for the chosen candidate: max_batch_size from the dynamic batch (the largest benchmarked size,
    at least 8), preferred sizes from the benchmark, instance group for the target, and its accelerator; its
    comment lines are ``notes`` and what deploy timed."""
    model = onnx.load(str(model_path), load_external_data=False)
    largest = max([*batches, 8])
    if io_specs(model)[2]:
        notes = [*notes, *timing_notes(chosen, largest)]
    return triton_config(
        name, model, max_batch_size=largest, preferred_batch_sizes=preferred_batches(chosen),
        kind="gpu" if chosen["backend"] in B.GPU_BACKENDS else "cpu", accelerator=accelerator_for(chosen), notes=notes,
    )  # fmt: skip


def _build(pkg: Path, result: Any) -> None:
    req, chosen = result.request, result.chosen
    name = req.model_name()
    chosen_path = Path(result.artifacts[chosen["artifact"]]["path"])
    copy_onnx(chosen_path, pkg / "model.onnx")
    if req.keep_variants:
        done = {chosen["artifact"]}
        for r in result.results:
            if r.get("verdict") == "pass" and r["artifact"] not in done and r["artifact"] in result.artifacts:
                copy_onnx(Path(result.artifacts[r["artifact"]]["path"]), pkg / "variants" / f"{r['artifact']}.onnx")
                done.add(r["artifact"])
    text = triton_text(name, chosen_path, chosen, list(req.batches), precision_notes(chosen, result.artifacts[chosen["artifact"]]))
    problem = validate(text)
    write_repository(pkg / "triton", name, chosen_path, text)
    data = report_dict(result, triton_checked=problem)
    plot = write_plot(result, pkg / "latency.png")
    (pkg / "report.json").write_text(json.dumps(data, indent=1, default=str))
    (pkg / "environment.json").write_text(json.dumps(result.baseline.get("environment", {}), indent=1, default=str))
    (pkg / "report.md").write_text(render_markdown(result, data, plot_name=plot.name if plot else None, triton_checked=problem))
    files = sorted(p for p in pkg.rglob("*") if p.is_file())
    manifest = {
        "package": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {str(p.relative_to(pkg)): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files},
    }  # fmt: skip
    (pkg / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _place(pkg: Path, target: Path, work: Path, force: bool) -> None:
    """Move the finished package to ``target``; an existing one (``force``) is renamed aside, then removed."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        if not force:
            raise BadInputError(f"{target} already exists", hint="give --force to replace it")
        old = work / "old"
        try:
            os.rename(target, old)
        except OSError as exc:
            raise BadInputError(f"cannot move the old package at {target} aside: {exc.strerror}", hint="choose another --out") from exc
    try:
        os.rename(pkg, target)
    except OSError as exc:
        if old is not None:
            os.rename(old, target)
        raise BadInputError(f"cannot put the package at {target}: {exc.strerror}", hint="choose another --out") from exc


def write_package(result: Any) -> Path:
    """Build the package of ``result`` (a :class:`~deployinc.deploy.run.DeployResult` with a choice) and put it in
    place; returns its path."""
    req = result.request
    target = req.package_path()
    req.check_package()  # again: something may have appeared there while the candidates ran
    with work_dir(target) as work:
        pkg = work / "pkg"
        pkg.mkdir()
        _build(pkg, result)
        _place(pkg, target, work, req.force)
    return target
