"""``deployinc verify``: prove an ONNX file computes what its PyTorch original computes, on every backend asked for.

Exit codes: 0 passed, 1 parity (or a check) failed, 2 bad input, 3 what ran passed but requested backends
could not run here (``--allow-skip`` makes that 0). Nothing heavy is imported at
module level (``deployinc --help`` lists this command without importing torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import BadInputError, CheckFailed, IncompleteRun, OutputExistsError
from ..io import check_output_path
from .groups import VERIFY
from .options import check_onnx_input_memory, write_json_report


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@VERIFY
def verify(model: str, **options: Any) -> None:
    """Verify MODEL (an .onnx file) against the model it was exported from.

    \b
      deployinc verify googlenet.onnx                      # reference rebuilt from the file's metadata
      deployinc verify model.onnx --reference mypkg.nets:build --weights ckpt.pt
      deployinc verify a.onnx --against b.onnx             # two ONNX files, no torch needed
      deployinc verify googlenet.onnx --backends cpu,cuda,tensorrt --precision fp16 --batch 1,8 --data images/ --json report.json
      deployinc verify googlenet.onnx --localize           # the first layer where it departs, by torch module name
      deployinc verify googlenet.onnx --providers ort-openvino --precision bf16   # OpenVINO computing in bf16
    """
    # lazy: verify imports numpy and the runners; keeps them out of deployinc --help
    from ..verify import core as verify_core, report as verify_report, request as verify_request

    # Cheap checks first, so bad flags fail in milliseconds, not after the reference is built.
    batch_text = options["batch"]
    fields = VERIFY.parse(options)  # the request's fields, each group's values parsed and checked
    json_path = fields.pop("json_path")
    _check_outputs_and_data(json_path, fields["save_inputs"], fields["save_outputs"], fields["data"], fields["force"])
    shape, samples = fields["input_shape"], fields["samples"]
    check_onnx_input_memory(  # a run holds max(samples, largest batch) inputs
        model, [("--samples", samples, samples), ("--batch", batch_text, max(fields["batches"] or [1]))], chw=shape[1:] if shape else None
    )

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    report = verify_core.run(verify_request.VerifyRequest(model=model, log=log, **fields))
    click.echo(verify_report.render(report))
    if json_path is not None:
        write_json_report(json_path, report.to_dict(), fields["force"])
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
