"""``deployinc deploy``: from a model to the fastest artifact that still computes the same, with the evidence.

Exit codes: 0 a package was written, 1 no candidate passed (the table says why), 2 bad input (nothing written).
Nothing heavy is imported at module level.
"""

from __future__ import annotations

from typing import Any

import click

from .. import backends as B
from ..core import limits
from ..errors import CheckFailed
from . import groups as G
from .options import check_with, parse_batches, parse_shape


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@click.command()
@click.argument("model")
@G.weights("Checkpoint (.pth / .safetensors) of MODEL; loaded with weights_only.")
@G.num_classes("Number of classes of MODEL (default: the model's; a checkpoint's head must match).")
@G.input_shape("N,C,H,W of the export's example input (default: the model's), e.g. 1,3,128,128 for a model trained at 128 px.")
@G.out("Package folder (default: <model>.deploy).")
@G.calibration_data("Folder of images for int8 calibration (default: generated natural-statistics images).")
@click.option("--accuracy-data", default=None, type=click.Path(), help="Labelled image folder (one sub-folder per class): verification inputs, and top-1 accuracy per candidate.")
@click.option("--target", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt: which backends to try (auto: cuda where ORT CUDA runs, else cpu).")
@G.precisions("Comma-separated, from fp32, fp16, bf16, int8 (default: all that a backend of the target runs).")
@G.backends("Comma-separated ONNX backends to try instead of the target's (" + B.names_help(lambda r: r.onnx) + ").")
@G.batch("Batch sizes, comma-separated (at most 16); latency is judged at the first.", default="1")
@click.option("--objective", default="latency", show_default=True, help="latency (p50 at the first batch size) or throughput (best images/s).")
@click.option("--min-top1-agreement", type=float, default=None, help="Only ship a candidate whose top-1 agreement with eager torch fp32 is at least this (0..1).")
@click.option("--require-backend", default=None, help="Only ship a candidate on this backend.")
@click.option("--require-precision", default=None, help="Only ship a candidate at this precision.")
@click.option("--keep-variants", is_flag=True, help="Also put the other passing artifacts in the package (variants/).")
@G.iters(50, "Timed iterations per candidate and batch size.", callback=check_with(lambda n, v: limits.check_int(n, v, 1, 100_000, example="50")))
@G.warmup(5, "Untimed iterations first.", callback=check_with(lambda n, v: limits.check_int(n, v, 0, 100_000, example="5")))
@G.samples(16, "Generated verification images (without --accuracy-data).", example="16")
@click.option("--no-compile", is_flag=True, help="Leave torch.compile out of the eager baseline (it takes a while the first time).")
@click.option("--no-search", is_flag=True, help="No session-option variants (threads, CUDA graphs): one candidate per precision and backend.")
@G.fallback("auto", "auto: where whole-model int8 fails, also try it with the fewest layers kept in float that pass (a bounded search, judged like every candidate); none: whole-model only.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True, help="With --accuracy-data: the most top-1 accuracy points a lower-precision candidate may lose against fp32 (with top-1 agreement >= 0.99); cosine and max_rel are then reported, not judged.")
@G.trust_model_code("Let a module:function recorded in an ONNX file's metadata be imported to rebuild its reference.")
@G.threads()
@G.force("Replace an existing package (only once the new one is complete). Only a folder deploy wrote (its manifest.json lists every file) or an empty one is replaced; never the current folder or one above it.")
def deploy(model: str, batch: str, precisions: str | None, backends: str | None, no_compile: bool, no_search: bool, input_shape: str | None, **kw: Any) -> None:
    """Make, verify and time every candidate of MODEL, and package the fastest that passes.

    MODEL is a registry name (googlenet, resnet50, timm/<name>), package.module:function, or an fp32 .onnx file.
    Candidates are precisions (fp32, fp16, bf16, int8) x the backends that run here x a few session options; each
    is verified against eager PyTorch under its precision's preset and timed against eager torch (plain, fused,
    torch.compile) in the same run. Finished candidates are kept, so a killed deploy run again reuses them.

    \b
      deployinc deploy googlenet
      deployinc deploy resnet50 --weights r50.pth --data calib/ --accuracy-data val/ --target cpu
      deployinc deploy model.onnx --target cuda --precisions fp32,fp16,int8 --batch 1,64 --objective throughput
      deployinc deploy googlenet --min-top1-agreement 0.995 --require-backend ort-cpu
    """
    from ..deploy import report as deploy_report, run as deploy_run  # lazy: deploy.run imports onnx, numpy and every stage; keeps them out of deployinc --help

    result = deploy_run.deploy(
        model, batches=parse_batches(batch), precisions=_csv(precisions), backends=_csv(backends),
        torch_compile=not no_compile, search=not no_search, log=click.echo, input_shape=parse_shape(input_shape), **kw,
    )  # fmt: skip
    click.echo("")
    click.echo(deploy_report.text_table(result))
    click.echo("")
    if result.chosen is None:
        raise CheckFailed(f"{result.why}: nothing to ship (the table above says why each candidate failed)",
                          hint="look at the notes and localisation; --precisions fp32 ships the plain export")
    c = result.chosen
    click.echo(f"chosen: {c['id']}: {result.why}")
    look = result.second_look
    if look and look["verdict"] == "fail":
        click.echo(f"note: judged again on {look['samples']} other generated images (seed {look['seed']}) it does not pass "
                   f"({'; '.join(look.get('failures') or [])[:160]}): its verdict depends on the images drawn; check it on your own "
                   f"images: {deploy_report.verify_command(look)}")  # fmt: skip
    click.echo(f"wrote {result.package}/ (model.onnx, report.md, report.json, triton/, manifest.json) in {result.seconds:.0f} s")
