"""The regression gate: compare a run with an earlier JSON report and name the backends that got slower.

Rows are matched on (backend, precision, batch size, mode); both must have run. A row regresses when its p50
latency exceeds the baseline's p50 times ``max_slowdown``. The baseline must be of the same model (model name and
input size); a different file of the same model (re-exported) is compared, with a note. Environments that differ
(CPU model, GPU, thread count) are compared too, with a note, since the numbers then mean less.
"""

from __future__ import annotations

import json
import os
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.precisions import FP32
from ..errors import BadInputError
from .cpu_link import LINK_CHANGE
from .report import FORMAT, BenchReport, BenchRow
from .timing import Stats


@dataclass
class Comparison:
    """One matched row: the baseline's and the current p50 (ms) and their ratio."""

    key: tuple[str, str, int | None, str | None]
    baseline_p50: float
    current_p50: float

    @property
    def ratio(self) -> float:
        return self.current_p50 / self.baseline_p50 if self.baseline_p50 > 0 else float("inf")

    def label(self) -> str:
        b, p, n, m = self.key
        return f"{b} {p} b{n} {m}"


@dataclass
class RegressionResult:
    """Outcome of :func:`compare`."""

    max_slowdown: float
    compared: list[Comparison] = field(default_factory=list)
    regressions: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline_path: str = ""

    @property
    def passed(self) -> bool:
        return not self.regressions

    def backends(self) -> list[str]:
        """Backends with at least one regression, in first-seen order."""
        return list(dict.fromkeys(c.key[0] for c in self.regressions))

    def lines(self) -> list[str]:
        out = []
        for c in self.compared:
            flag = "SLOWER" if c in self.regressions else "ok"
            out.append(f"{c.label()}: p50 {c.current_p50:.3f} ms vs {c.baseline_p50:.3f} ms (x{c.ratio:.3f}) {flag}")
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "baseline": self.baseline_path,
            "max_slowdown": self.max_slowdown,
            "passed": self.passed,
            "regressed_backends": self.backends(),
            "compared": [{"row": c.label(), "baseline_p50_ms": c.baseline_p50, "p50_ms": c.current_p50, "ratio": c.ratio} for c in self.compared],
            "notes": self.notes,
        }


def load_baseline(path: str | os.PathLike[str]) -> BenchReport:
    """Read an earlier ``deployinc bench --json`` report.

    Raises:
        BadInputError: Missing, not JSON, not a deployinc bench report, or a field of the wrong type (named).
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"baseline file {p} does not exist", hint="write one with deployinc bench MODEL --json FILE")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInputError(f"baseline file {p} is not JSON ({str(exc)[:120]})", hint="give a report written by deployinc bench --json") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("results"), list):
        raise BadInputError(
            f"baseline file {p} is not a deployinc bench report (format {data.get('format') if isinstance(data, dict) else None!r})",
            hint=f"give a report written by deployinc bench --json (format {FORMAT})",
        )
    problem = report_problem(data)
    if problem is not None:
        raise BadInputError(f"baseline file {p}: {problem}", hint="give a report written by deployinc bench --json, unedited (or write it again)")
    try:
        return BenchReport.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"baseline file {p} has malformed results ({exc})", hint="write it again with deployinc bench --json") from exc


def _type_name(v: object) -> str:
    return "null" if v is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(v), type(v).__name__)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def report_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a bench report read from JSON (the first problem, naming the field), or
    None. Values are checked for type only: a p50 of 0 or NaN is a row :func:`compare` leaves out, with a note."""
    for key in ("model", "config", "environment"):
        if key in data and not isinstance(data[key], dict):
            return f"'{key}' is {_type_name(data[key])}, not an object"
    if "created" in data and not isinstance(data["created"], str):
        return f"'created' is {_type_name(data['created'])}, not a string"
    for i, row in enumerate(data["results"]):
        where = f"results[{i}]"
        if not isinstance(row, dict):
            return f"{where} is {_type_name(row)} ({str(row)[:40]}), not an object"
        for key in ("backend", "precision", "status"):
            if not isinstance(row.get(key), str):
                return f"{where}.{key} is {_type_name(row.get(key))}, not a string"
        for key, kinds in (("batch", (int,)), ("mode", (str,)), ("reason", (str,))):
            v = row.get(key)
            if v is not None and (not isinstance(v, kinds) or isinstance(v, bool)):
                return f"{where}.{key} is {_type_name(v)} ({str(v)[:40]})"
        stats = row.get("stats")
        if stats is not None:
            if not isinstance(stats, dict):
                return f"{where}.stats is {_type_name(stats)}, not an object"
            for k in Stats.__dataclass_fields__:
                if k not in stats:
                    return f"{where}.stats has no '{k}'"
                if not _is_num(stats[k]):
                    return f"{where}.stats.{k} is {_type_name(stats[k])} ({str(stats[k])[:40]}), not a number"
        elif row.get("status") == "ok":
            return f"{where} is a measured row ('status': 'ok') without 'stats'"
        for key in ("stretch_p50_ms", "samples_ms"):
            v = row.get(key)
            if v is not None and (not isinstance(v, list) or not all(_is_num(x) for x in v)):
                return f"{where}.{key} is not a list of numbers"
        for key in ("speedup", "speedup_min", "activate_s", "first_call_s"):
            v = row.get(key)
            if v is not None and not _is_num(v):
                return f"{where}.{key} is {_type_name(v)}, not a number"
        if row.get("notes") is not None and not isinstance(row.get("notes"), list):
            return f"{where}.notes is {_type_name(row.get('notes'))}, not a list"
    return None


