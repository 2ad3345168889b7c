"""``deployinc export``: from a model name to a fused, simplified, checked ONNX file."""

from __future__ import annotations

import click

from .. import limits
from ..errors import CheckFailed
from .options import force_option, model_options, parse_floats, parse_shape, threads_option


@click.command()
@click.argument("model", required=False)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="Export config (TOML); flags override it.")
@click.option("--out", "-o", default=None, help="Output .onnx file or directory (default: ./<model>.onnx).")
@click.option("--opset", type=int, default=None, help="ai.onnx opset, 13..21 (default 17; a default may rise when no exporter reaches it, a given --opset never does).")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default=None, help="torch.export-based (default) or TorchScript exporter; the other is tried when it fails.")
@click.option("--no-fallback", is_flag=True, help="Fail instead of trying the other exporter or a higher opset.")
@click.option("--dynamic-batch/--no-dynamic-batch", default=None, help="Symbolic batch dimension (default) or static.")
@click.option("--simplifier", type=click.Choice(["onnxsim", "onnxslim"]), default=None, help="Graph simplifier (default onnxsim).")
@click.option("--no-simplify", is_flag=True, help="Skip the simplifier.")
@click.option("--skip-pass", "skip_passes", multiple=True, help="Skip a prepare pass (eval, remove_aux_heads, remove_dropout, fold_conv_bn).")
@click.option("--aux-head", "aux_heads", multiple=True, help="Submodule path of an auxiliary head to drop (known ones are found).")
@click.option("--no-check", is_flag=True, help="Skip the quick ORT-vs-torch parity check.")
@model_options
@threads_option
@force_option
def export(
    model: str | None,
    config: str | None,
    out: str | None,
    opset: int | None,
    exporter: str | None,
    dynamic_batch: bool | None,
    simplifier: str | None,
    no_simplify: bool,
    skip_passes: tuple[str, ...],
    aux_heads: tuple[str, ...],
    no_check: bool,
    no_fallback: bool,
    weights: str | None,
    num_classes: int | None,
    input_shape: str | None,
    mean: str | None,
    std: str | None,
    seed: int | None,
    threads: int | None,
    force: bool,
) -> None:
    """Export MODEL (a name from `deployinc models`, timm/NAME, or package.module:function) to ONNX.

    When the exporter fails, the other one is tried, then (unless --opset or the config file's export.opset
    pins it) a higher opset; the path taken and why are printed and stored in the file's metadata.

    \b
      deployinc export googlenet --opset 17
      deployinc export resnet50 --weights resnet50.pth --out models/
      deployinc export mypkg.nets:build --weights ckpt.safetensors --input-shape 1,3,64,64
      deployinc export --config export_configs/mobilenet_v2.toml --no-dynamic-batch
    """
    from ..export import check_opset, export_pipeline, resolve_config

    if opset is not None:  # in milliseconds, not after the model is loaded (both exporters take the same range)
        check_opset(exporter or "dynamo", opset)

    overrides = dict(
        opset=opset,
        exporter=exporter,
        dynamic_batch=dynamic_batch,
        simplifier=simplifier,
        weights=weights,
        num_classes=num_classes,
        input_shape=parse_shape(input_shape),
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std", positive=True),
        seed=seed,
        skip_passes=tuple(skip_passes) or None,
        aux_heads=tuple(aux_heads) or None,
    )
    cfg = resolve_config(model, config, **overrides)  # the config file's values are range-checked here
    _check_bounded(cfg, input_shape, num_classes)
    target = out if out is not None else f"{cfg.name}.onnx"

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    result = export_pipeline(
        model,
        config=config,
        out=target,
        force=force,
        simplify=not no_simplify,
        quick_check=not no_check,
        threads=threads,
        log=log,
        fallback=not no_fallback,
        **overrides,
    )
    for note in result.notes:
        log(note)
    t = result.timings
    prov = result.provenance
    how = f"{prov.exporter} after a fallback" if prov.fallback else prov.exporter
    click.echo(
        f"wrote {result.path} (opset {prov.opset}, {how}, "
        f"{'dynamic' if prov.dynamic_batch else 'static'} batch) in {t.get('total', 0):.1f} s"
    )
    if result.quick_check and not result.passed:
        raise CheckFailed(
            f"the exported model does not match the prepared torch model: {result.quick_check_line}",
            hint=f"run deployinc verify {result.path} --localize to find where it departs",
        )


def _check_bounded(cfg, input_shape: str | None, num_classes: int | None) -> None:  # noqa: ANN001
    """Before the model is loaded: the opset against the exporter, and the memory the input shape and the class
    count need (rough, low estimates from :mod:`deployinc.limits`; refused only when even those cannot fit)."""
    from ..export import check_opset

    check_opset(cfg.exporter, cfg.opset)
    random_weights = cfg.weights in (None, "", "none", "random")
    if cfg.input_shape is not None:
        if input_shape is not None:
            limits.check_model_memory("--input-shape", input_shape, cfg.input_shape, random_weights=random_weights)
        else:
            shown = ",".join(map(str, cfg.input_shape))
            limits.check_model_memory(f"{cfg.source or 'the config'}: input.shape", shown, cfg.input_shape, random_weights=random_weights)
    if cfg.num_classes is not None:
        limits.check_head_memory("--num-classes" if num_classes is not None else "model.num_classes", cfg.num_classes)
