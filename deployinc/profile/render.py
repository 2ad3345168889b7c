"""Render a :class:`~deployinc.profile.ProfileReport` as tables: rich when importable, plain text otherwise."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..core.table import Table
from ..lazy import available


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def module_rows(report: Any, depth: int = 1) -> list[list[str]]:
    """Rows ``[module, type, params, MACs, % MACs, params fused]``: submodules to ``depth`` levels, Inception
    modules expanded into their branches, and a total row."""
    loaded = report.loaded
    fused = report.fused
    total_macs = loaded.total.macs
    rows: list[list[str]] = []
    for m in loaded.modules:
        level = m.path.count(".")
        if level >= depth:
            continue
        f = fused.module(m.path) if fused is not None else None
        rows.append(
            [
                "  " * level + m.path,
                m.type,
                _n(m.params),
                _n(m.macs),
                _pct(m.macs, total_macs),
                _n(f.params) if f is not None else ("removed" if fused is not None else "-"),
            ]
        )
        block = loaded.blocks.get(m.path)
        if block is not None:
            fblock = fused.blocks.get(m.path) if fused is not None else None
            for name, b in block.branches.items():
                fb = fblock.branches.get(name) if fblock is not None else None
                rows.append(
                    [
                        "  " * (level + 1) + name,
                        b.type,
                        _n(b.params),
                        _n(b.macs),
                        _pct(b.macs, total_macs),
                        _n(fb.params) if fb is not None else "-",
                    ]
                )
    rows.append(
        [
            "total",
            loaded.total.type,
            _n(loaded.total.params),
            _n(total_macs),
            "100.0%" if total_macs else "-",
            _n(fused.total.params) if fused is not None else "-",
        ]
    )
    return rows


MODULE_HEADERS = ["module", "type", "params", "MACs", "% MACs", "params fused"]
NAIVE_HEADERS = ["module", "in ch", "MACs", "naive MACs", "saving", "conv params", "naive params", "out ch", "naive out ch"]


def naive_rows(report: Any) -> list[list[str]]:
    """Rows of the naive comparison table."""
    return [
        [
            n.path,
            str(n.in_channels),
            _n(n.macs),
            _n(n.naive_macs),
            f"-{n.saving_pct:.1f}%",
            _n(n.params),
            _n(n.naive_params),
            str(n.out_channels),
            str(n.naive_out_channels),
        ]
        for n in report.naive
    ]


def summary_lines(report: Any) -> list[str]:
    """A few lines of totals under the tables."""
    shape = "x".join(str(v) for v in report.input_shape)
    lines = [
        f"{report.model}: {report.params:,} parameters, {report.macs:,} multiply-adds "
        f"({report.gmacs:.3f} G) for an input of {shape}"
    ]
    heads = ", ".join(report.aux_heads)
    if report.aux_heads and report.training:
        lines.append(
            f"  training-time model: auxiliary heads {heads} included; "
            f"deploy-time, without them: {report.params_inference:,} parameters"
        )
    elif report.aux_heads:
        lines.append(
            f"  deploy-time model: auxiliary heads {heads} removed, as export prepares it; "
            f"training-time, with them (--training): {report.params_training:,} parameters"
        )
    bn = report.loaded.total.bn_elements
    if report.fused is not None:
        f = report.fused.total
        lines.append(
            f"  after deployinc's fusions: {f.params:,} parameters, {f.macs:,} multiply-adds, "
            f"BatchNorm work {bn:,} -> {f.bn_elements:,} elements"
        )
    if report.fused_note:
        lines.append(f"  prepare: {report.fused_note}")
    for n in report.naive:
        lines.append(
            f"  {n.path}: naive {n.naive_macs:,} vs {n.macs:,} multiply-adds with 1x1 reductions "
            f"(-{n.saving_pct:.1f}%); conv weights {n.naive_params:,} vs {n.params:,} (-{n.params_saving_pct:.1f}%)"
        )
    return lines


def _plain_table(headers: list[str], rows: list[list[str]], out: TextIO, numeric_from: int = 2) -> None:
    out.write(Table.numeric_from(headers, rows, numeric_from).text(rule=True, strip=True) + "\n")


def render(report: Any, depth: int = 1, out: TextIO | None = None, use_rich: bool | None = None) -> None:
    """Print the module table, the naive comparison (if any) and the summary.

    Args:
        report: The report.
        depth: Submodule levels shown (Inception modules are always expanded into branches).
        out: Stream (default: stdout).
        use_rich: Force rich on or off (default: when importable).
    """
    out = out if out is not None else sys.stdout
    rich_ok = available("rich") if use_rich is None else use_rich
    tables = [("", MODULE_HEADERS, module_rows(report, depth), 2)]
    if report.naive:
        tables.append(("without 1x1 reductions (convolutions only)", NAIVE_HEADERS, naive_rows(report), 1))
    if rich_ok:
        from rich.console import Console

        console = Console(file=out, width=max(140, getattr(out, "columns", 0) or 0), highlight=False, soft_wrap=False)
        for title, headers, rows, numeric_from in tables:
            console.print(Table.numeric_from(headers, rows, numeric_from, title=title or None).rich(no_wrap=True, show_lines=False))
        for line in summary_lines(report):
            console.print(line, markup=False)
        return
    for title, headers, rows, numeric_from in tables:
        if title:
            out.write(f"\n{title}\n")
        _plain_table(headers, rows, out, numeric_from)
    out.write("\n")
    for line in summary_lines(report):
        out.write(line + "\n")
