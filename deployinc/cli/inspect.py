"""``deployinc inspect``: what an ONNX file holds, its precision and where it came from (no runtime needed).

Exit codes: 0 the file was read (a graph problem is shown, not failed on), 2 bad input (unreadable file, an
existing --json without --force).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import BadInputError, OutputExistsError
from ..io import check_output_path
from . import groups as G
from .options import write_json_report


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@G.json_report()
@G.force()
def inspect(model: str, json_path: str | None, force: bool) -> None:
    """Show what MODEL (an ONNX file) holds and where it came from: inputs and outputs, opsets, producer,
    operators, weights, external data, precision, and deployinc's provenance (model, weights, seed, passes,
    exporter, versions, fp16/int8 settings and calibration).

    \b
      deployinc inspect googlenet.onnx
      deployinc inspect googlenet.fp16.onnx --json googlenet.fp16.json

    A graph that no runtime would run (a cycle, a custom operator) is still shown, with the problem on its
    "runtime check:" line; deployinc check FILE --target ... says what a deployment target supports.
    """
    from ..inspect import inspect_model, render  # lazy: inspect imports numpy; keeps it out of deployinc --help

    if json_path:
        try:
            check_output_path(json_path, force)  # before reading a large file
        except OutputExistsError as exc:
            raise OutputExistsError(exc.message, hint="pass --force to overwrite it, or give --json another file name") from None
        if Path(json_path).resolve() == Path(model).resolve():
            raise BadInputError(f"--json {json_path} is the model itself", hint="give the report another name, e.g. --json report.json")
    info = inspect_model(model)
    click.echo(render(info))
    if json_path:
        write_json_report(json_path, info, force)
        click.echo(f"wrote {json_path}", err=True)
