"""The regression gate: compare a run with an earlier JSON report and name the backends that got slower.

Rows are matched on (backend, precision, batch size, mode); both must have run. A row regresses when its p50
latency exceeds the baseline's p50 times ``max_slowdown``. The baseline must be of the same model (model name and
input size); a different file of the same model (re-exported) is compared, with a note. Environments that differ
(CPU model, GPU, thread count) are compared too, with a note, since the numbers then mean less.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from .cpu_link import LINK_CHANGE
from .report import FORMAT, UNSTEADY_LIMIT, BenchReport, BenchRow


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
        BadInputError: Missing, not JSON, or not a deployinc bench report.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"baseline file {p} does not exist", hint="write one with deployinc bench MODEL --json FILE")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"baseline file {p} is not JSON ({exc})", hint="give a report written by deployinc bench --json") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("results"), list):
        raise BadInputError(
            f"baseline file {p} is not a deployinc bench report (format {data.get('format') if isinstance(data, dict) else None!r})",
            hint=f"give a report written by deployinc bench --json (format {FORMAT})",
        )
    try:
        return BenchReport.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"baseline file {p} has malformed results ({exc})", hint="write it again with deployinc bench --json") from exc


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
    a, b = current.model, baseline.model
    if a.get("name") != b.get("name") or list(a.get("input_chw") or []) != list(b.get("input_chw") or []):
        raise BadInputError(
            f"baseline {baseline_path} is a report on {b.get('name')} (input {b.get('input_chw')}), "
            f"not on {a.get('name')} (input {a.get('input_chw')})",
            hint="compare with a report of the same model",
        )
    notes = []
    if a.get("sha256") and b.get("sha256") and a.get("sha256") != b.get("sha256"):
        notes.append("the ONNX file differs from the baseline's (re-exported?): compared as the same model")
    ea, eb = current.environment, baseline.environment
    cpu_a, cpu_b = (ea.get("cpu_bench") or {}).get("model"), (eb.get("cpu_bench") or {}).get("model")
    if cpu_a != cpu_b:
        notes.append(f"the CPU differs from the baseline's ({cpu_a} vs {cpu_b})")
    gpu_a = [g.get("name") for g in ea.get("gpus") or []]
    gpu_b = [g.get("name") for g in eb.get("gpus") or []]
    if gpu_a != gpu_b:
        notes.append(f"the GPUs differ from the baseline's ({gpu_a or 'none'} vs {gpu_b or 'none'})")
    if current.config.get("threads") != baseline.config.get("threads"):
        notes.append(f"thread counts differ ({current.config.get('threads')} vs {baseline.config.get('threads')})")
    link_a, link_b = _round_trip(current), _round_trip(baseline)
    if link_a and link_b and max(link_a, link_b) / min(link_a, link_b) > LINK_CHANGE:
        notes.append(
            f"the CPUs' round trip differs from the baseline's ({link_a:.0f} vs {link_b:.0f} ns): the host placed the "
            "CPUs differently, which changes multi-threaded timings"
        )
    return notes


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
    for r in current.ok_rows():
        b = base.get(r.key())
        if b is None or b.stats is None or r.stats is None:
            continue
        c = Comparison(r.key(), b.stats.p50, r.stats.p50)
        result.compared.append(c)
        if c.ratio > max_slowdown:
            result.regressions.append(c)
            shaky = [name for name, row in (("this run", r), ("the baseline", b)) if row.unsteady()]
            if shaky:
                result.notes.append(
                    f"{c.label()}: the machine changed speed during {' and '.join(shaky)} (p50 of its stretches "
                    f"disagree by more than {UNSTEADY_LIMIT:.0%}): the slowdown may be the machine's, not the model's; rerun on a quiet machine"
                )
    if not result.compared:
        raise BadInputError(
            f"no measurement in common with baseline {baseline_path} (it has "
            f"{', '.join(sorted({r.label() for r in baseline.ok_rows()})) or 'no successful rows'})",
            hint="run with the same --backends, --batch and --precision as the baseline",
        )
    missing = [k for k in base if k not in {c.key for c in result.compared}]
    if missing:
        result.notes.append(f"{len(missing)} baseline row(s) not measured in this run")
    return result
