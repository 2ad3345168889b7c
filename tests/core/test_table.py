"""The one table type: the same columns and rows as aligned text, Markdown and a rich table."""

from __future__ import annotations

import io

import pytest

from deployinc.core.table import Table


def _table() -> Table:
    return Table.numeric_from(["model", "p50 ms", "note"], [["resnet18", "1.25", "a|b"], ["googlenet", "10.5", ""]], 1)


def test_text_pads_every_column_and_aligns_numbers_right():
    t = Table.numeric_from(["model", "p50 ms"], [["resnet18", "1.25"], ["googlenet", "10.5"]], 1)
    assert t.text_lines() == ["model      p50 ms", "resnet18     1.25", "googlenet    10.5"]
    assert t.text(rule=True) == "model      p50 ms\n---------  ------\nresnet18     1.25\ngooglenet    10.5"


def test_text_can_drop_trailing_spaces_and_keeps_the_header_for_an_empty_table():
    t = Table(["name", "x"], [["ab", ""], ["abcdef", "1"]])
    assert t.text_lines() == ["name    x", "ab       ", "abcdef  1"]
    assert t.text_lines(strip=True) == ["name    x", "ab", "abcdef  1"]
    assert Table(["a", "bb"]).text(rule=True) == "a  bb\n-  --"


def test_markdown_has_one_rule_and_no_pipe_inside_a_cell():
    assert _table().markdown() == "| model | p50 ms | note |\n|---|---:|---:|\n| resnet18 | 1.25 | a/b |\n| googlenet | 10.5 |  |"
    assert _table().markdown_lines(escape="\\|")[2] == "| resnet18 | 1.25 | a\\|b |"


def test_the_rule_line_and_the_text_say_each_columns_alignment():
    t = Table.aligned(["command", "s", "met"], [["help", "0.12", "yes"], ["export", "12.50", "NO"]], "lrc")
    assert t.markdown_lines()[:2] == ["| command | s | met |", "|---|---:|:---:|"]
    assert t.text_lines() == ["command      s  met", "help      0.12  yes", "export   12.50   NO"]
    assert Table(["a", "b"]).markdown_lines()[1] == "|---|---|"
    with pytest.raises(ValueError, match="l, r or c"):
        Table.aligned(["a", "b"], [], "lx")


def test_rich_has_the_same_columns_alignment_and_cells():
    rich = pytest.importorskip("rich")
    from rich.console import Console

    t = _table()
    t.title = "bench"
    rt = t.rich()
    assert isinstance(rt, rich.table.Table) and rt.title == "bench"
    assert [c.header for c in rt.columns] == t.head
    assert [c.justify for c in rt.columns] == ["left", "right", "right"]
    assert [list(c.cells) for c in rt.columns] == [list(col) for col in zip(*t.rows)]
    fixed = t.select([0, 1]).rich([5, 6])
    assert [(c.header, c.width, c.overflow) for c in fixed.columns] == [("model", 5, "fold"), ("p50 ms", 6, "fold")]
    buf = io.StringIO()
    Console(file=buf, width=80).print(fixed)
    assert "│ resne │   1.25 │\n│ t18   │" in buf.getvalue() and "10.5" in buf.getvalue()  # folded onto a second line, not cut


def test_a_row_of_the_wrong_length_or_an_unknown_alignment_is_refused():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        Table(["a", "b", "c"], [["1", "2"]])
    with pytest.raises(ValueError, match="align"):
        Table(["a"], [], ["centre"])
    assert Table(["a"], [], ["center"]).align == ["center"]
