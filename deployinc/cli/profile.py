"""``deployinc profile``: parameters and multiply-adds per module and per Inception branch, before and after fusion."""

from __future__ import annotations

import click

from ..core import limits
from ..io import check_output_path
from . import groups as G
from .options import parse_floats, parse_shape, write_json_report


@click.command()
@click.argument("model")
@click.option("--compare-naive", is_flag=True, help="Show each Inception module's cost without its 1x1 reductions.")
@click.option("--module", "modules", multiple=True, help="Inception module path for --compare-naive (repeatable; default all).")
@click.option("--depth", type=click.IntRange(min=1), default=1, show_default=True, help="Submodule levels in the table.")
@click.option("--no-fused", is_flag=True, help="Skip the profile after deployinc's fusions (Conv+BN fold).")
@click.option(
    "--training",
    is_flag=True,
    help="Profile the training-time model (auxiliary heads kept) instead of the deploy-time one (heads removed, as export prepares it).",
)
@G.MODEL
@G.threads()
@G.json_report()
@G.force()
def profile(
    model: str,
    compare_naive: bool,
    modules: tuple[str, ...],
    depth: int,
    no_fused: bool,
    training: bool,
    weights: str | None,
    num_classes: int | None,
    input_shape: str | None,
    mean: str | None,
    std: str | None,
    seed: int | None,
    threads: int | None,
    json_path: str | None,
    force: bool,
) -> None:
    """Count parameters and multiply-adds of MODEL per module and per Inception branch.

    Multiply-adds follow torchvision's published convention (convolutions and linear layers); totals are for the
    whole input (N images). The model profiled is the deploy-time one: auxiliary heads (GoogLeNet's aux1/aux2,
    Inception v3's AuxLogits) removed, as `deployinc export` prepares it; --training profiles the model as
    trained, heads included. The fused column is the model after all of deployinc's prepare passes.

    \b
      deployinc profile googlenet
      deployinc profile googlenet --training
      deployinc profile inception_v1_block --input-shape 1,256,28,28 --compare-naive
      deployinc profile inception_v3 --depth 2 --json profile.json
    """
    shape = parse_shape(input_shape)
    random_weights = weights in (None, "", "none", "random")
    if shape is not None:  # before the model is built: BatchNorm recalibration and the profile run on this input
        limits.check_model_memory("--input-shape", input_shape, shape, random_weights=random_weights, export=False)
    if num_classes is not None:
        limits.check_head_memory("--num-classes", num_classes)
    import torch

    from .. import models  # lazy: models imports numpy; keeps it out of deployinc --help
    from ..profile import profile_model, render  # lazy: profile imports torch; keeps it out of deployinc --help

    if json_path is not None:
        check_output_path(json_path, force)  # refuse before the work, not after
    if threads is not None:
        torch.set_num_threads(threads)
    loaded = models.load_model(
        model,
        weights=weights,
        num_classes=num_classes,
        input_shape=shape,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std", positive=True),
        seed=seed or 0,
    )
    full_shape = shape if shape is not None else (1, *loaded.info.input_size)
    report = profile_model(
        loaded.module,
        full_shape,
        name=model,
        aux_heads=tuple(loaded.info.aux_heads),
        fused=not no_fused,
        compare_naive=compare_naive or bool(modules),
        modules=modules,
        training=training,
    )
    render.render(report, depth=depth)
    if json_path is not None:
        write_json_report(json_path, report.to_dict(), force)
        click.echo(f"wrote {json_path}", err=True)
