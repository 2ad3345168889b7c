"""The screen form of a :class:`~deployinc.verify.core.VerifyReport`: a table per backend and batch size, the
tolerance next to the verdict with the measured values, skipped backends with their reasons, the checks, the
localisation and the diagnosis. Plain text (it reads the same in a terminal, a CI log and a test)."""

from __future__ import annotations

from typing import Any

from ..core.precisions import FP32


def _f(v: Any, fmt: str) -> str:
    """``v`` in ``fmt``; a missing value is a ``-`` padded to the field's width, so the columns stay aligned."""
    if v is None:
        width = fmt.split(".")[0].lstrip("<>^")
        return format("-", ">" + width) if width.isdigit() else "-"
    try:
        return format(v, fmt)
    except (TypeError, ValueError):
        return str(v)


def render(report: Any) -> str:
    """The report as text lines."""
    lines: list[str] = []
    ref = report.reference
    lines.append(f"verify {report.model}")
    if ref is not None:
        lines.append(f"  reference: {ref.description}")
        for n in ref.notes:
            lines.append(f"    {n}")
    inp = report.inputs
    src = inp.get("source")
    what = {
        "natural": f"{inp.get('samples')} generated natural-statistics images (seed {inp.get('seed')})",
        "data": f"{inp.get('used')} image(s) from {inp.get('folder')}"
        + (f" ({len(inp.get('skipped') or [])} unreadable skipped)" if inp.get("skipped") else ""),
        "uniform": f"{inp.get('samples')} uniform-noise inputs (seed {inp.get('seed')})",
        "normal": f"{inp.get('samples')} normal-noise inputs (seed {inp.get('seed')})",
        "file": f"{inp.get('samples')} inputs from {inp.get('file')}",
    }.get(src, str(src))
    lines.append(
        f"  inputs: {what}, {'x'.join(str(d) for d in inp.get('shape', []))}, "
        f"mean {_vec(inp.get('mean'))} std {_vec(inp.get('std'))}"
    )
    lines.append(f"  precision: {report.precision} ({report.precision_source}); batches: {', '.join(map(str, report.batches))}")
    if getattr(report, "relative_to", ""):
        lines.append(f"  judged against: {report.relative_to}")
    floor = getattr(report, "floor", None)
    if floor is not None:
        lines.append(f"  float32 noise floor: {floor.line()}" + (f"; {floor.reason}" if floor.status == "measured" and floor.reason else ""))
    elif report.precision == FP32 and report.reference is not None and getattr(report.reference, "module", None) is not None:
        lines.append("  float32 noise floor: not needed (every fp32 backend is within the preset's max_rel)")
    lines.append("")
    header = f"  {'backend':<12}{'batch':>5}  {'output':<10}{'max_abs':>10}{'max_rel':>10}{'cosine':>11}{'top1':>6}{'top5':>6}{'nan/inf':>9}  verdict"
    lines.append(header)
    for b in report.backends:
        if b.status in ("skipped", "crashed"):
            lines.append(f"  {b.name:<12}{'-':>5}  {b.status}: {b.reason}")
            continue
        for r in b.results:
            for c in r.outputs:
                verdict = "PASS" if c.passed else "FAIL"
                lines.append(
                    f"  {b.name:<12}{r.batch:>5}  {c.name[:10]:<10}{_f(c.max_abs, '10.2e')}{_f(c.max_rel, '10.2e')}"
                    f"{_f(c.cosine, '11.6f')}{_f(c.top1, '6.2f')}{_f(c.top5, '6.2f')}{c.nan:>5}/{c.inf:<3}  {verdict}"
                )
    lines.append("")
    for b in report.backends:
        if b.status == "crashed":
            lines.append(f"  {b.name}: FAIL (crashed: {b.reason})")
            continue
        if b.status != "ran" or b.tolerance is None:
            continue
        worst_rel = max((c.max_rel for r in b.results for c in r.outputs), default=None)
        worst_cos = min((c.cosine for r in b.results for c in r.outputs), default=None)
        t1 = [c.top1 for r in b.results for c in r.outputs if c.top1 is not None]
        floor = getattr(report, "floor", None)
        rel = f"max_rel={_f(worst_rel, '.1e')}"
        if floor is not None and floor.worst_rel is not None and b.budget_note:
            rel += f" (torch fp32 vs fp64: {floor.worst_rel:.1e}; {b.budget_note})"
        measured = f"{rel} cos={_f(worst_cos, '.6f')}" + (f" top1={min(t1):.2f}" if t1 else "")
        verdict = "PASS" if b.passed else "FAIL"
        lines.append(f"  {b.name}: {verdict} {measured}  [{b.tolerance.name}: {b.tolerance.describe()}]")
        for r in b.results:
            for c in r.outputs:
                if c.failures:
                    lines.append(f"    batch {r.batch} {c.name} failed: {'; '.join(c.failures)}")
    for b in report.skipped:
        lines.append(f"  {b.name}: SKIPPED ({b.reason})" + (f" — {b.hint}" if b.hint else ""))
    for c in report.checks:
        lines.append(f"  {c.name}: {c.status.upper()} {c.message}")
    loc = report.localization
    if loc is not None:
        lines.append("")
        lines.append(
            f"  localisation on {loc.backend} ({loc.method}, {loc.mapped} mapped points, {loc.samples} samples, "
            f"{loc.runs} run(s), {loc.seconds:.1f} s), layer budget {loc.budget.describe()}:"
        )
        lines.append(f"    {loc.summary()}")
        if loc.first is not None:
            lines.append(f"    first over budget: {loc.first.line()}")
            if loc.last_good is not None:
                lines.append(f"    last within budget: {loc.last_good.line()}")
            else:
                lines.append("    no earlier point agrees: the departure starts at the model's input side")
            if loc.suspects:
                lines.append(f"    ONNX nodes between them: {', '.join(loc.suspects[:8])}" + (" ..." if len(loc.suspects) > 8 else ""))
        if loc.overflow:
            lines.append(f"    beyond fp16's 65504: {', '.join(p.label for p in loc.overflow[:6])}")
        for n in loc.notes:
            lines.append(f"    note: {n}")
    acc = getattr(report, "accuracy", None)
    if acc is not None:
        lines.append("")
        lines.extend("  " + ln for ln in acc.lines())
    if report.diagnosis:
        lines.append("")
        for d in report.diagnosis:
            lines.append(f"  diagnosis: {d}")
    for n in report.notes:
        lines.append(f"  note: {n}")
    for reason in getattr(report, "inconclusive", None) or []:
        lines.append(f"  inconclusive: {reason}")
    lines.append("")
    ran = report.ran
    nres = sum(len(r.outputs) for b in ran for r in b.results)
    npass = sum(1 for b in ran for r in b.results for c in r.outputs if c.passed)
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    verdict = report.verdict
    lines.append(
        f"{verdict}: {npass} of {nres} comparisons passed on {len(ran)} backend(s){skipped} "
        f"in {report.timings.get('total', 0):.1f} s"
    )
    return "\n".join(lines)


def _vec(v: Any) -> str:
    if not v:
        return "?"
    v = list(v)
    if len(v) > 6 and len(set(v)) == 1:
        return f"[{v[0]:.4g}] x {len(v)}"
    shown = ", ".join(f"{x:.4g}" for x in v[:6])
    return "[" + shown + (f", ... ({len(v)} values)" if len(v) > 6 else "") + "]"
