"""Training progress on stderr, through the one progress (:mod:`deployinc.core.progress`): a rich bar per epoch on
a terminal with rich installed, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..core.progress import Progress, is_terminal
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


class ProgressReporter(Reporter):
    """Training events through the one progress (:class:`deployinc.core.progress.Progress`): a line per epoch; on a
    terminal with rich, a bar per epoch with the running loss and accuracy, else a line every ``every`` batches."""

    def __init__(self, stream: TextIO | None = None, every: int = 20, live: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.progress = Progress(lambda msg: print(msg, file=self.stream, flush=True), live=live, stream=self.stream)
        self._epoch = (0, 0, 0)

    def start(self, text: str) -> None:
        self.progress.say(text)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epoch = (epoch, epochs, steps)
        self.progress.count(f"epoch {epoch}/{epochs}", steps)

    def step(self, done: int, loss: float, acc: float) -> None:
        epoch, epochs, steps = self._epoch
        if self.progress.live:
            self.progress.update(done, f"loss {loss:.4f} acc {100 * acc:.1f}%")
        elif done % self.every == 0 and done < steps:
            self.progress.say(f"  epoch {epoch}/{epochs} batch {done}/{steps}: loss {loss:.4f} acc {100 * acc:.1f}%")

    def epoch_end(self, summary: dict[str, Any]) -> None:
        self.progress.say(epoch_line(summary))

    def close(self) -> None:
        self.progress.close()


class PlainReporter(ProgressReporter):
    """Plain lines: one per epoch, and a progress line every ``every`` batches."""

    def __init__(self, stream: TextIO | None = None, every: int = 20):
        super().__init__(stream, every, live=False)


class RichReporter(ProgressReporter):
    """A rich progress bar per epoch with the running loss and accuracy (needs rich)."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream, live=True)


def make_reporter(stream: TextIO | None = None) -> Reporter:
    """A :class:`RichReporter` when ``stream`` (default stderr) is a terminal and rich is importable, else a
    :class:`PlainReporter`."""
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream) and available("rich"):
        return RichReporter(stream)
    return PlainReporter(stream)
