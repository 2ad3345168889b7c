"""The one table type of deployinc's reports: columns, rows and alignment, rendered as aligned text, as Markdown,
or as a rich table (rich is an optional extra: ``pip install 'deployinc[rich]'``; only :meth:`Table.rich` needs it).

bench's, deploy's and profile's reports and the benchmark scripts build their tables here, so a table is laid out
the same way everywhere: text columns padded to their widest cell and separated by two spaces, Markdown with one
``|---|`` rule and no ``|`` inside a cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..lazy import require

LEFT = "left"
RIGHT = "right"
CENTER = "center"
#: Each alignment's Markdown rule cell.
_RULE = {LEFT: "---", RIGHT: "---:", CENTER: ":---:"}


@dataclass
class Table:
    """Rows of strings under a header.

    Attributes:
        head: Column names.
        rows: Cells, one list per row, as long as ``head``.
        align: ``left``, ``right`` or ``center`` per column (default: all left); Markdown's rule line says it too
            (``---``, ``---:``, ``:---:``).
        title: Shown above the rich table (text and Markdown leave it to the caller).
    """

    head: list[str]
    rows: list[list[str]] = field(default_factory=list)
    align: list[str] = field(default_factory=list)
    title: str | None = None

    def __post_init__(self) -> None:
        self.align = list(self.align) or [LEFT] * len(self.head)
        if len(self.align) != len(self.head) or any(a not in _RULE for a in self.align):
            raise ValueError(f"align must be {LEFT!r}, {RIGHT!r} or {CENTER!r} for each of the {len(self.head)} columns: {self.align}")
        for row in self.rows:
            if len(row) != len(self.head):
                raise ValueError(f"a row has {len(row)} cells for {len(self.head)} columns: {row}")

    @classmethod
    def numeric_from(cls, head: Sequence[str], rows: Sequence[Sequence[str]], first: int, title: str | None = None) -> Table:
        """Columns before ``first`` left-aligned (names), the rest right-aligned (numbers)."""
        return cls(list(head), [list(r) for r in rows], [LEFT if i < first else RIGHT for i in range(len(head))], title)

    @classmethod
    def aligned(cls, head: Sequence[str], rows: Sequence[Sequence[str]], spec: str, title: str | None = None) -> Table:
        """Columns aligned by ``spec``, one letter per column: ``l`` left, ``r`` right, ``c`` center."""
        codes = {"l": LEFT, "r": RIGHT, "c": CENTER}
        if len(spec) != len(head) or any(ch not in codes for ch in spec):
            raise ValueError(f"spec must give l, r or c for each of the {len(head)} columns: {spec!r}")
        return cls(list(head), [list(r) for r in rows], [codes[ch] for ch in spec], title)

    def widths(self) -> list[int]:
        """Each column's widest cell, the header included."""
        return [max([len(h), *(len(r[i]) for r in self.rows)]) for i, h in enumerate(self.head)]

    def select(self, keep: Sequence[int]) -> Table:
        """The same table with only the columns ``keep`` (indexes), in that order."""
        return Table([self.head[i] for i in keep], [[r[i] for i in keep] for r in self.rows], [self.align[i] for i in keep], self.title)

    def text_lines(self, rule: bool = False, strip: bool = False) -> list[str]:
        """The header and one line per row, every cell padded to its column's width, two spaces between columns;
        ``rule`` adds a line of dashes under the header, ``strip`` drops trailing spaces."""
        widths = self.widths()

        def line(cells: Sequence[str]) -> str:
            text = "  ".join(_pad(c, w, a) for c, w, a in zip(cells, widths, self.align))
            return text.rstrip() if strip else text

        out = [line(self.head)]
        if rule:
            out.append("  ".join("-" * w for w in widths))
        return out + [line(r) for r in self.rows]

    def text(self, rule: bool = False, strip: bool = False) -> str:
        """:meth:`text_lines` joined by newlines (no newline at the end)."""
        return "\n".join(self.text_lines(rule, strip))

    def markdown_lines(self, escape: str = "/") -> list[str]:
        """A Markdown table, its rule line giving each column's alignment (``---`` left, ``---:`` right, ``:---:``
        center); a ``|`` inside a body cell becomes ``escape`` (it would end the cell)."""
        out = ["| " + " | ".join(self.head) + " |", "|" + "|".join(_RULE[a] for a in self.align) + "|"]
        return out + ["| " + " | ".join(c.replace("|", escape) for c in r) + " |" for r in self.rows]

    def markdown(self, escape: str = "/") -> str:
        """:meth:`markdown_lines` joined by newlines (no newline at the end)."""
        return "\n".join(self.markdown_lines(escape))

    def rich(self, widths: Sequence[int] | None = None, no_wrap: bool = False, **table: Any) -> Any:
        """A ``rich.table.Table`` of the same columns and alignment (needs rich). ``widths`` fixes each column's
        width (cells longer than it fold onto more lines); ``no_wrap`` keeps every cell on one line; other keyword
        arguments go to ``rich.table.Table``."""
        rich_table = require("rich.table", "rich tables")
        out = rich_table.Table(title=self.title, **table)
        for i, (h, a) in enumerate(zip(self.head, self.align)):
            if widths is not None:
                out.add_column(h, justify=a, width=widths[i], overflow="fold")
            else:
                out.add_column(h, justify=a, no_wrap=no_wrap)
        for r in self.rows:
            out.add_row(*r)
        return out


def _pad(cell: str, width: int, align: str) -> str:
    if align == RIGHT:
        return cell.rjust(width)
    return cell.center(width) if align == CENTER else cell.ljust(width)
