"""The layout's rules, checked on the code itself: the package-level import graph (every import, function-level
ones included) has no cycle and points only downward through the layers (:data:`LAYERS`: no backend imports a stage
or the subject, the bottom layer imports nothing above it), bench imports neither verify nor export, no module imports
another package's private (``_``-prefixed) module, and few imports of deployinc's own modules are left inside
functions, each with a ``# lazy: <why>`` comment."""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "deployinc"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2])


def _imports(path: Path) -> set[str]:
    """Every deployinc module ``path`` imports, at any depth of the file."""
    mod = _module(path)
    base_parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = base_parts[: len(base_parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("deployinc"):
                out.add(target)
                out |= {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("deployinc")}
    return out


def _graph() -> dict[str, set[str]]:
    files = list(ROOT.rglob("*.py"))
    packages = {_package(_module(p)) for p in files}
    edges: dict[str, set[str]] = defaultdict(set)
    for p in files:
        src = _package(_module(p))
        for target in _imports(p):
            dst = _package(target)
            if dst != src and dst in packages:
                edges[src].add(dst)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(edges):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_package_import_graph_has_no_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


# The layers, top to bottom ---------------------------------------------------------------------------------------

#: The stages: side by side, each may use the ones it orchestrates (deploy uses export, verify, bench, precision), except
#: as :data:`STAGE_BANS` says.
STAGES = ("export", "simplify", "verify", "bench", "deploy", "precision", "train", "profile", "inspect")
#: The backends: one record per backend, the runners, TensorRT, the one runner factory, the subprocess isolation.
BACKEND_PACKAGES = ("backends", "runners", "trt", "factory", "isolate")
#: Top-level packages and modules by layer, top first; a package imports only its own layer and those below it.
LAYERS: dict[str, tuple[str, ...]] = {
    "commands": ("cli", "__main__", "api"),
    "stages": STAGES,
    "subject": ("subject", "models", "prepare", "metadata", "config"),  # the model, its file, its reference
    "backends": BACKEND_PACKAGES,
    "bottom": ("core", "io", "errors", "lazy", "_version"),
}
#: Stages a stage must not import: bench times what it is given, and is itself used by deploy; what it shares with
#: verify and export (the image input, saved inputs, the torch reference) is the subject's, below both.
STAGE_BANS = {"bench": ("verify", "export")}


def _layer_of(package: str) -> int | None:
    name = package.split(".", 1)[1] if "." in package else ""
    return next((i for i, members in enumerate(LAYERS.values()) if name in members), None)


def _upward(edges: dict[str, set[str]]) -> list[str]:
    """Edges that point to a layer above their source, and packages that belong to no layer."""
    bad = []
    for src, dsts in sorted(edges.items()):
        if src == "deployinc":  # the package's own __init__: the public API, names imported lazily by their path
            continue
        for dst in sorted(dsts - {"deployinc"}):  # ``from .. import x`` names the package itself as well
            ls, ld = _layer_of(src), _layer_of(dst)
            if ls is None or ld is None:
                bad.append(f"{src if ls is None else dst} is in no layer of LAYERS")
            elif ld < ls:
                bad.append(f"{src} ({list(LAYERS)[ls]}) imports {dst} ({list(LAYERS)[ld]})")
    return bad


def test_every_package_is_in_a_layer():
    names = [m for members in LAYERS.values() for m in members]
    assert len(names) == len(set(names)), "a package is in two layers"
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert packages - {"__init__"} == set(names), f"LAYERS misses {sorted(packages - {'__init__'} - set(names))} or names {sorted(set(names) - packages)}"


def test_imports_point_down_the_layers():
    """No backend imports a stage or the subject; the subject imports no stage; the bottom imports nothing above it."""
    assert not _upward(_graph()), _upward(_graph())


def _banned_and_private() -> list[str]:
    """Imports of a stage that :data:`STAGE_BANS` forbids, and of another package's private (``_``-prefixed) module,
    by module: ``file: target``."""
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module(p) for p in files}
    bad: set[str] = set()
    for p in files:
        src = _package(_module(p))
        banned = {f"deployinc.{b}" for b in STAGE_BANS.get(src.split(".")[-1], ())}
        for target in _imports(p):
            dst = _package(target)
            private = target in modules and len(target.split(".")) > 2 and target.split(".")[-1].startswith("_")
            if dst in banned:
                bad.add(f"{p.relative_to(ROOT.parent)}: {dst}")
            if private and dst != src:
                bad.add(f"{p.relative_to(ROOT.parent)}: {target}")
    return sorted(bad)


def test_bench_imports_neither_verify_nor_export_nor_another_stages_private_module():
    assert not _banned_and_private(), _banned_and_private()


def test_the_layer_checks_find_planted_violations(tmp_path, monkeypatch):
    pkg = tmp_path / "deployinc"
    for name in ("bench", "verify", "precision", "trt", "core"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "precision" / "_common.py").write_text("X = 1\n")
    (pkg / "precision" / "fp16.py").write_text("from ._common import X\n")  # its own private module: allowed
    (pkg / "bench" / "subject.py").write_text("def f():\n    from ..verify import core  # lazy: planted\n")
    (pkg / "bench" / "harness.py").write_text("from ..precision._common import X\n")
    (pkg / "trt" / "engine.py").write_text("from ..precision import fp16\n")
    (pkg / "core" / "graph.py").write_text("from ..trt import engine\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    assert _banned_and_private() == ["deployinc/bench/harness.py: deployinc.precision._common", "deployinc/bench/subject.py: deployinc.verify"]
    assert _upward(_graph()) == [
        "deployinc.core (bottom) imports deployinc.trt (backends)",
        "deployinc.trt (backends) imports deployinc.precision (stages)",
    ]
    assert _upward({"deployinc.bench": {"deployinc.nowhere"}}) == ["deployinc.nowhere is in no layer of LAYERS"]


#: Function-level imports of deployinc's own modules must stay fewer than this, each with its reason.
LAZY_IMPORTS_LIMIT = 40


def _is_own_import(node: ast.AST) -> bool:
    """An import of a deployinc module: relative, or absolute under ``deployinc``."""
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "deployinc"
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "deployinc" for a in node.names)
    return False


def _function_level_imports() -> list[tuple[Path, ast.Import | ast.ImportFrom]]:
    """Every import of a deployinc module inside a function (nested functions counted once), in file order."""
    out = []
    for p in sorted(ROOT.rglob("*.py")):
        seen: dict[int, ast.Import | ast.ImportFrom] = {}
        for fn in ast.walk(ast.parse(p.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and _is_own_import(node):
                        seen.setdefault(id(node), node)
        out += [(p, n) for n in sorted(seen.values(), key=lambda n: n.lineno)]
    return out


def _has_reason(lines: list[str], node: ast.Import | ast.ImportFrom) -> bool:
    """A ``# lazy: <why>`` comment on the import's line(s) or on the line before it."""
    end = node.end_lineno or node.lineno
    own = lines[node.lineno - 1 : end]
    before = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
    return any("# lazy:" in line for line in own) or (before.startswith("#") and "lazy:" in before)


def test_few_function_level_imports_each_with_its_reason():
    found = _function_level_imports()
    where = [f"{p.relative_to(ROOT.parent)}:{n.lineno}" for p, n in found]
    assert len(found) < LAZY_IMPORTS_LIMIT, f"{len(found)} function-level imports of deployinc modules: {where}"
    texts = {p: p.read_text().splitlines() for p, _ in found}
    unexplained = [f"{p.relative_to(ROOT.parent)}:{n.lineno}" for p, n in found if not _has_reason(texts[p], n)]
    assert not unexplained, f"function-level imports without a '# lazy: <why>' comment: {unexplained}"


def test_the_lazy_import_finder_finds_them():
    src = "from . import a\n\ndef f():\n    # lazy: why\n    from .b import c\n    import deployinc.d\n    import json\n"
    fn = ast.parse(src).body[1]
    own = [n for n in ast.walk(fn) if _is_own_import(n)]
    assert len(own) == 2  # not json
    lines = src.splitlines()
    assert _has_reason(lines, own[0]) and not _has_reason(lines, own[1])


FUNCTION_LINES_LIMIT = 120


def test_no_function_is_longer_than_120_lines():
    long = []
    for p in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > FUNCTION_LINES_LIMIT:
                    long.append(f"{p.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {FUNCTION_LINES_LIMIT} lines: {long}"


# The tests mirror the package: tests/<package>/ for deployinc/<package>/, tests/ itself for the top-level modules
# and for what crosses every stage (README's commands, the layout, trust, fuzzing). Where a package's tests live
# elsewhere, this table says where, so a newcomer looking for them is told.
TESTS = ROOT.parent / "tests"
TESTED_ELSEWHERE = {
    "simplify": "tests/export/test_export.py (simplify runs inside the export pipeline, with its parity re-check)",
    "export_configs": "tests/verify/test_zoo.py and tests/export/test_zoo_export.py (the bundled configs)",
}


def test_tests_mirror_the_package_layout():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders - packages - {"scripts"} == set(), "a tests/ folder names no deployinc package"
    missing = packages - folders - set(TESTED_ELSEWHERE)
    assert not missing, f"deployinc packages without a tests/ folder: {sorted(missing)}"
    for name in folders:
        assert (TESTS / name / "__init__.py").is_file(), f"tests/{name}/ needs an __init__.py (test modules of the same name in two folders)"
        assert list((TESTS / name).glob("test_*.py")), f"tests/{name}/ holds no test module"
    for name, where in TESTED_ELSEWHERE.items():
        assert (ROOT.parent / where.split(" ")[0]).is_file(), f"{name}: {where} does not exist"


def test_every_blind_except_says_why():
    """ruff's BLE makes an ``except Exception`` need a ``noqa: BLE001``; this makes the noqa carry its reason."""
    bare = []
    for path in sorted(ROOT.rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "noqa: BLE001" in line and not line.split("noqa: BLE001", 1)[1].strip(" -"):
                bare.append(f"{path.relative_to(ROOT.parent)}:{i}")
    assert not bare, f"blind excepts without a reason after 'noqa: BLE001 -': {bare}"


# Backend names live in deployinc/backends/ -----------------------------------------------------------------------

#: Backend-name literals allowed outside deployinc/backends/ (18 today: ``deployinc check``'s own table of targets in
#: trt/check.py, OrtRunner's default report names, the TensorRT cache folder's name, localisation's default proxy,
#: bench's module cache keys). The issue's target is under 25.
BACKEND_LITERALS_MAX = 18


def _literals(names: set[str], skip: tuple[str, ...]) -> dict[str, int]:
    """String constants (docstrings aside) equal to one of ``names``, per file of deployinc, files and folders in
    ``skip`` (paths relative to the package) left out."""
    out: dict[str, int] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if any(path == ROOT / s or (ROOT / s) in path.parents for s in skip):
            continue
        tree = ast.parse(path.read_text())
        docs = {
            id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
        }  # fmt: skip
        found = sum(1 for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names and id(n) not in docs)
        if found:
            out[str(path.relative_to(ROOT.parent))] = found
    return out


def _backend_literals() -> dict[str, int]:
    """String constants (docstrings aside) equal to a canonical backend name, per file outside deployinc/backends/.
    ``torch`` and ``openvino`` are left out: they are also the names of their Python packages (``require("torch")``,
    version records) and of other things (ONNX Runtime's ``openvino`` provider, Triton's ``openvino`` accelerator)."""
    from deployinc.backends import BACKENDS

    return _literals(set(BACKENDS) - {"torch", "openvino"}, ("backends",))


def test_backend_names_are_written_in_their_records():
    """A backend's name and what it can do are its record's (deployinc/backends/): code elsewhere asks the records
    instead of holding its own tuples of names."""
    found = _backend_literals()
    assert sum(found.values()) <= BACKEND_LITERALS_MAX, f"{sum(found.values())} backend-name literals outside deployinc/backends/: {found}"


def test_the_backend_literal_counter_counts_them(tmp_path, monkeypatch):
    pkg = tmp_path / "deployinc"
    (pkg / "backends").mkdir(parents=True)
    (pkg / "a.py").write_text('"""ort-cpu in a docstring is prose."""\nX = ("ort-cpu", "ort-trt", "torch")\n')
    (pkg / "backends" / "b.py").write_text('Y = "ort-cpu"\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    assert _backend_literals() == {"deployinc/a.py": 2}


# Precision names live in the precision table (deployinc/core/precisions.py) ----------------------------------------

#: Precision-name literals allowed outside the table and deployinc/backends/ (9 today, none of them a precision: the
#: ``int8`` data type of the int8 recipes' activations and weights in precision/recipe.py and precision/int8.py, and
#: torch's ``int8`` dtype name in models/loading.py's safetensors table). The issue's target is under 25.
PRECISION_LITERALS_MAX = 9


def _precision_literals() -> dict[str, int]:
    """String constants (docstrings aside) equal to a name of the precision table (``fp32``, ``int8``, the deploy
    artifacts ``int8-cpu``, ``int8-cpu-mixed``...), per file outside the table and deployinc/backends/ (whose
    records declare which precisions each backend computes, from which artifact)."""
    from deployinc.core.precisions import NAMES

    return _literals(set(NAMES), ("backends", "core/precisions.py"))


def test_precision_names_are_written_in_their_table():
    """A precision's name and what it is are the precision table's: code elsewhere refers to its constants."""
    found = _precision_literals()
    assert sum(found.values()) <= PRECISION_LITERALS_MAX, f"{sum(found.values())} precision-name literals outside the table: {found}"


def test_the_precision_literal_counter_counts_them(tmp_path, monkeypatch):
    pkg = tmp_path / "deployinc"
    (pkg / "backends").mkdir(parents=True)
    (pkg / "core").mkdir()
    (pkg / "a.py").write_text('"""fp32 in a docstring is prose."""\nX = ("fp32", "int8-cpu-mixed", "fp32-cpu", f"{Y}-fp16")\nZ = D["bf16"]\n')
    (pkg / "backends" / "b.py").write_text('Y = "int8"\n')
    (pkg / "core" / "precisions.py").write_text('FP32 = "fp32"\n')
    (pkg / "core" / "other.py").write_text('FP16 = "fp16"\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    assert _precision_literals() == {"deployinc/a.py": 3, "deployinc/core/other.py": 1}


# Markdown tables are built by deployinc/core/table.py -----------------------------------------------------------

#: Hand-built Markdown rule lines (``|---|---:|``) allowed outside core/table.py, in deployinc/ and scripts/.
MARKDOWN_RULES_MAX = 0
_RULE_CELL = re.compile(r"\|\s*:?-{3,}:?\s*\|")


def _markdown_rules(roots: tuple[Path, ...]) -> dict[str, int]:
    """String constants (f-string parts included) holding a Markdown table's rule cell, per file under ``roots``,
    ``deployinc/core/table.py`` (the one place that writes them) left out."""
    out: dict[str, int] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.parts[-3:] == ("deployinc", "core", "table.py"):
                continue
            tree = ast.parse(path.read_text())
            found = sum(1 for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and _RULE_CELL.search(n.value))
            if found:
                out[str(path.relative_to(root.parent))] = found
    return out


def test_markdown_tables_are_built_by_the_table_type():
    """One table type (deployinc/core/table.py) writes every Markdown table, so alignment and escaping are the same
    in every report and script: no hand-built ``|---|`` rule lines elsewhere."""
    found = _markdown_rules((ROOT, ROOT.parent / "scripts"))
    assert sum(found.values()) <= MARKDOWN_RULES_MAX, f"hand-built Markdown rule lines: {found}"


def test_the_markdown_rule_counter_counts_them(tmp_path):
    (tmp_path / "deployinc" / "core").mkdir(parents=True)
    (tmp_path / "deployinc" / "core" / "table.py").write_text('R = "|---|"\n')
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "a.py").write_text('L = ["| a | b |", "|---|---:|", f"|:---:|{1}"]\nY = "a | b"\nZ = "----"\n')
    assert _markdown_rules((tmp_path / "deployinc", tmp_path / "scripts")) == {"scripts/a.py": 2}
