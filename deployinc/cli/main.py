"""The ``deployinc`` click group and the error boundary of every command.

Commands are imported only when they run (or when ``--help`` lists them), and command modules import nothing
heavy at module level, so ``deployinc --help`` never imports torch.

Exit codes: 0 success, 1 a check failed, 2 bad input, 130 interrupted, 70 a bug in deployinc (with traceback).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..backends import ALIASES, BACKENDS
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
    "inspect": "deployinc.cli.inspect:inspect",
    "deploy": "deployinc.cli.deploy:deploy",
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
            command = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise
        _attach_completions(cmd_name, command)
        return command

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
        # --debug is global but accepted anywhere (`deployinc verify x.onnx --debug`): taken out of the command's
        # arguments (up to a `--`) and handed to the group, before click parses.
        end = argv.index("--") if "--" in argv else len(argv)
        debug = "--debug" in argv[:end] or os.environ.get("DEPLOYINC_DEBUG") == "1"
        if "--debug" in argv[:end]:
            argv = ["--debug"] + [a for a in argv[:end] if a != "--debug"] + argv[end:]
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


# shell completion --------------------------------------------------------------------------------------------------
#
# Click completes commands, options and paths by itself (``eval "$(_DEPLOYINC_COMPLETE=bash_source deployinc)"``);
# these add model names and backend names. Completion runs the CLI on every TAB, so nothing here imports torch:
# the names are read from the sources of the registries (deployinc's built-ins, torchvision's classification
# models), which tests/test_inspect.py checks against the registry itself.

_BUILTIN_NAME = re.compile(r"""@register_model\(\s*["']([\w.-]+)["']""")
_TV_NAME = re.compile(
    r"""^@register_model\((?:\s*name\s*=\s*)?(?:["']([\w.-]+)["'])?\s*\)\s*\n(?:[ \t]*@[^\n]*\n|[ \t]+[^\n]*\n)*?def\s+(\w+)""",
    re.M,
)


def model_names() -> list[str]:
    """The registry's names (``deployinc models``: built-ins and torchvision's classification models), sorted,
    read from source without importing torch (timm models, ``timm/<name>``, are not listed)."""
    names: set[str] = set()
    builtin = Path(__file__).resolve().parent.parent / "models" / "builtin.py"
    with contextlib.suppress(OSError):
        names.update(_BUILTIN_NAME.findall(builtin.read_text(encoding="utf-8")))
    try:
        spec = importlib.util.find_spec("torchvision")  # finds the package without importing it (or torch)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        # torchvision.models.list_models(module=torchvision.models): the functions registered in the files of the
        # package itself (not detection/segmentation/video/quantization, which live in subpackages).
        for f in sorted((Path(next(iter(spec.submodule_search_locations))) / "models").glob("*.py")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                names.update(m.group(1) or m.group(2) for m in _TV_NAME.finditer(f.read_text(encoding="utf-8")))
    return sorted(names)


def complete_model(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """MODEL: registry names starting with what is typed; file completion for paths and where no name matches
    (``bench`` also offers the ``.onnx`` files of the folder)."""
    from click.shell_completion import CompletionItem

    if any(c in incomplete for c in "/\\:~") or incomplete.startswith("."):
        return [CompletionItem(incomplete, type="file")]
    items = [CompletionItem(n) for n in model_names() if n.startswith(incomplete)]
    if ctx.info_name == "bench":
        with contextlib.suppress(OSError):
            items += [CompletionItem(p.name) for p in sorted(Path(".").glob(glob.escape(incomplete) + "*.onnx"))]
    return items or [CompletionItem(incomplete, type="file")]


def provider_names() -> list[str]:
    """``verify --backends`` (``--providers``) names (deployinc.backends.ALIASES: short names first, then the long ones)."""
    return list(dict.fromkeys([*ALIASES, *BACKENDS]))


def backend_names() -> list[str]:
    """``bench --backends`` names (deployinc.backends.BACKENDS, then verify's short aliases bench accepts too)."""
    return list(dict.fromkeys([*BACKENDS, *ALIASES]))


def complete_list(names: Callable[[], list[str]]) -> Callable[[click.Context, click.Parameter, str], list[Any]]:
    """Completion of a comma-separated list: ``cpu,cu`` -> ``cpu,cuda``; names already given are not offered."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        done, _, last = incomplete.rpartition(",")
        given = {v.strip().lower() for v in done.split(",") if v.strip()}
        prefix = done + "," if done else ""
        return [CompletionItem(prefix + n) for n in names() if n.startswith(last.lower()) and n not in given]

    return complete


#: (command, parameter name) -> completion function, attached when the command is loaded.
COMPLETIONS: dict[tuple[str, str], Callable[[click.Context, click.Parameter, str], list[Any]]] = {
    ("export", "model"): complete_model,
    ("bench", "model"): complete_model,
    ("profile", "model"): complete_model,
    ("train", "arch"): complete_model,
    ("verify", "backends"): complete_list(provider_names),  # --backends, or its older spelling --providers
    ("bench", "backends"): complete_list(backend_names),
    ("deploy", "backends"): complete_list(backend_names),
}


def _attach_completions(cmd_name: str, command: click.Command) -> None:
    """Give ``command``'s parameters their completion from :data:`COMPLETIONS` (one written on the parameter itself,
    ``shell_complete=``, wins). Kept here so that the command modules need no change for it."""
    for param in command.params:
        fn = COMPLETIONS.get((cmd_name, param.name or ""))
        if fn is not None and getattr(param, "_custom_shell_complete", None) is None:
            param._custom_shell_complete = fn


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="deployinc")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (accepted before or after the command).")
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
