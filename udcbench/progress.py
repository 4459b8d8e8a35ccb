"""Progress bars (rich, on stderr) for anything that takes more than a second."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

class SafeConsole(Console):
    """A console whose messages never fail on text they quote: a path or name that reads as Rich markup (``[/x]``,
    ``[abc]``) prints as plain text instead of raising."""

    def print(self, *objects, **kwargs) -> None:
        from rich.errors import MarkupError, MissingStyle, StyleSyntaxError

        try:
            super().print(*objects, **kwargs)
        except (MarkupError, MissingStyle, StyleSyntaxError):
            markup, self._markup = self._markup, False  # tables render their titles with the console's setting
            try:
                super().print(*objects, **{**kwargs, "markup": False})
            finally:
                self._markup = markup


#: Logs and progress go to stderr; results go to stdout. Lines are never wrapped (``soft_wrap``): in a log or a pipe
#: Rich's 80 columns split paths and words across lines.
stderr = SafeConsole(stderr=True, soft_wrap=True)


def quiet() -> bool:
    """Whether progress is silenced (``UDCBENCH_QUIET=1``)."""
    return os.environ.get("UDCBENCH_QUIET", "") not in ("", "0")


def progress_bar(transient: bool = False) -> Progress:
    """A rich Progress on stderr; silenced by ``UDCBENCH_QUIET=1``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
        disable=quiet(),
    )


def track(items: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


#: How often a terminal's training bar rewrites its text (which reads the loss from the device).
BAR_TEXT_S = 0.5


class TrainingProgress:
    """A training run's progress within its epochs. In a terminal: one rich bar over all the run's steps (epoch,
    loss, images/s, time left). Elsewhere (a log file, CI): a plain line for the first step, then at least every
    ``every_s`` seconds or ``every_steps`` steps, and one per epoch, so a log never sits silent for an epoch."""

    def __init__(self, label: str, epochs: int, steps_per_epoch: int, start_epoch: int = 0, enabled: bool = True,
                 every_s: float = 30.0, every_steps: int = 50):
        self.label, self.epochs, self.steps_per_epoch = label, epochs, steps_per_epoch
        self.enabled = enabled and not quiet()
        self.terminal = stderr.is_terminal
        self.every_s, self.every_steps = every_s, every_steps
        self.done = self._done_before = start_epoch * steps_per_epoch  # steps, this invocation's and before
        self._bar: Progress | None = None
        self._images = 0
        self._start: float | None = None  # the first step's start: the rate leaves set-up out
        self._last_line = time.perf_counter()
        self._since_line = every_steps  # the first step prints

    def __enter__(self) -> TrainingProgress:
        if self.enabled and self.terminal:
            self._bar = progress_bar()
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.epochs * self.steps_per_epoch, completed=self.done)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _elapsed(self) -> float:
        return max(time.perf_counter() - (self._start or time.perf_counter()), 1e-9)

    def _left(self) -> str:
        """Time left at this invocation's pace (evaluation between epochs included once one has run)."""
        seconds = self._elapsed() / max(1, self.done - self._done_before) * (self.epochs * self.steps_per_epoch
                                                                              - self.done)
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"

    def start_step(self) -> None:
        """Before the run's first step (set-up and data loading before it are not training)."""
        if self._start is None:
            self._start = time.perf_counter()

    def step(self, epoch: int, step: int, images: int, loss) -> None:
        """After training step ``step`` (0-based) of ``epoch`` (0-based) on ``images`` images. ``loss`` may be a
        tensor on a GPU: it is read only when a line or the bar's text is written (the bar's at most every
        :data:`BAR_TEXT_S` seconds), so that the step does not wait for the device."""
        self.start_step()
        self.done += 1
        self._images += images
        self._since_line += 1
        if not self.enabled:
            return
        where = f"epoch {epoch + 1}/{self.epochs} step {step + 1}/{self.steps_per_epoch}"
        rate = self._images / self._elapsed()
        now = time.perf_counter()
        if self._bar is not None:
            text = {}
            if now - self._last_line >= BAR_TEXT_S or step + 1 == self.steps_per_epoch:
                text = {"description": f"{self.label} {where}: loss {float(loss):.3f}, {rate:.0f} img/s"}
                self._last_line = now
            self._bar.update(self._task, completed=self.done, **text)
            return
        if self._since_line >= self.every_steps or now - self._last_line >= self.every_s:
            stderr.print(f"{self.label} {where}: loss {float(loss):.4f}, {rate:.0f} images/s, {self._left()} left",
                         highlight=False, soft_wrap=True)
            self._since_line, self._last_line = 0, now

    def epoch(self, epoch: int, summary: str) -> None:
        """At the end of ``epoch`` (0-based), with its validation summary."""
        if not self.enabled:
            return
        line = f"{self.label} epoch {epoch + 1}/{self.epochs}: {summary}"
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        else:
            stderr.print(line, highlight=False, soft_wrap=True)
