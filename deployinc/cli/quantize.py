"""``deployinc quantize``: int8 static quantization (QDQ, per-channel weights) calibrated on a folder of images.

Writes the quantized model and, beside it, ``<name>.calibration.json`` with the per-tensor ranges and the
scales/zero points the model ended up with. Exit codes: 0 written, 1 a failed check, 2 bad input (an empty folder,
fewer images than the method needs, an existing output without --force).
"""

from __future__ import annotations

from pathlib import Path

import click

from .convert import default_out
from ..core import limits
from ..core.precisions import INT8
from ..errors import BadInputError, CheckFailed
from ..io import check_output_path, load_onnx
from . import groups as G
from .options import float_in, int_in, parse_floats


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@G.calibration_data("Folder of calibration images (searched recursively).", required=True)
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile", "mse"], case_sensitive=False), default="minmax", show_default=True,
              help="Calibration method (mse: each tensor's range of least expected squared error on the images).")
@click.option("--target", type=click.Choice(["auto", "tensorrt", "cpu"]), default="auto", show_default=True, help="auto: tensorrt when an NVIDIA GPU and TensorRT are usable here, else cpu (the choice and why are printed). tensorrt: symmetric int8 activations (TensorRT needs them; ORT CPU runs them, slower than fp32). cpu: uint8 activations, fastest on ORT CPU, refused by TensorRT.")
@G.out("Output .onnx (default: <model>.int8.onnx beside the input).")
@click.option("--limit", type=int, default=None, callback=int_in(1, None, "500"), help="Use at most this many images (>= 1).")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--no-preprocess", is_flag=True, help="Skip ONNX Runtime's quant_pre_process.")
@click.option("--exclude-node", "exclude_nodes", multiple=True, help="Node name to leave in float (repeatable).")
@click.option("--keep-fp32-before", default=None, help="Leave every node before this node (graph order) in float: e.g. a network's stem.")
@click.option("--percentile", type=float, default=99.999, show_default=True, callback=float_in(0, 100, lo_open=True, example="99.999"), help="Percentile for --method percentile.")
@G.mean("Normalisation mean, comma-separated (default: the model's metadata, else ImageNet's).")
@G.std("Normalisation std, comma-separated (each > 0).")
@G.no_check("Skip the int8-vs-fp32 comparison on ORT CPU.")
@click.option("--recipe", default="auto", show_default=True, help="auto: the QDQ types for this CPU's int8 path (u8s8 where it multiplies without saturation: VNNI, AMX, ARM dot product; u8s8 with 7-bit weights, reduce_range, on AVX2/AVX-512 without VNNI); or u8s8, u8s8-reduce-range, s8s8 to measure the alternatives. --target tensorrt is always s8s8.")
@click.option("--weight-rounding", default="gptq", show_default=True, help="gptq: each layer's int8 weights rounded, on the quantizer's own scales, to move its output least on the calibration images (GPTQ; what makes int8 pass where nearest rounding does not); nearest: ONNX Runtime's round-to-nearest.")
@G.fallback("none", "auto: keep in float the fewest layers that make the int8 model pass the int8 preset against the fp32 model on ORT CPU (a bounded search, the one deploy runs: generated images in sets of --samples, at least 96, each set on its own, with a tenth of the cosine budget in hand); none: every layer int8.")
@G.samples(16, example="16", help="With --fallback auto: the generated verification images of one set (verify's images; the search judges more sets of as many, not the calibration images).")
@G.force()
def quantize(
    model: str,
    data: str,
    method: str,
    target: str,
    out: str | None,
    limit: int | None,
    per_tensor: bool,
    no_preprocess: bool,
    exclude_nodes: tuple[str, ...],
    keep_fp32_before: str | None,
    percentile: float,
    mean: str | None,
    std: str | None,
    no_check: bool,
    recipe: str,
    weight_rounding: str,
    fallback: str,
    samples: int,
    force: bool,
) -> None:
    """Quantize MODEL to int8 (QDQ) with ONNX Runtime, calibrated on the images in --data.

    Then compares the int8 model with MODEL on ONNX Runtime CPU over (up to 64 of) the calibration images:
    cosine, top-1 agreement and max_rel, PASS/FAIL against the int8 preset (a FAIL is a warning, not an exit code;
    deployinc verify judges it on held-out data).

    \b
      deployinc quantize resnet50.onnx --data calib/ --method percentile
      deployinc quantize model.onnx --data calib/ --target cpu --keep-fp32-before /layer2/layer2.0/conv1/Conv
      deployinc quantize resnet50.onnx --data calib/ --fallback auto
    """
    from ..core import images as core_images  # lazy: core.images imports numpy; keeps it out of deployinc --help
    from ..precision import fallback as fb, int8 as int8_mod, recipe as recipes  # lazy: precision imports numpy; keeps it out of deployinc --help
    from ..subject import inputs  # lazy: the image input imports numpy; keeps it out of deployinc --help

    method = method.lower()
    if limit is not None:
        limits.check_int("--limit", limit, 1, None, example="--limit 500")
    limits.check_float("--percentile", percentile, 0, 100, lo_open=True, example="--percentile 99.999")
    target_path = Path(out) if out else default_out(model, INT8)
    check_output_path(target_path, force)
    check_output_path(int8_mod.report_path_for(target_path), force)
    fallback, recipe, weight_rounding = fallback.strip().lower(), recipe.strip().lower(), weight_rounding.strip().lower()
    int8_mod.check_rounding(weight_rounding)
    src_model = load_onnx(model, load_external=False).model
    fb.check_fallback(fallback, INT8, src_model)
    chosen_recipe = None if recipe == "auto" else recipes.recipe_named(recipe)
    spec = inputs.input_spec(src_model, parse_floats(mean, "--mean"), parse_floats(std, "--std", positive=True))
    images, info = core_images.load_image_folder_with_report(data, spec.chw, spec.mean, spec.std, limit=limit)
    skipped = info.get("skipped") or []
    if skipped:
        click.echo(f"warning: {len(skipped)} unreadable file(s) in {data} skipped (first: {skipped[0]})", err=True)
    int8_mod.check_image_count(len(images), method)  # raises before any work when there are too few
    target, note, warning = int8_mod.choose_target(target)
    if chosen_recipe is None:
        chosen_recipe = recipes.recipe_for(target, per_channel=not per_tensor)
    elif target == "tensorrt" and not chosen_recipe.symmetric_activations:
        raise BadInputError(f"--recipe {recipe} has asymmetric activations, which TensorRT refuses", hint="use --recipe s8s8 (or auto) with --target tensorrt")
    if note:
        click.echo(note)
    click.echo(f"int8 recipe {chosen_recipe.describe()}; this CPU's int8 path: {chosen_recipe.cpu_path} ({chosen_recipe.reason})")
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"calibrating {method} on {len(images)} image(s) from {data} ({'x'.join(map(str, spec.chw))}, target {target})")
    if fallback == "auto":
        _quantize_with_fallback(model, src_model, images, spec, method, target, chosen_recipe, weight_rounding, samples, target_path, force,
                                {"folder": str(data), "images": int(info.get("used", len(images))), "skipped": len(skipped)})  # fmt: skip
        return
    result = int8_mod.quantize_int8(
        model,
        images,
        recipe=chosen_recipe,
        method=method,
        target=target,
        per_channel=not per_tensor,
        preprocess=not no_preprocess,
        exclude_nodes=exclude_nodes,
        keep_fp32_before=keep_fp32_before,
        percentile=percentile,
        weight_rounding=weight_rounding,
        spec=spec,
        data_source={"folder": str(data), "images": int(info.get("used", len(images))), "skipped": len(skipped)},
    )
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    rep = result.report
    quantized = sum(1 for t in rep["tensors"].values() if t.get("quantized"))
    click.echo(
        f"{rep['op_counts'].get('QuantizeLinear', 0)} QuantizeLinear / {rep['op_counts'].get('DequantizeLinear', 0)} "
        f"DequantizeLinear nodes; {quantized} of {len(rep['tensors'])} calibrated tensors quantized; "
        f"activations {rep['activation_type']}, weights {rep['weight_type']}, "
        f"{'per-channel' if rep['per_channel'] else 'per-tensor'}"
    )
    if not no_check:
        comps, line = int8_mod.compare_with_fp32(model, result.model, images, spec)
        n = comps[0].shape[0] if comps and comps[0].shape else min(len(images), int8_mod.COMPARE_IMAGES)
        click.echo(f"int8 vs fp32 on ORT CPU ({n} of the {len(images)} calibration image(s)): {line}")
        rep["fp32_comparison"] = {"images": n, "passed": all(c.passed for c in comps), "line": line,
                                  "outputs": [c.to_dict() for c in comps]}
        if not all(c.passed for c in comps):
            click.echo(
                "warning: the int8 model departs from fp32 beyond the int8 preset; try --method percentile or entropy, "
                "more calibration images, or --keep-fp32-before / --exclude-node for the sensitive layers",
                err=True,
            )
    written, report_path = int8_mod.write_int8(result, target_path, force=force)
    click.echo(f"wrote {written[-1]}")
    click.echo(f"wrote {report_path} (per-tensor ranges)")


