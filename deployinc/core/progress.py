"""The one progress of deployinc's long commands and scripts: a line per step with its elapsed seconds, an optional
count (``[3/10]``), and, on a terminal with rich installed, a live line below them (a spinner, or a bar with the
count) that goes away when the work ends.

    >>> p = Progress(print)
    >>> p.start("export", "dynamo")       # prints "export (dynamo) ..."
    >>> p.end()                           # prints "export done in 1.2 s"

``Progress.for_stream(say)`` picks the live line when ``stream`` (default stderr) is a terminal and rich is
importable; elsewhere (piped output, tests, CI logs) every line goes to ``say`` and nothing else is printed. export's
stages (:class:`deployinc.export.Stages`), train's reporters and the scripts' sweeps print through it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ..lazy import available


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for anything without a working ``isatty``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Steps, each a line as it starts and its elapsed seconds as it ends, and an optional count.

    ``start(name, detail)`` ends the running step (``<name> done in 1.2 s``) and prints ``<name> (<detail>) ...``;
    :meth:`end` ends the last one; :meth:`abort` stops without a line (an error follows). :meth:`count` starts a
    counted task (``total`` items); :meth:`update` moves it, :meth:`advance` counts one item done with its line.
    Lines go to ``say``. With ``live`` (a terminal, and rich installed: see :meth:`for_stream`) a spinner or bar with
    the elapsed time runs below the lines while a step does.

    Attributes:
        durations: Seconds per step name (summed when a name repeats).
    """

    def __init__(self, say: Callable[[str], Any] | None = None, live: bool = False, stream: Any = None, auto_refresh: bool = True):
        self._say = say or (lambda _msg: None)
        self._current: tuple[str, float] | None = None
        self.durations: dict[str, float] = {}
        self.t0 = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None
        self._auto_refresh = auto_refresh
        if live:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

                console = Console(file=stream if stream is not None else sys.stderr, highlight=False)
                self._progress = RichProgress(
                    SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                    TimeElapsedColumn(), console=console, transient=True, redirect_stdout=False, redirect_stderr=False,
                    auto_refresh=auto_refresh,
                )  # fmt: skip
            except ImportError:
                self._progress = None

    @classmethod
    def for_stream(cls, say: Callable[[str], Any] | None, stream: Any = None, auto_refresh: bool = True) -> Progress:
        """Plain lines, or the live line too when ``stream`` (default stderr) is a terminal and rich is installed."""
        stream = stream if stream is not None else sys.stderr
        return cls(say, live=is_terminal(stream) and available("rich"), stream=stream, auto_refresh=auto_refresh)

    @property
    def live(self) -> bool:
        """Whether a rich live line runs below the lines."""
        return self._progress is not None

    def elapsed(self) -> float:
        """Seconds since this progress began."""
        return time.perf_counter() - self.t0

    def say(self, msg: str) -> None:
        """A line, printed above the live line when there is one."""
        if self._progress is not None:
            self._progress.console.print(msg, markup=False, highlight=False, soft_wrap=True)
        else:
            self._say(msg)

    def start(self, name: str, detail: str = "") -> None:
        """End the running step, then announce ``name``."""
        self.end()
        text = f"{name} ({detail})" if detail else name
        self.say(f"{text} ...")
        self._current = (name, time.perf_counter())
        self._new_task(text, None, 0)

    def end(self) -> None:
        """End the running step with its elapsed seconds (nothing when none runs)."""
        if self._current is None:
            return
        name, t0 = self._current
        self._current = None
        dt = time.perf_counter() - t0
        self.durations[name] = self.durations.get(name, 0.0) + dt
        self._drop_task()
        self.say(f"{name} done in {dt:.1f} s")

    def count(self, description: str, total: int, done: int = 0, line: str | None = None) -> None:
        """Start a counted task of ``total`` items, ``done`` of them already; ``line`` is said first (when given)."""
        self._drop_task()
        if line is not None:
            self.say(line)
        self._new_task(description, total, done)

    def update(self, done: int | None = None, note: str = "", description: str | None = None) -> None:
        """Move the live line: items done, a note after the bar, a new description (no line is said)."""
        if self._progress is None or self._task is None:
            return
        fields: dict[str, Any] = {"note": note}
        if done is not None:
            fields["completed"] = done
        if description is not None:
            fields["description"] = description
        self._progress.update(self._task, **fields)
        self._refresh()

    def advance(self, line: str | None = None) -> None:
        """One item done; its line (when given) is said."""
        if line is not None:
            self.say(line)
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)
            self._refresh()

    def abort(self) -> None:
        """Stop without a line: the running step failed and its error follows."""
        self._current = None
        self._drop_task()
        self.close()

    def close(self) -> None:
        """End the running step and stop the live line."""
        self.end()
        self._drop_task()
        if self._progress is not None and self._progress.live.is_started:
            self._progress.stop()

    def _new_task(self, description: str, total: int | None, done: int) -> None:
        if self._progress is None:
            return
        if not self._progress.live.is_started:
            self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=done, note="")
        self._refresh()

    def _refresh(self) -> None:
        if self._progress is not None and not self._auto_refresh:
            self._progress.refresh()

    def _drop_task(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