def check_max_slowdown(value: float) -> None:
    """Refuse a slowdown factor below 1 (1.10 allows 10% slower).

    Raises:
        BadInputError: ``value`` < 1 or not finite.
    """
    if not (value >= 1.0 and value < float("inf")):
        raise BadInputError(f"--max-slowdown {value} must be a factor of at least 1", hint="1.10 allows runs up to 10% slower than the baseline")


def check_same_model(current: BenchReport, baseline: BenchReport, baseline_path: str) -> list[str]:
    """Refuse a baseline of another model; return notes on lesser differences.

    Raises:
        BadInputError: Different model name or input size.
    """
    a, b = _obj(current.model), _obj(baseline.model)
    if a.get("name") != b.get("name") or list(a.get("input_chw") or []) != list(b.get("input_chw") or []):
        raise BadInputError(
            f"baseline {baseline_path} is a report on {b.get('name')} (input {b.get('input_chw')}), "
            f"not on {a.get('name')} (input {a.get('input_chw')})",
            hint="compare with a report of the same model",
        )
    notes = []
    if a.get("sha256") and b.get("sha256") and a.get("sha256") != b.get("sha256"):
        notes.append("the ONNX file differs from the baseline's (re-exported?): compared as the same model")
    ea, eb = _obj(current.environment), _obj(baseline.environment)
    cpu_a, cpu_b = _obj(ea.get("cpu_bench")).get("model"), _obj(eb.get("cpu_bench")).get("model")
    if cpu_a != cpu_b:
        notes.append(f"the CPU differs from the baseline's ({cpu_a} vs {cpu_b})")
    gpu_a = [_obj(g).get("name") for g in _list(ea.get("gpus"))]
    gpu_b = [_obj(g).get("name") for g in _list(eb.get("gpus"))]
    if gpu_a != gpu_b:
        notes.append(f"the GPUs differ from the baseline's ({gpu_a or 'none'} vs {gpu_b or 'none'})")
    ta, tb = _obj(current.config).get("threads"), _obj(baseline.config).get("threads")
    if ta != tb:
        notes.append(f"thread counts differ ({ta} vs {tb})")
    fa, fb = _obj(current.config).get("float_precision"), _obj(baseline.config).get("float_precision")
    if fa != fb:
        notes.append(f"an int8 file's float layers ran in {fa or FP32} here and in {fb or FP32} in the baseline (--float-precision)")
    link_a, link_b = _round_trip(current), _round_trip(baseline)
    if link_a and link_b and max(link_a, link_b) / min(link_a, link_b) > LINK_CHANGE:
        notes.append(
            f"the CPUs' round trip differs from the baseline's ({link_a:.0f} vs {link_b:.0f} ns): the host placed the "
            "CPUs differently, which changes multi-threaded timings"
        )
    return notes


def _obj(v: Any) -> dict[str, Any]:
    """``v`` when it is a dict, else {} (a field of an older or hand-edited report)."""
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _usable_p50(row: BenchRow) -> bool:
    return row.stats is not None and _is_num(row.stats.p50) and math.isfinite(row.stats.p50) and row.stats.p50 > 0


def _round_trip(report: BenchReport) -> float | None:
    """Mean of the cross-CPU round trips recorded before and after a run (None when not recorded)."""
    values = [float(v) for v in report.round_trips().values() if v is not None and v > 0]
    return sum(values) / len(values) if values else None


def compare(current: BenchReport, baseline: BenchReport, max_slowdown: float, baseline_path: str = "") -> RegressionResult:
    """Compare two reports of the same model (see the module docstring).

    Raises:
        BadInputError: Another model, or no row in common.
    """
    check_max_slowdown(max_slowdown)
    result = RegressionResult(max_slowdown=max_slowdown, baseline_path=baseline_path)
    result.notes = check_same_model(current, baseline, baseline_path)
    base: dict[tuple, BenchRow] = {r.key(): r for r in baseline.ok_rows()}
    unusable: list[str] = []
    for r in current.ok_rows():
        b = base.get(r.key())
        if b is None or b.stats is None or r.stats is None:
            continue
        if not _usable_p50(b) or not _usable_p50(r):
            bad, row = ("the baseline's", b) if not _usable_p50(b) else ("this run's", r)
            assert row.stats is not None
            unusable.append(f"{r.label()}: not compared: {bad} p50 is {row.stats.p50!r} ms (a ratio needs a positive, finite latency)")
            continue
        c = Comparison(r.key(), b.stats.p50, r.stats.p50)
        result.compared.append(c)
        if c.ratio > max_slowdown:
            result.regressions.append(c)
            shaky = [f"{name} ({row.unsteady_reason()})" for name, row in (("this run", r), ("the baseline", b)) if row.unsteady_reason()]
            if shaky:
                result.notes.append(
                    f"{c.label()}: the machine changed speed during {' and '.join(shaky)}: the slowdown may be the "
                    "machine's, not the model's; rerun on a quiet machine"
                )
    result.notes += unusable
    if not result.compared:
        if unusable:
            raise BadInputError(
                f"no usable measurement in common with baseline {baseline_path}: {'; '.join(unusable[:3])}",
                hint="write the baseline again with deployinc bench --json",
            )
        raise BadInputError(
            f"no measurement in common with baseline {baseline_path} (it has "
            f"{', '.join(sorted({r.label() for r in baseline.ok_rows()})) or 'no successful rows'})",
            hint="run with the same --backends, --batch and --precision as the baseline",
        )
    missing = [k for k in base if k not in {c.key for c in result.compared} and k not in {r.key() for r in current.ok_rows()}]
    if missing:
        result.notes.append(f"{len(missing)} baseline row(s) not measured in this run")
    return result
