"""The CLI's flags are declared once each (``deployinc/cli/groups.py``), and verify's request is its groups' fields.

The declaration test reads the sources of ``deployinc/cli`` (``ast``): every ``click.option(...)`` call is one
declaration, at a site (the function or module-level name it is written in). A flag name, aliases and short forms
included, has one site, except where one spelling deliberately carries several meanings (:data:`MEANINGS`), each
then declared once under its own name.
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import deployinc.cli

CLI = Path(deployinc.cli.__file__).resolve().parent

#: The deliberate exceptions: a flag name declared at more than one site, one site per meaning. Each is a spelling
#: users already type on different commands; renaming them would break those commands.
MEANINGS: dict[str, dict[str, str]] = {
    "--data": {
        "groups.py:image_data": "a folder of images the model runs on (verify, convert)",
        "groups.py:calibration_data": "the folder of int8 calibration images (quantize, deploy)",
        "groups.py:training_data": "a training set: a folder, a CIFAR-10 directory or synthetic:NAME (train)",
    },
    "--precision": {
        "groups.py:precision": "the one precision a command works at (verify judges it, convert writes it)",
        "groups.py:precisions": "the precisions to try, comma-separated (bench, deploy): --precisions's alias",
    },
    "--target": {
        "check.py:check": "a backend (or tensorrt) whose support table judges the file",
        "quantize.py:quantize": "the int8 flavour: tensorrt (symmetric activations) or cpu (uint8 activations)",
        "deploy.py:deploy": "the device family whose backends are tried (cpu, cuda, tensorrt)",
    },
}


def _is_click_option(call: ast.Call) -> bool:
    f = call.func
    return isinstance(f, ast.Attribute) and f.attr == "option" and isinstance(f.value, ast.Name) and f.value.id == "click"


def declarations(sources: dict[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    """``flag -> [site, ...]`` over every ``click.option`` call in ``sources`` (file name -> text), and the problems
    that make a declaration unreadable here (a flag name that is not a literal string)."""
    found: dict[str, list[str]] = defaultdict(list)
    problems: list[str] = []

    def visit(node: ast.AST, fname: str, site: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            site = node.name
        elif isinstance(node, ast.Assign) and site == "<module>":
            site = ",".join(t.id for t in node.targets if isinstance(t, ast.Name)) or site
        if isinstance(node, ast.Call) and _is_click_option(node):
            if any(isinstance(a, ast.Starred) for a in node.args):
                problems.append(f"{fname}:{node.lineno}: click.option(*names): flag names must be written out")
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")]
            if not names:
                problems.append(f"{fname}:{node.lineno}: click.option without a literal flag name")
            for name in names:
                for flag in name.split("/"):  # --localize/--no-localize declares both
                    if flag:
                        found[flag].append(f"{fname}:{site}")
        for child in ast.iter_child_nodes(node):
            visit(child, fname, site)

    for fname, text in sources.items():
        visit(ast.parse(text), fname, "<module>")
    return dict(found), problems


def duplicates(sources: dict[str, str]) -> list[str]:
    """Every flag declared at more than one site, beyond the meanings :data:`MEANINGS` lists, and every listed
    meaning that is no longer declared where it says."""
    found, problems = declarations(sources)
    for flag, sites in sorted(found.items()):
        allowed = MEANINGS.get(flag)
        if allowed is None:
            if len(sites) > 1:
                problems.append(f"{flag} is declared {len(sites)} times: {', '.join(sites)}")
        elif sorted(sites) != sorted(allowed):
            problems.append(f"{flag} is declared at {', '.join(sites)}; its meanings are declared at {', '.join(allowed)}")
    return problems


def _cli_sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(CLI.glob("*.py"))}


def test_every_flag_is_declared_once():
    problems = duplicates(_cli_sources())
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_planted_duplicate():
    sources = _cli_sources()
    planted = dict(sources)
    planted["bench.py"] += '\n\n@click.option("--weights", default=None, help="a second declaration")\ndef extra(weights):\n    pass\n'
    assert any(p.startswith("--weights is declared 2 times") and "bench.py:extra" in p for p in duplicates(planted))
    aliased = dict(sources)  # an alias counts as a name of its own
    aliased["train.py"] += '\nX = click.option("--epochs", "--providers", default=None)\n'
    assert any(p.startswith("--providers is declared 2 times") for p in duplicates(aliased))
    hidden = dict(sources)  # a name the reader cannot see is refused, not skipped
    hidden["train.py"] += '\nNAMES = ("--weights",)\nY = click.option(*NAMES)\n'
    assert any("flag names must be written out" in p for p in duplicates(hidden))
    meaning = dict(sources)  # a third --precision (a meaning not listed) is caught too
    meaning["convert.py"] += '\nZ = click.option("--precision", default=None)\n'
    assert any(p.startswith("--precision is declared at") for p in duplicates(meaning))


def test_the_declarations_are_the_commands_flags():
    """What the reader counts is what click sees: every flag of every command is declared in the sources."""
    import click

    from deployinc.cli.main import COMMANDS, cli

    found, _ = declarations(_cli_sources())
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option):
                for flag in param.opts + param.secondary_opts:
                    assert flag in found, f"deployinc {name} {flag} is not declared where the test reads"


def test_backends_and_providers_are_one_option_on_verify_bench_and_deploy(cli_runner):
    from deployinc.cli.main import cli

    for name in ("verify", "bench", "deploy"):
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        option = next(p for p in command.params if p.name == "backends")
        assert {"--backends", "--providers"} <= set(option.opts), name
        assert "--providers: the same option" in (option.help or "")
    bad = ["--backends", "vulkan"], ["--providers", "vulkan"]
    for args in bad:  # both spellings reach the same parse, with the same message
        r = cli_runner.invoke(cli, ["verify", "m.onnx", *args])
        assert r.exit_code == 2 and "unknown backend 'vulkan' in --providers" in r.stderr, r.stderr


def test_verify_builds_its_request_from_the_groups():
    """The groups' fields are VerifyRequest's (json_path aside: the CLI writes the report), so the request is built
    as ``VerifyRequest(model=..., **fields)`` with no option restated."""
    from deployinc.cli.groups import VERIFY
    from deployinc.verify.request import VerifyRequest

    raw = {name: None for group in VERIFY.groups for name in group.params}
    raw.update(backends="cpu,ort-cuda", batch="1,4", samples=8, inputs="natural", seed=3, localize_method="auto",
               no_cache=True, no_fp64_floor=False, labels=None, max_rel=1e-3, file_tolerances=False, allow_skip=False,
               trust_model_code=False, force=False, mean="0.5,0.5,0.5")  # fmt: skip
    fields = VERIFY.parse(raw)
    assert fields.pop("json_path") is None
    req = VerifyRequest(model="m.onnx", **fields)
    assert req.backend_names() == ["ort-cpu", "ort-cuda"] and req.batches == [1, 4] and req.seed == 3
    assert req.use_cache is False and req.fp64_floor is True and req.labels is False and req.mean == (0.5, 0.5, 0.5)
    assert req.tolerance == {"max_rel": 1e-3, "max_abs": None, "min_cosine": None, "min_top1": None, "min_top5": None}
    assert set(fields) <= {f.name for f in dataclasses.fields(VerifyRequest)}
    with pytest.raises(TypeError, match="no group parses"):
        VERIFY.parse({**raw, "stray": 1})


def test_no_command_help_imports_torch():
    code = (
        "import sys\n"
        "from deployinc.cli.main import COMMANDS, main\n"
        "for name in COMMANDS:\n"
        "    try:\n"
        "        main([name, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'torchvision', 'onnxruntime', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout[-400:]