def _quantize_with_fallback(model, src_model, images, spec, method, target, recipe, weight_rounding, samples, target_path, force, source) -> None:  # noqa: ANN001
    """``quantize --fallback auto``: int8 with the fewest layers kept in float that pass the int8 preset against the
    fp32 model on ORT CPU: deploy's search (generated images in sets of ``samples``, not the calibration ones)."""
    from ..precision import fallback as fb, int8 as int8_mod  # lazy: precision imports numpy; keeps it out of deployinc --help
    from ..subject import inputs  # lazy: the image input imports numpy; keeps it out of deployinc --help

    val = inputs.sample_images(spec, fb.search_image_count(samples), None, seed=0)
    full = load_onnx(model).model
    oracle, plain = fb.int8_search_oracles(fb.onnx_oracle(full, val, spec.name, INT8), samples)
    click.echo(f"layer fallback: judged by {oracle.tolerance.name} against the fp32 model on ORT CPU, {oracle.describe()} (generated)")
    result, found = fb.int8_with_fallback(model, images, oracle, method=method, target=target, recipe=recipe, spec=spec, data_source=source,
                                          weight_rounding=weight_rounding, say=click.echo, whole_enough=plain)  # fmt: skip
    click.echo(found.summary())
    if not found.passed:
        raise CheckFailed(f"no set of float layers makes the int8 model pass: {found.judgement.line}", hint="try --method percentile or entropy, more calibration images, or keep the fp32 model")
    written, report_path = int8_mod.write_int8(result, target_path, force=force)
    click.echo(f"wrote {written[-1]} ({len(found.float_nodes)} layer(s) in float)")
    click.echo(f"wrote {report_path} (per-tensor ranges, the recipe and the layers kept in float)")
