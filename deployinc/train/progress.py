"""Training progress on stderr: a rich progress bar when rich is importable, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..lazy import available


class Reporter:
    """Receives training events; the base class is silent (library use)."""

    def start(self, text: str) -> None:
        """A line before training (data, model, settings)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` begins, with ``steps`` batches."""

    def step(self, done: int, loss: float, acc: float) -> None:
        """``done`` batches of this epoch are finished; running loss and accuracy."""

    def epoch_end(self, summary: dict[str, Any]) -> None:
        """The epoch's record (loss, accuracy, held-out accuracy, seconds)."""

    def close(self) -> None:
        """Training ended (normally or not)."""


def epoch_line(s: dict[str, Any]) -> str:
    """One line for an epoch's record."""
    return (
        f"epoch {s['epoch']}/{s['epochs']}: loss {s['train_loss']:.4f}  train acc {100 * s['train_acc']:.1f}%  "
        f"held-out acc {100 * s['heldout_acc']:.2f}%  lr {s['lr']:.2e}  {s['seconds']:.1f}s"
    )


class PlainReporter(Reporter):
    """Plain lines: one per epoch, and a progress line every ``every`` batches."""

    def __init__(self, stream: TextIO | None = None, every: int = 20):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self._epoch = (0, 0, 0)

    def start(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epoch = (epoch, epochs, steps)

    def step(self, done: int, loss: float, acc: float) -> None:
        epoch, epochs, steps = self._epoch
        if done % self.every == 0 and done < steps:
            print(
                f"  epoch {epoch}/{epochs} batch {done}/{steps}: loss {loss:.4f} acc {100 * acc:.1f}%",
                file=self.stream,
                flush=True,
            )

    def epoch_end(self, summary: dict[str, Any]) -> None:
        print(epoch_line(summary), file=self.stream, flush=True)


class RichReporter(Reporter):
    """A rich progress bar per epoch with the running loss and accuracy."""

    def __init__(self, stream: TextIO | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream if stream is not None else sys.stderr, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.1f}%"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.progress.start()

    def start(self, text: str) -> None:
        self.progress.console.print(text, markup=False, soft_wrap=True)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss=0.0, acc=0.0)

    def step(self, done: int, loss: float, acc: float) -> None:
        self.progress.update(self.task, completed=done, loss=loss, acc=100 * acc)

    def epoch_end(self, summary: dict[str, Any]) -> None:
        self.progress.console.print(epoch_line(summary), markup=False, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(stream: TextIO | None = None) -> Reporter:
    """A :class:`RichReporter` when rich is importable, else a :class:`PlainReporter`."""
    if available("rich"):
        return RichReporter(stream)
    return PlainReporter(stream)
