"""The ``deployinc`` click group and the error boundary of every command.

Commands are imported only when they run (or when ``--help`` lists them), and command modules import nothing
heavy at module level, so ``deployinc --help`` never imports torch.

Exit codes: 0 success, 1 a check failed, 2 bad input, 130 interrupted, 70 a bug in deployinc (with traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import DeployincError

#: command name -> "module:attribute", imported on demand.
COMMANDS = {
    "models": "deployinc.cli.models:models",
    "export": "deployinc.cli.export:export",
    "verify": "deployinc.cli.verify:verify",
    "bench": "deployinc.cli.bench:bench",
    "check": "deployinc.cli.check:check",
    "convert": "deployinc.cli.convert:convert",
    "quantize": "deployinc.cli.quantize:quantize",
    "train": "deployinc.cli.train:train",
    "profile": "deployinc.cli.profile:profile",
}

EXIT_BUG = 70


class LazyGroup(click.Group):
    """A group whose subcommands live in their own modules and are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _importable(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise

    def resolve_command(self, ctx, args):  # noqa: ANN001, ANN201 - click's signature
        name = args[0] if args else None
        if name and not name.startswith("-") and name not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(name, list(COMMANDS), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "run deployinc --help for the commands"
            raise DeployincError(f"unknown command {name!r}", hint=hint)
        return super().resolve_command(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or os.environ.get("DEPLOYINC_DEBUG") == "1"
        code = 0
        try:
            rv = super().main(args=argv, prog_name=prog_name or "deployinc", standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except DeployincError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            code = exc.exit_code
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("error: interrupted", err=True)
            code = 130
        except click.ClickException as exc:
            # Usage errors: an unknown option, a bad value, a missing argument.
            sub = click.get_current_context(silent=True)
            click.echo(f"error: {exc.format_message()}", err=True)
            where = f"deployinc {sub.info_name} --help" if sub and sub.info_name != "deployinc" else "deployinc --help"
            click.echo(f"hint: run {where} for the usage", err=True)
            code = exc.exit_code if exc.exit_code else 2
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            code = 130
        except Exception:  # noqa: BLE001 - the last line of defence: a bug, reported as one
            traceback.print_exc()
            click.echo(
                "error: internal error in deployinc (this is a bug)",
                err=True,
            )
            click.echo("hint: please report it with the traceback above and the command you ran", err=True)
            code = EXIT_BUG
        if standalone_mode:
            sys.exit(code)
        return code


def _importable(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="deployinc")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Take PyTorch image classifiers to production: prepare, export to ONNX, simplify, verify, benchmark.

    \b
      deployinc export googlenet --opset 17
      deployinc verify googlenet.onnx
      deployinc bench googlenet.onnx
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv)


if __name__ == "__main__":  # pragma: no cover
    main()
