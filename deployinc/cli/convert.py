"""``deployinc convert``: write an fp16 copy of an ONNX model for ONNX Runtime CUDA and TensorRT.

Before converting, the float32 model runs on ONNX Runtime's CPU provider over sample images with every intermediate
tensor exposed; layers whose activations exceed the fp16 range (65504) are named, and the conversion stops (exit 1)
unless they are kept in fp32 (--keep-overflow-fp32). Exit codes: 0 written, 1 overflow or failed check, 2 bad input.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..core import limits
from ..core.precisions import FP16
from ..errors import BadInputError, CheckFailed
from ..io import check_output_path, load_onnx, save_onnx
from . import groups as G
from .options import parse_floats


def default_out(model: str, suffix: str) -> Path:
    p = Path(model)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.stem
    return p.with_name(f"{stem}.{suffix}.onnx")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@G.precision("Target precision.", [FP16], default=FP16)
@G.out("Output .onnx (default: <model>.fp16.onnx beside the input).")
@click.option("--fp16-io", is_flag=True, help="Make the model's inputs and outputs fp16 too (default: kept fp32).")
@click.option("--keep-fp32-op", "keep_ops", multiple=True, help="Operator type to keep in fp32 (repeatable).")
@click.option("--keep-fp32-node", "keep_nodes", multiple=True, help="Node name to keep in fp32 (repeatable).")
@click.option("--keep-overflow-fp32", is_flag=True, help="Keep layers that overflow fp16 (and their consumers) in fp32 instead of failing.")
@G.image_data("Folder of sample images for the overflow check (default: generated natural-image statistics).")
@G.samples(8, "Number of sample images (bounded by memory); --fallback auto judges sets of this many, 96 images at least, each set on its own.", example="8")
@G.no_check("Skip the overflow check and the fp32-vs-fp16 comparison.")
@G.fallback("none", "auto: keep in fp32 the fewest layers (Conv, Gemm, MatMul) that make the fp16 model pass the fp16 preset against the fp32 model on the sample images (a bounded search); none: convert every layer.")
@G.mean("Normalisation mean, comma-separated (default: the model's metadata, else ImageNet's).")
@G.std("Normalisation std, comma-separated (each > 0).")
@G.threads()
@G.force()
def convert(
    model: str,
    precision: str,
    out: str | None,
    fp16_io: bool,
    keep_ops: tuple[str, ...],
    keep_nodes: tuple[str, ...],
    keep_overflow_fp32: bool,
    data: str | None,
    samples: int,
    no_check: bool,
    fallback: str,
    mean: str | None,
    std: str | None,
    threads: int | None,
    force: bool,
) -> None:
    """Convert MODEL to fp16 (for ONNX Runtime CUDA and TensorRT), reporting layers that overflow fp16.

    \b
      deployinc convert resnet50.onnx --precision fp16
      deployinc convert model.onnx --keep-fp32-op Softmax --keep-overflow-fp32
      deployinc convert model.onnx --precision fp16 --fallback auto
    """
    from ..precision import fallback as fb, fp16  # lazy: precision imports numpy; keeps it out of deployinc --help
    from ..subject import inputs  # lazy: the image input imports numpy; keeps it out of deployinc --help

    limits.check_int("--samples", samples, 1, limits.SAMPLES_MAX, example="--samples 8")
    target = Path(out) if out else default_out(model, precision)
    check_output_path(target, force)
    src = load_onnx(model).model
    fb.check_fallback(fallback.strip().lower(), precision, src)
    if fallback.strip().lower() == "auto":
        _convert_with_fallback(src, target, samples, data, mean, std, threads, force, fp16_io, keep_ops, keep_nodes)
        return
    images = None
    if not no_check:
        spec = inputs.input_spec(src, parse_floats(mean, "--mean"), parse_floats(std, "--std", positive=True))
        limits.check_input_memory("--samples", samples, samples, spec.chw, unit="sample images")  # before generating them
        if spec.static_batch and samples % spec.static_batch:
            samples = spec.static_batch * max(1, samples // spec.static_batch)
        images = inputs.sample_images(spec, samples, data)
        click.echo(f"overflow check: {len(images)} sample image(s) ({'from ' + data if data else 'natural-image statistics'}) on ONNX Runtime CPU, fp32")
    result = fp16.convert_to_fp16(
        src,
        keep_io_types=not fp16_io,
        keep_fp32_ops=keep_ops,
        keep_fp32_nodes=keep_nodes,
        images=images,
        keep_overflow_fp32=keep_overflow_fp32,
        threads=threads,
    )
    rep = result.overflow
    if rep is not None:
        top = rep.largest[0].line() if rep.largest else "none"
        click.echo(f"  {rep.tensors_checked} activations measured ({rep.tensors_unchecked} without a float32 type skipped); largest: {top}")
        bad = rep.overflowing + rep.nonfinite_fp32
        if bad:
            click.echo(f"  {len(bad)} layer(s) exceed {fp16.FP16_MAX:g}; kept in fp32 with their consumers:")
            for r in bad:
                click.echo(f"    {r.line()}")
        else:
            click.echo(f"  no layer exceeds the fp16 range ({fp16.FP16_MAX:g})")
    if result.kept_fp32_nodes:
        click.echo(f"kept in fp32: {len(result.kept_fp32_nodes)} node(s): {', '.join(result.kept_fp32_nodes[:10])}"
                   + (" ..." if len(result.kept_fp32_nodes) > 10 else ""))
    if result.parity is not None:
        p = result.parity
        click.echo(
            f"fp16 vs fp32 on ORT CPU ({int(p['samples'])} images; fp16 nodes without CPU kernels run through casts): "
            f"max |diff| {p['max_abs']:.3g} (max |ref| {p['max_abs_ref']:.3g}), min cosine {p['min_cosine']:.6f}, "
            f"top-1 agreement {p['top1_agreement']:.4f}"
        )
    written = save_onnx(result.model, target, force=force)
    click.echo(f"wrote {written[-1]} ({io_types_text(result.model, fp16_io)})")


def io_types_text(model: object, fp16_io: bool) -> str:
    """What became of the inputs and outputs: only float32 ones become fp16 with --fp16-io; the others (int64
    ids, bool masks...) stay as they are, and are named."""
    from ..inspect import dtype_name  # lazy: inspect imports numpy; keeps it out of deployinc --help

    g = model.graph  # type: ignore[attr-defined]
    inits = {t.name for t in g.initializer}
    kept = [f"{vi.name} ({dtype_name(vi.type.tensor_type.elem_type)})" for vi in [*g.input, *g.output]
            if vi.name not in inits and vi.type.tensor_type.elem_type not in (1, 10)]
    text = "float inputs/outputs fp16" if fp16_io else "inputs/outputs kept fp32"
    if kept:
        text += f"; {'not float32, so' if fp16_io else 'not float,'} kept as they are: {', '.join(kept[:6])}" + (" ..." if len(kept) > 6 else "")
    return text


def _convert_with_fallback(src, target, samples, data, mean, std, threads, force, fp16_io, keep_ops, keep_nodes) -> None:  # noqa: ANN001
    """``convert --fallback auto``: fp16 (I/O kept fp32) with the fewest layers kept in fp32 that pass the fp16
    preset against the fp32 model itself on ORT CPU, over the sample images."""
    from ..precision import fallback as fb  # lazy: precision imports numpy; keeps it out of deployinc --help
    from ..subject import inputs  # lazy: the image input imports numpy; keeps it out of deployinc --help

    if fp16_io or keep_ops or keep_nodes:
        raise BadInputError("--fallback auto decides which layers stay fp32 itself (and keeps the I/O fp32)",
                            hint="drop --fp16-io / --keep-fp32-op / --keep-fp32-node, or use --fallback none")  # fmt: skip
    spec = inputs.input_spec(src, parse_floats(mean, "--mean"), parse_floats(std, "--std", positive=True))
    n = fb.search_image_count(samples)  # in sets of --samples, each judged on its own, as deploy's search judges
    limits.check_input_memory("--samples", samples, n, spec.chw, unit="sample images (--fallback auto judges 96 at least)")
    images = inputs.sample_images(spec, n, data)
    oracle = replace(fb.onnx_oracle(src, images, spec.name, FP16, threads=threads), set_size=samples)
    click.echo(f"fp16 layer fallback: judged by the fp16 preset against the fp32 model on ORT CPU, {oracle.describe()} "
               f"({'from ' + data if data else 'natural-image statistics'})")  # fmt: skip
    model, found = fb.fp16_with_fallback(src, oracle, say=click.echo, threads=threads)
    click.echo(found.summary())
    if not found.passed:
        raise CheckFailed(f"no set of fp32 layers makes the fp16 model pass: {found.judgement.line}", hint="keep the fp32 model, or look at deployinc verify --localize")
    written = save_onnx(model, target, force=force)
    click.echo(f"wrote {written[-1]} (inputs/outputs kept fp32; {len(found.float_nodes)} layer(s) in fp32)")
