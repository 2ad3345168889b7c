"""The benchmark report: rows of results, the run's settings and environment, and its writers.

One :class:`BenchRow` per (backend, precision, batch size, mode) measured, and one per backend and precision that
was skipped (with the reason) or failed. Writers: JSON (everything, per-iteration samples included; the input of
``--baseline``), CSV (one line per row, no samples), Markdown, a table on screen (rich when installed), and a PNG
plot of latency against batch size (matplotlib, optional).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..lazy import require
from .cpu_link import link_change_line
from .environment import environment_lines
from .timing import UNSTEADY_LIMIT, Stats, unsteady_reasons
from ..core.precisions import FP32
from ..core.table import Table

FORMAT = "deployinc-bench/1"
MODES = ("compute", "e2e")
#: The mark after a figure that rests on an unsteady measurement (see :meth:`BenchRow.unsteady_reasons`).
UNSTEADY_MARK = "!"


@dataclass
class BenchRow:
    """One measurement, or one backend that did not run.

    Attributes:
        backend: Backend name (``torch``, ``torch-fused``, ``ort-cpu``...).
        precision: ``fp32``, ``fp16``, ``bf16`` (a compute precision: ort-openvino) or ``int8``.
        batch: Batch size (None for a skip that concerns every batch size).
        mode: ``compute`` (device-resident inputs and outputs; GPU only) or ``e2e`` (host arrays in and out).
        status: ``ok``, ``skipped`` or ``failed``.
        reason: Why a backend was skipped or failed.
        device: ``cpu`` or ``cuda``.
        stats: Latency statistics (ms) and throughput (images/s).
        samples_ms: Every per-iteration latency, in order.
        activate_s: First-run cost paid once: session creation, engine build, model compilation (on the row of
            the batch size that built the backend; None where a built backend was reused).
        first_call_s: First-run cost paid on the first inference (lazy build, algorithm search, graph capture).
        speedup: p50 of the eager baseline divided by this row's p50.
        speedup_vs: Which baseline row (``torch fp32 b1 e2e``).
        speedup_min: The same ratio of minimum latencies: less sensitive to a busy machine than the p50 ratio.
        cuda_graph: Whether a CUDA graph was replayed.
        notes: How the backend ran (IO binding, thread count...).
        stretch_p50_ms: p50 of consecutive stretches of the samples (one per round, or three), in time order:
            stretches that disagree mean the machine changed speed during the run (see :meth:`unsteady`).
        load_average: The machine's 1-minute load average around the measurement (the larger of the readings
            before and after it); None where it could not be read.
        cpus: The machine's core count, for the load average.
    """

    backend: str
    precision: str
    batch: int | None
    mode: str | None
    status: str
    reason: str | None = None
    device: str | None = None
    stats: Stats | None = None
    samples_ms: list[float] | None = None
    activate_s: float | None = None
    first_call_s: float | None = None
    speedup: float | None = None
    speedup_vs: str | None = None
    speedup_min: float | None = None
    cuda_graph: bool = False
    notes: list[str] = field(default_factory=list)
    stretch_p50_ms: list[float] | None = None
    load_average: float | None = None
    cpus: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self) -> tuple[str, str, int | None, str | None]:
        return (self.backend, self.precision, self.batch, self.mode)

    def label(self) -> str:
        return f"{self.backend} {self.precision} b{self.batch} {self.mode}"

    def unsteady_reasons(self, limit: float = UNSTEADY_LIMIT) -> list[str]:
        """Why this row's figures are unsteady (:func:`~deployinc.bench.timing.unsteady_reasons`: its rounds
        disagree by more than ``limit``, its p50 is far above its minimum, the machine's load was above its core
        count); empty when steady or not measured."""
        if not self.ok:
            return []
        s = self.stats
        return unsteady_reasons(
            stretch_p50_ms=self.stretch_p50_ms, p50=s.p50 if s else None, min_ms=s.min if s else None,
            load=self.load_average, cpus=self.cpus, limit=limit,
        )  # fmt: skip

    def unsteady(self, limit: float = UNSTEADY_LIMIT) -> str | None:
        """A sentence naming this row and why its figures are unsteady (:meth:`unsteady_reasons`), else None."""
        reasons = self.unsteady_reasons(limit)
        if not reasons:
            return None
        p = self.stretch_p50_ms
        if p and reasons[0].startswith("rounds disagree"):
            lo, hi = min(p), max(p)
            reasons[0] = (
                f"p50 over {len(p)} stretches of the run ranged {lo:.2f}-{hi:.2f} ms ({100 * (hi / lo - 1):.0f}% apart; "
                f"first {p[0]:.2f}, last {p[-1]:.2f}): the machine changed speed during the run"
            )
        return (
            f"{self.label()}: {'; '.join(reasons)}: its times and the speedups that use them (marked {UNSTEADY_MARK}) "
            "are not steady figures; rerun on a quiet machine before quoting them"
        )

    def unsteady_reason(self, limit: float = UNSTEADY_LIMIT) -> str | None:
        """The short form of :meth:`unsteady` for JSON and CSV: the reasons joined (None when the row is steady or
        not measured)."""
        return "; ".join(self.unsteady_reasons(limit)) or None

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict() if self.stats else None
        if not samples:
            d.pop("samples_ms")
        # derived, for readers of the JSON (not read back: recomputed from stretch_p50_ms)
        reason = self.unsteady_reason()
        d["unsteady"] = reason is not None
        d["unsteady_reason"] = reason
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchRow:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        kw["stats"] = Stats.from_dict(d["stats"]) if d.get("stats") else None
        return cls(**kw)


@dataclass
class BenchReport:
    """A whole benchmark run."""

    model: dict[str, Any]
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[BenchRow] = field(default_factory=list)
    created: str = ""
    format: str = FORMAT

    # queries --------------------------------------------------------------------------------------------------------
    def ok_rows(self) -> list[BenchRow]:
        return [r for r in self.rows if r.ok]

    def find(self, backend: str, precision: str, batch: int | None, mode: str | None) -> BenchRow | None:
        return next((r for r in self.rows if r.ok and r.key() == (backend, precision, batch, mode)), None)

    def skipped(self) -> list[BenchRow]:
        return [r for r in self.rows if r.status == "skipped"]

    def failed(self) -> list[BenchRow]:
        return [r for r in self.rows if r.status == "failed"]

    def compute_speedups(self, baseline: str = "torch") -> None:
        """Fill ``speedup``: the eager baseline's p50 over each row's, same batch and mode, same precision when the
        baseline ran at it, else fp32."""
        for r in self.ok_rows():
            base = self.find(baseline, r.precision, r.batch, r.mode) or self.find(baseline, FP32, r.batch, r.mode)
            if base is None or base.stats is None or r.stats is None or r.stats.p50 <= 0:
                r.speedup, r.speedup_vs, r.speedup_min = None, None, None
                continue
            r.speedup = base.stats.p50 / r.stats.p50
            r.speedup_min = base.stats.min / r.stats.min if r.stats.min > 0 else None
            r.speedup_vs = base.label()

    def speedup_unsteady(self, row: BenchRow) -> list[str]:
        """The measurements a row's speedup rests on that are unsteady (the row's own, its baseline's), named."""
        if row.speedup is None:
            return []
        base = next((b for b in self.ok_rows() if b.label() == row.speedup_vs), None)
        sides = [row] + ([base] if base is not None and base is not row else [])
        return [x.label() for x in sides if x.unsteady_reasons()]

    # serialisation -------------------------------------------------------------------------------------------------
    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        return {
            "format": self.format,
            "created": self.created,
            "model": self.model,
            "config": self.config,
            "environment": self.environment,
            "results": [r.to_dict(samples) for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchReport:
        return cls(
            model=d.get("model", {}),
            config=d.get("config", {}),
            environment=d.get("environment", {}),
            rows=[BenchRow.from_dict(r) for r in d.get("results", [])],
            created=d.get("created", ""),
            format=d.get("format", ""),
        )

    def to_csv(self) -> str:
        cols = [
            "model", "backend", "precision", "batch", "mode", "status", "device", "cuda_graph",
            "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "iters", "throughput_img_s",
            "speedup_vs_eager", "speedup_vs", "speedup_min_vs_eager", "activate_s", "first_call_s", "threads", "reason",
            "unsteady", "unsteady_reason",
        ]  # fmt: skip
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        threads = self.config.get("threads")
        for r in self.rows:
            s = r.stats
            w.writerow(
                [
                    self.model.get("name"), r.backend, r.precision, r.batch if r.batch is not None else "", r.mode or "",
                    r.status, r.device or "", int(r.cuda_graph),
                    *(_num(getattr(s, k)) if s else "" for k in ("p50", "p90", "p99", "mean", "std", "min", "max")),
                    s.iters if s else "", _num(s.throughput) if s else "",
                    _num(r.speedup), r.speedup_vs or "", _num(r.speedup_min), _num(r.activate_s), _num(r.first_call_s),
                    threads if threads is not None else "", r.reason or "",
                    (int(r.unsteady_reason() is not None) if r.ok else ""), r.unsteady_reason() or "",
                ]
            )  # fmt: skip
        return buf.getvalue()

    # human-readable ----------------------------------------------------------------------------------------------
    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["backend", "prec", "batch", "mode", "p50 ms", "p90 ms", "p99 ms", "mean±std ms", "min ms",
                "img/s", "first run s", "vs eager"]  # fmt: skip
        body = []
        for r in self.rows:
            if not r.ok:
                continue
            s = r.stats
            assert s is not None
            first = [x for x in (r.activate_s, r.first_call_s) if x is not None]
            mark = UNSTEADY_MARK if r.unsteady_reasons() else ""
            speedup_mark = UNSTEADY_MARK if self.speedup_unsteady(r) else ""
            body.append(
                [
                    r.backend + (" +graph" if r.cuda_graph else ""), r.precision, str(r.batch), r.mode or "",
                    f"{s.p50:.2f}{mark}", f"{s.p90:.2f}", f"{s.p99:.2f}", f"{s.mean:.2f}±{s.std:.2f}", f"{s.min:.2f}",
                    f"{s.throughput:.1f}", f"{sum(first):.2f}" if first else "",
                    f"{r.speedup:.2f}x{speedup_mark}" if r.speedup is not None else "-",
                ]
            )  # fmt: skip
        return head, body

    def unsteady_legend(self) -> str | None:
        """What the mark means, when a figure of the table carries it."""
        if not any(r.unsteady_reasons() for r in self.ok_rows()):
            return None
        return (
            f"{UNSTEADY_MARK}: an unsteady measurement (its rounds disagree, its p50 is over twice its minimum, or the "
            "machine's load was above its core count), or a speedup that rests on one: not a figure to quote"
        )

    def unsteady_lines(self, limit: float = UNSTEADY_LIMIT) -> list[str]:
        """One line per measured row whose stretches disagree by more than ``limit``."""
        return [line for r in self.ok_rows() if (line := r.unsteady(limit))]

    def round_trips(self) -> dict[str, float | None]:
        """The CPUs' round trips recorded before and after the run ({} when absent or malformed: older reports)."""
        link = self.config.get("cpu_round_trip_ns")
        if not isinstance(link, dict):
            return {}
        keep = ("before", "after")
        return {k: v for k, v in link.items() if k in keep and (v is None or isinstance(v, (int, float)))}

    def link_lines(self) -> list[str]:
        """A warning when the CPUs' round trip changed during the run (the host probably moved the CPUs)."""
        link = self.round_trips()
        line = link_change_line(link.get("before"), link.get("after"))
        return [f"cpu link: {line}"] if line else []

    def not_run_lines(self) -> list[str]:
        out = []
        for r in self.rows:
            if r.ok:
                continue
            where = f" batch {r.batch}" if r.batch is not None else ""
            out.append(f"{r.backend} {r.precision}{where}: {r.status}: {r.reason}")
        return out

    def to_markdown(self, title: str | None = None, environment: bool = True, level: int = 2) -> str:
        head, body = self.table_rows()
        lines = [f"{'#' * level} {title or 'deployinc bench: ' + str(self.model.get('name'))}", ""]
        cfg = self.config
        lines.append(
            f"Model `{self.model.get('name')}` (input {self.model.get('input_chw')}, file sha256 "
            f"{str(self.model.get('sha256'))[:12]}); warm-up {cfg.get('warmup')}, iterations {cfg.get('iters')}"
            f"{', rounds ' + str(cfg.get('rounds')) if cfg.get('rounds', 1) != 1 else ''}, threads {cfg.get('threads')}, "
            f"{'an int8 file' + chr(39) + 's float layers in ' + str(cfg.get('float_precision')) + ' (--float-precision), ' if cfg.get('float_precision') else ''}"
            f"created {self.created}."
        )
        load = cfg.get("load_average") or {}
        others = cfg.get("other_cpu_use") or {}
        if load.get("before") is not None or others.get("during") is not None:
            lines.append("")
            lines.append(
                f"CPUs kept busy by other processes: {others.get('before')} just before, {others.get('during')} on "
                f"average during the run; load average (1, 5, 15 min) before {load.get('before')}, after "
                f"{load.get('after')}."
            )
        link = self.round_trips()
        if link.get("before") is not None or link.get("after") is not None:
            ns = lambda v: "not measured" if v is None else f"{v} ns"  # noqa: E731
            lines.append("")
            lines.append(
                f"Cross-CPU round trip (one cache line bounced between two of the run's CPUs by Python loops; larger "
                f"means the CPUs are farther apart, which slows multi-threaded runs): {ns(link.get('before'))} before, "
                f"{ns(link.get('after'))} after."
                + (
                    " **It changed during the run**: the host probably moved the CPUs, so rounds may have run in "
                    "different placements and the p50s mix them."
                    if self.link_lines()
                    else ""
                )
            )
        lines += ["", *Table(head, body).markdown_lines()]
        skipped = self.not_run_lines()
        if skipped:
            lines += ["", "Not run:", ""] + [f"- {s}" for s in skipped]
        unsteady = self.unsteady_lines()
        if unsteady:
            lines += ["", f"Unsteady ({self.unsteady_legend()}):", ""] + [f"- {s}" for s in unsteady]
        if environment:
            lines += ["", "Environment:", ""] + [f"- {s}" for s in environment_lines(self.environment)]
        return "\n".join(lines) + "\n"

    def render(self, console: Any = None) -> str:
        """The screen table (rich when installed, plain text otherwise); returns the plain text.

        On a rich console the table is fitted to the console's width: numbers are never cut. Where every column
        cannot fit, the least needed ones are left out (mean±std, p90, min, first run, p99, img/s, in that order;
        the JSON, CSV and Markdown reports keep them all) and named under the table, and long backend names wrap.
        """
        head, body = self.table_rows()
        table = Table.numeric_from(head, body, 4)
        text = table.text(rule=True)
        legend = self.unsteady_legend()
        extra = self.not_run_lines() + ([legend] if legend else []) + [f"unsteady: {s}" for s in self.unsteady_lines()] + self.link_lines()
        if console is not None:
            width = int(getattr(console, "width", 0) or 80)
            fit = fit_columns(head, body, width)
            title = f"deployinc bench: {self.model.get('name')}  (threads {self.config.get('threads')})"
            if fit is None:  # narrower than the essential columns: plain lines, which the terminal wraps whole
                console.print(title, markup=False, highlight=False)
                console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                keep, widths = fit
                console.print(replace(table.select(keep), title=title).rich(widths))
                left_out = [head[i] for i in range(len(head)) if i not in keep]
                if left_out and body:
                    extra = [f"not shown at {width} columns: {', '.join(left_out)} (widen the terminal, or see --json, --csv, --md)"] + extra
            for line in extra:
                console.print(f"  {line}", markup=False, highlight=False)
        return text + ("\n" + "\n".join("  " + s for s in extra) if extra else "")

    def plot_png(self) -> bytes:
        """PNG bytes: p50 latency (with p90 as an error bar) against batch size, one line per backend/precision/mode."""
        matplotlib = require("matplotlib", "--plot")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        series: dict[str, list[BenchRow]] = {}
        for r in self.ok_rows():
            series.setdefault(f"{r.backend}{' +graph' if r.cuda_graph else ''} {r.precision} {r.mode}", []).append(r)
        for label, rows in sorted(series.items()):
            rows.sort(key=lambda r: r.batch or 0)
            xs = [r.batch for r in rows]
            p50 = [r.stats.p50 for r in rows if r.stats]
            p90 = [r.stats.p90 - r.stats.p50 for r in rows if r.stats]
            ax.errorbar(xs, p50, yerr=[[0] * len(p90), p90], marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r.batch for r in self.ok_rows() if r.batch})
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        from matplotlib.ticker import NullLocator

        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency p50 (ms), bar to p90")
        ax.set_title(f"{self.model.get('name')} — threads {self.config.get('threads')}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}"


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


#: Columns of :meth:`BenchReport.table_rows` left out, in this order, when the table does not fit the screen.
DROP_ORDER = ("mean±std ms", "p90 ms", "min ms", "first run s", "p99 ms", "img/s")
#: Narrowest the backend column gets (longer names wrap onto a second line).
BACKEND_MIN_WIDTH = 7


def _table_width(widths: list[int]) -> int:
    """Width of a rich table (default box, padding 1 each side) whose columns hold ``widths`` characters."""
    return sum(widths) + 3 * len(widths) + 1


def fit_columns(head: list[str], body: list[list[str]], width: int) -> tuple[list[int], list[int]] | None:
    """Which columns of the table to show, and how wide each is, so that nothing is cut at ``width`` characters.

    Every number keeps its full width; a header wraps at its words. Columns are left out in :data:`DROP_ORDER`
    until the rest fits; the backend column may narrow to :data:`BACKEND_MIN_WIDTH` (its names wrap) before the
    last of them goes. None when not even backend, precision, batch, mode, p50 and the speedup fit.
    """
    def need(i: int) -> int:
        cells = [row[i] for row in body]
        words = [len(w) for w in head[i].split()] or [1]
        return max([*words, *(len(c) for c in cells)])

    full = [need(i) for i in range(len(head))]
    keep = list(range(len(head)))
    drops = [head.index(h) for h in DROP_ORDER if h in head]
    while True:
        widths = [full[i] for i in keep]
        if _table_width(widths) <= width:
            return keep, widths
        if keep[0] == 0 and widths[0] > BACKEND_MIN_WIDTH and len(drops) <= 2:
            narrowed = max(BACKEND_MIN_WIDTH, widths[0] - (_table_width(widths) - width))
            if _table_width([narrowed, *widths[1:]]) <= width:
                return keep, [narrowed, *widths[1:]]
        if not drops:
            return None
        keep.remove(drops.pop(0))

