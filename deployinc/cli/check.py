"""``deployinc check``: static compatibility of an ONNX file with TensorRT or an ONNX Runtime provider.

Needs neither TensorRT nor a GPU. Exit codes: 0 compatible, 1 incompatible (unsupported nodes named), 2 bad input
(unreadable file, unknown --target).
"""

from __future__ import annotations

import click

from .. import backends as B
from ..errors import CheckFailed
from . import groups as G
from .options import write_json_report


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", default="tensorrt", show_default=True, help="tensorrt, or a backend name of verify --providers / bench --backends, judged with its support table: " + B.check_targets_text() + ".")
@click.option("--strict", is_flag=True, help="Also fail on fallbacks and warnings (nodes leaving the target, unverified ops).")
@G.json_report("Write the report as JSON.")
@G.force()
def check(model: str, target: str, strict: bool, json_path: str | None, force: bool) -> None:
    """Check MODEL's operators and attributes against the documented support of a deployment target.

    \b
      deployinc check resnet50.onnx --target tensorrt
      deployinc check resnet50.int8.onnx --target tensorrt --json check.json
    """
    from ..trt.check import check_model, resolve_target  # lazy: trt.check imports numpy; keeps it out of deployinc --help

    own = B.checker(target)  # a backend that asks its own runtime (openvino), else a static table
    if own is not None:
        target = B.canonical(target) or target
        report = own(model)
    else:
        target = resolve_target(B.check_target(target))  # unknown target: error listing the known ones, before reading the file
        report = check_model(model, target)
    click.echo(report.format())
    if json_path:
        write_json_report(json_path, report.to_dict(), force)
    if not report.compatible:
        first = report.errors[0].line()
        raise CheckFailed(
            f"{model} is not compatible with {target}: {len(report.errors)} unsupported node(s), first {first}",
            hint=f"see the list above; deployinc check --target {'|'.join(dict.fromkeys(B.CHECK_TARGETS.values()))} compares targets",
        )
    if strict and (report.fallbacks or report.warnings):
        raise CheckFailed(
            f"--strict: {len(report.fallbacks)} fallback(s) and {len(report.warnings)} warning(s) for {target}",
            hint="drop --strict to accept them",
        )
