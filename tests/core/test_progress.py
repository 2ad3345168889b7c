"""The one progress (deployinc.core.progress): a line per step with its seconds, a count, and rich's live line only
on a terminal."""

from __future__ import annotations

import io

import pytest

from deployinc.core.progress import Progress, is_terminal


def test_steps_are_lines_with_their_elapsed_seconds():
    said: list[str] = []
    p = Progress(said.append)
    p.start("export", "dynamo")
    p.start("simplify")
    p.close()
    assert said[0] == "export (dynamo) ..." and said[1].startswith("export done in ") and said[1].endswith(" s")
    assert said[2] == "simplify ..." and said[3].startswith("simplify done in ") and set(p.durations) == {"export", "simplify"}
    p.close()  # nothing runs: no line
    assert len(said) == 4


def test_an_aborted_step_says_nothing_and_a_count_says_its_lines():
    said: list[str] = []
    p = Progress(said.append)
    p.start("load")
    p.abort()
    assert said == ["load ..."]
    p.count("models", 3, 1, line="sweep of 3")
    p.update(2, "resnet18")  # moves the live line only: no line
    p.advance("resnet18: pass")
    assert said[1:] == ["sweep of 3", "resnet18: pass"] and not p.live


def test_plain_lines_unless_the_stream_is_a_terminal():
    assert not is_terminal(io.StringIO()) and not is_terminal(object())
    said: list[str] = []
    assert not Progress.for_stream(said.append, stream=io.StringIO()).live


def test_the_live_line_on_a_terminal_prints_the_lines_above_it():
    pytest.importorskip("rich")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, said = Tty(), []
    p = Progress.for_stream(said.append, stream=out)
    assert p.live
    p.count("epoch 1/2", 4)
    p.update(2, "loss 0.5")
    p.start("verify")
    p.close()
    assert said == [] and "verify ..." in out.getvalue() and "verify done in" in out.getvalue()
