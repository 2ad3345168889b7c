"""``deployinc export``: from a model name to a fused, simplified, checked ONNX file."""

from __future__ import annotations

import click

import os
from pathlib import Path

from ..config import bundled_config_path, bundled_configs
from ..core import limits
from ..errors import BadInputError, CheckFailed, ConfigError
from . import groups as G
from .options import parse_floats, parse_shape


@click.command()
@click.argument("model", required=False)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="Export config: a .toml file, or the name of a bundled one (mobilenet_v2; see deployinc models); flags override it.")
@G.out("Output .onnx file, or a folder for <model>.onnx: an existing one, or DIR/ (trailing slash), created like mkdir when its parent exists (default: ./<model>.onnx).")
@click.option("--opset", type=int, default=None, help="ai.onnx opset, 13..21 (default 17; a default may rise when no exporter reaches it, a given --opset never does).")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default=None, help="torch.export-based (default) or TorchScript exporter; the other is tried when it fails.")
@click.option("--no-fallback", is_flag=True, help="Fail instead of trying the other exporter or a higher opset.")
@click.option("--dynamic-batch/--no-dynamic-batch", default=None, help="Symbolic batch dimension (default) or static.")
@click.option("--simplifier", type=click.Choice(["onnxsim", "onnxslim"]), default=None, help="Graph simplifier (default onnxsim).")
@click.option("--no-simplify", is_flag=True, help="Skip the simplifier.")
@click.option("--skip-pass", "skip_passes", multiple=True, help="Skip a prepare pass (eval, remove_aux_heads, remove_dropout, fold_conv_bn).")
@click.option("--aux-head", "aux_heads", multiple=True, help="Submodule path of an auxiliary head to drop (known ones are found).")
@G.no_check("Skip the quick ORT-vs-torch parity check.")
@G.MODEL
@G.threads()
@G.force()
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
      deployinc export --config mobilenet_v2 --no-dynamic-batch
    """
    from .. import export as stage  # lazy: export imports numpy and the runners; keeps them out of deployinc --help

    if opset is not None:  # in milliseconds, not after the model is loaded (both exporters take the same range)
        stage.check_opset(exporter or "dynamo", opset)

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

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    config = config_path(config, log)
    cfg = stage.resolve_config(model, config, **overrides)  # the config file's values are range-checked here
    stage.check_opset(cfg.exporter, cfg.opset)  # the opset against the exporter, before the model is loaded
    _check_bounded(cfg, input_shape, num_classes)
    target = out if out is not None else f"{cfg.name}.onnx"
    created = _make_out_dir(out, cfg.name, log)
    try:
        result = stage.export_pipeline(
            model,
            config=config,
            out=target,
            force=force,
            simplify=not no_simplify,
            quick_check=not no_check,
            threads=threads,
            log=log,
            fallback=not no_fallback,
            stages=stage.Stages.for_stream(log),
            **overrides,
        )
    except BaseException:
        if created is not None:  # leave no empty folder behind a failed export
            try:
                created.rmdir()
            except OSError:
                pass
        raise
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
    """Before the model is loaded: the memory the input shape and the class count need (rough, low estimates from
    :mod:`deployinc.core.limits`; refused only when even those cannot fit)."""
    random_weights = cfg.weights in (None, "", "none", "random")
    if cfg.input_shape is not None:
        if input_shape is not None:
            limits.check_model_memory("--input-shape", input_shape, cfg.input_shape, random_weights=random_weights)
        else:
            shown = ",".join(map(str, cfg.input_shape))
            limits.check_model_memory(f"{cfg.source or 'the config'}: input.shape", shown, cfg.input_shape, random_weights=random_weights)
    if cfg.num_classes is not None:
        limits.check_head_memory("--num-classes" if num_classes is not None else "model.num_classes", cfg.num_classes)


def config_path(config: str | None, log=None) -> str | None:  # noqa: ANN001
    """The file ``--config`` names: a path that exists; else a bundled config's name (``mobilenet_v2``, or
    ``mobilenet_v2.toml``), looked up in the package (``deployinc/export_configs/NAME.toml``); else, for a relative
    ``export_configs/NAME.toml`` (the README's form, written from a checkout) that is not here, the bundled file of
    that name, with a note. Anything else is returned as given (loading it then says it does not exist).

    Raises:
        ConfigError: A bare name (no folder, no .toml) that is no bundled config; the hint lists them.
    """
    if config is None:
        return None
    p = Path(config)
    if p.is_file():
        return config
    bare = p.parent == Path(".") and not config.startswith((".", "~"))
    if bare and p.suffix != ".toml":
        bundled = bundled_config_path(config)
        if bundled is not None:
            return str(bundled)
        import difflib

        names = bundled_configs()
        close = difflib.get_close_matches(config, names, n=3)
        raise ConfigError(
            f"--config {config}: no such file, and no bundled config named {config!r}",
            hint=(f"did you mean {', '.join(close)}? " if close else "")
            + f"bundled configs: {', '.join(names)}; or give the path of a .toml file",
        )
    if not p.is_absolute() and p.suffix == ".toml" and (bare or p.parent.name == "export_configs"):
        bundled = bundled_config_path(p.stem)
        if bundled is not None:
            if log is not None:
                log(f"note: {config} is not in {Path.cwd()}; using the bundled {p.stem} config ({bundled})")
            return str(bundled)
    return config


def _make_out_dir(out: str | None, name: str, log=None) -> Path | None:  # noqa: ANN001
    """``--out DIR/`` (a trailing slash) names a folder for ``<model>.onnx``: create it when it does not exist, like
    ``mkdir`` (the last folder only: its parent must exist). Returns the folder when it was created.

    Raises:
        BadInputError: The parent folder does not exist either, or DIR is a file.
    """
    if out is None or not out.endswith(("/", os.sep)):
        return None
    folder = Path(out)
    if folder.is_dir():
        return None
    if folder.exists():
        raise BadInputError(f"--out {out}: {folder} is a file, not a folder", hint="choose another --out")
    parent = folder.parent
    if not parent.is_dir():
        raise BadInputError(
            f"--out {out}: neither {folder} nor its parent folder {parent} exists",
            hint=f"--out DIR/ creates the last folder only, like mkdir: create the others first (mkdir -p {folder}), "
            "or choose another --out",
        )
    try:
        folder.mkdir(parents=False)
    except OSError as exc:
        raise BadInputError(
            f"--out {out}: cannot create folder {folder} ({exc.strerror or exc})", hint="choose another --out"
        ) from exc
    if log is not None:
        log(f"created folder {folder}{os.sep} for {name}.onnx (--out DIR/ creates the last folder, like mkdir)")
    return folder
