"""``deployinc verify``: prove an ONNX file computes what its PyTorch original computes, on every backend asked for.

Exit codes: 0 passed, 1 parity (or a check) failed, 2 bad input, 3 what ran passed but requested backends
could not run here (``--allow-skip`` makes that 0). Nothing heavy is imported at
module level (``deployinc --help`` lists this command without importing torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import backends as B
from ..errors import BadInputError, CheckFailed, IncompleteRun, OutputExistsError
from ..io import check_output_path
from ..core import limits
from .options import (
    batch_list_callback, check_onnx_input_memory, force_option, int_in, json_option, mean_callback, num_classes_callback,
    parse_batches, parse_floats, parse_shape, seed_callback, shape_callback, std_callback, threads_option, tolerance_callback,
    write_json_report,
)  # fmt: skip
from ..core.precisions import BF16, PRECISIONS


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--reference", default=None, help="Torch reference as package.module:function (or a registry name), for files without deployinc metadata.")
@click.option("--weights", default=None, help="Checkpoint for --reference (or the new path of the recorded checkpoint).")
@click.option("--against", type=click.Path(), default=None, help="Compare with another ONNX file (run on ORT CPU; no torch needed).")
@click.option("--providers", default="cpu", show_default=True, help="Comma-separated backends, the same names as bench --backends: " + B.names_help() + ".")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default=None, help="Tolerance preset (and TensorRT build precision; bf16: what " + B.compute_text(BF16) + " computes in); default: what the file holds.")
@click.option("--batch", "batch", default=None, callback=batch_list_callback, help="Batch sizes, comma-separated (default 1,8; a static batch runs at its size).")
@click.option("--samples", type=int, default=8, show_default=True, callback=int_in(1, limits.SAMPLES_MAX, "16"), help="Number of input samples (bounded by memory).")
@click.option("--data", type=click.Path(), default=None, help="Folder of images, resized and normalised as the metadata says.")
@click.option("--inputs", "inputs", default="natural", show_default=True, help="natural (seeded natural-image statistics), uniform, normal, or an .npy file of normalised N x C x H x W inputs.")
@click.option("--seed", type=int, default=0, show_default=True, callback=seed_callback, help=f"Seed of generated inputs, 0..{limits.SEED_MAX}.")
@click.option("--input-shape", default=None, callback=shape_callback, help="N,C,H,W, all four (must agree with the model's static dims).")
@click.option("--mean", default=None, callback=mean_callback, help="Normalisation mean, comma-separated (default: the metadata's).")
@click.option("--std", default=None, callback=std_callback, help="Normalisation std, comma-separated (default: the metadata's).")
@click.option("--num-classes", type=int, default=None, callback=num_classes_callback, help="Classes of the --reference model (default: the file's output size).")
@click.option("--max-rel", type=float, default=None, callback=tolerance_callback("max_rel"), help="Budget: max |error| / max |reference| per output (>= 0).")
@click.option("--max-abs", type=float, default=None, callback=tolerance_callback("max_abs"), help="Budget: max |error| per output (>= 0).")
@click.option("--min-cosine", type=float, default=None, callback=tolerance_callback("min_cosine"), help="Budget: smallest per-sample cosine similarity (-1..1).")
@click.option("--min-top1", type=float, default=None, callback=tolerance_callback("min_top1"), help="Budget: top-1 agreement (0..1).")
@click.option("--min-top5", type=float, default=None, callback=tolerance_callback("min_top5"), help="Budget: reference top-1 within the model's top-5 (0..1).")
@click.option("--labels", default=None, is_flag=False, flag_value="folders", help="With --data in ImageFolder layout: report top-1/top-5 accuracy over every image (classes from sorted sub-folder names, or --labels FILE: one class name per line).")
@click.option("--save-inputs", type=click.Path(dir_okay=False), default=None, help="Write the normalised inputs to this .npz (replay them with --inputs FILE.npz).")
@click.option("--save-outputs", type=click.Path(dir_okay=False), default=None, help="Write inputs, reference outputs and every backend's outputs to this .npz.")
@click.option("--load-outputs", type=click.Path(dir_okay=False), default=None, help="Replay a --save-outputs file: its inputs and reference outputs, no torch needed.")
@click.option("--allow-skip", is_flag=True, help="Exit 0 when what ran passed even if requested backends could not run here (default: exit 3).")
@click.option("--localize/--no-localize", default=None, help="Find the first departing layer (default: when parity fails).")
@click.option("--localize-method", type=click.Choice(["auto", "all", "bisect"]), default="auto", show_default=True, help="all intermediates at once, or bisection over truncated graphs (auto: bisection on TensorRT).")
@click.option("--no-cache", is_flag=True, help="Rebuild random-weight references without the BatchNorm-statistics cache.")
@click.option("--isolate/--no-isolate", default=None, help="Run each ONNX backend in its own subprocess, so a native crash or hang is that backend failing (default: GPU backends, and every backend for files deployinc did not write). An isolated backend is stopped after --timeout: 300 s by default, 1800 s for ort-trt and trt-engine.")
@click.option("--trust-model-code", is_flag=True, help="Rebuild a package.module:function reference recorded in the file (imports and runs that code). Without it, name the spec yourself with --reference.")
@click.option("--timeout", type=float, default=None, help="Seconds one backend may take; past it the backend is stopped and fails (runs every ONNX backend in its own process). Default for a backend in its own process (--isolate): 300 s, 1800 s for ort-trt and trt-engine (engine builds).")
@click.option("--no-fp64-floor", is_flag=True, help="Judge fp32 by the preset alone, without measuring torch's own float32 error (a float64 run of the reference).")
@click.option("--file-tolerances", is_flag=True, help="Honour budgets recorded in the file even where looser than the preset (by default only stricter ones apply).")
@json_option
@threads_option
@force_option
def verify(
    model: str,
    reference: str | None,
    weights: str | None,
    against: str | None,
    providers: str,
    precision: str | None,
    batch: str | None,
    samples: int,
    data: str | None,
    inputs: str,
    seed: int,
    input_shape: str | None,
    mean: str | None,
    std: str | None,
    num_classes: int | None,
    max_rel: float | None,
    max_abs: float | None,
    min_cosine: float | None,
    min_top1: float | None,
    min_top5: float | None,
    labels: str | None,
    save_inputs: str | None,
    save_outputs: str | None,
    load_outputs: str | None,
    allow_skip: bool,
    localize: bool | None,
    localize_method: str,
    no_cache: bool,
    isolate: bool | None,
    timeout: float | None,
    no_fp64_floor: bool,
    trust_model_code: bool,
    file_tolerances: bool,
    json_path: str | None,
    threads: int | None,
    force: bool,
) -> None:
    """Verify MODEL (an .onnx file) against the model it was exported from.

    \b
      deployinc verify googlenet.onnx                      # reference rebuilt from the file's metadata
      deployinc verify model.onnx --reference mypkg.nets:build --weights ckpt.pt
      deployinc verify a.onnx --against b.onnx             # two ONNX files, no torch needed
      deployinc verify googlenet.onnx --providers cpu,cuda,tensorrt --precision fp16 --batch 1,8 --data images/ --json report.json
      deployinc verify googlenet.onnx --localize           # the first layer where it departs, by torch module name
      deployinc verify googlenet.onnx --providers ort-openvino --precision bf16   # OpenVINO computing in bf16
    """
    # lazy: verify imports numpy and the runners; keeps them out of deployinc --help
    from ..verify import backends as verify_backends, core as verify_core, report as verify_report

    # Cheap checks first, so bad flags fail in milliseconds, not after the reference is built.
    verify_backends.parse_providers(providers)
    _check_outputs_and_data(json_path, save_inputs, save_outputs, data, force)
    batches = parse_batches(batch) if batch is not None else None
    shape = parse_shape(input_shape)
    check_onnx_input_memory(  # a run holds max(samples, largest batch) inputs
        model, [("--samples", samples, samples), ("--batch", batch, max(batches or [1]))], chw=shape[1:] if shape else None
    )
    tolerance = {"max_rel": max_rel, "max_abs": max_abs, "min_cosine": min_cosine, "min_top1": min_top1, "min_top5": min_top5}

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    report = verify_core.verify(
        model,
        reference=reference,
        weights=weights,
        against=against,
        providers=providers,
        precision=precision,
        batches=batches,
        samples=samples,
        data=data,
        inputs=inputs,
        seed=seed,
        input_shape=shape,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std", positive=True),
        num_classes=num_classes,
        tolerance=tolerance,
        localize=localize,
        localize_method=localize_method,
        threads=threads,
        use_cache=not no_cache,
        isolate=isolate,
        trust_model_code=trust_model_code,
        file_tolerances=file_tolerances,
        fp64_floor=not no_fp64_floor,
        timeout=timeout,
        labels=labels or False,
        save_inputs=save_inputs,
        save_outputs=save_outputs,
        load_outputs=load_outputs,
        allow_skip=allow_skip,
        force=force,
        log=log,
    )
    click.echo(verify_report.render(report))
    if json_path is not None:
        write_json_report(json_path, report.to_dict(), force)
        click.echo(f"wrote {json_path}", err=True)
    _exit_for(report)


def _check_outputs_and_data(json_path: str | None, save_inputs: str | None, save_outputs: str | None, data: str | None, force: bool) -> None:
    """Every file verify will write may be written, and --data is a folder: before any work."""
    if json_path is not None:
        if Path(json_path).exists() and not Path(json_path).is_dir() and not force:
            raise OutputExistsError(f"--json {json_path} exists", hint="pass --force to overwrite it, or give another --json path")
        check_output_path(json_path, force)
    for out in (save_inputs, save_outputs):
        if out is not None:
            check_output_path(out, force)
    if data is not None and not Path(data).is_dir():
        raise BadInputError(
            f"--data {data} is not a folder" if Path(data).exists() else f"data folder {data} does not exist",
            hint="give a folder of image files",
        )


def _exit_for(report: object) -> None:
    """Exit 1 when parity failed (with the first departing layer in the hint), 3 when requested backends did not
    run, else return (exit 0)."""
    rep: Any = report
    if not rep.passed:
        fails = rep.failures()
        shown = "; ".join(fails[:3]) + (f"; and {len(fails) - 3} more" if len(fails) > 3 else "")
        loc = rep.localization
        if loc is not None and loc.first is not None:
            hint = f"the first departing layer is {loc.first.label} (see the localisation above)"
        elif loc is None:
            hint = "run again with --localize to find the first departing layer"
        else:
            hint = "see the localisation above"
        raise CheckFailed(f"parity failed: {shown}", hint=hint)
    if rep.inconclusive:
        raise IncompleteRun(
            f"what ran passed, but it proves nothing: {rep.inconclusive[0]}",
            hint="a model whose output ignores its input cannot be checked this way: export it from trained weights "
            "(deployinc export MODEL --weights CHECKPOINT) and verify that file",
        )
    if not rep.complete:
        skipped = "; ".join(f"{b.name} ({b.reason})" for b in rep.skipped)
        raise IncompleteRun(
            f"what ran passed, but {len(rep.skipped)} requested backend(s) did not run: {skipped}",
            hint="run where they can (a GPU, their libraries), drop them from --providers, or pass --allow-skip",
        )
