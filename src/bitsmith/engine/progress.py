"""Progress on stderr, over a training's epochs and over a study's runs: a live bar on a terminal, one plain line
per finished epoch or run when stderr is piped or redirected (a log file, a batch job: long work is never silent;
a long epoch adds a line a minute), nothing when ``quiet`` is set."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _modes(stream: TextIO, quiet: bool) -> tuple[bool, bool]:
    """(live bar, plain lines) for ``stream``: the bar on a terminal, the lines anywhere else, neither if quiet."""
    interactive = stream.isatty()
    return not quiet and interactive, not quiet and not interactive


def _line(stream: TextIO, *parts: str, since: float) -> None:
    """One plain progress line: the non-empty ``parts`` and the seconds since ``since``, two spaces apart."""
    print("  ".join([*(p for p in parts if p), f"{time.perf_counter() - since:.1f} s"]), file=stream, flush=True)


class EpochProgress:
    """One bar per epoch with the running loss on a TTY; otherwise ``epoch 3/15  loss 0.4120  test acc 87.20%
    12.3 s`` as each epoch ends, and within an epoch that runs longer, ``epoch 3/15  step 400/860  loss 0.4371
    60.2 s`` once every ``every`` seconds. ``stream``: where it writes (default: stderr at construction)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, every: float = 60.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.lines = _modes(self.stream, quiet)
        self.every = every
        self._progress: Progress | None = None
        self._task: Any = None
        self._epoch: tuple[str, float] | None = None
        self._done = self._total = 0  # steps of the current epoch
        self._last_line = 0.0

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._progress.start()
        return self

    def start_epoch(self, description: str, total: int) -> None:
        self._epoch = (description, time.perf_counter())
        self._done, self._total, self._last_line = 0, total, self._epoch[1]
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=total, info="")

    def advance(self, info: str = "") -> None:
        self._done += 1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, info=info)
        if self.lines and self._epoch is not None and time.perf_counter() - self._last_line >= self.every:
            _line(self.stream, self._epoch[0], f"step {self._done}/{self._total}", info, since=self._epoch[1])
            self._last_line = time.perf_counter()

    def end_epoch(self, info: str = "") -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, info=info)
        if self.lines and self._epoch is not None:
            _line(self.stream, self._epoch[0], info, since=self._epoch[1])

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


class RunsProgress:
    """Progress over a fixed number of runs (a grid study, a DoF sweep): a bar on a TTY, otherwise one line per
    finished run, ``grid 3/24  c1-s0: test acc 95.28%  41.0 s``; nothing when ``quiet``."""

    def __init__(self, title: str, total: int, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.title, self.total, self.done = title, total, 0
        self.stream = stream if stream is not None else sys.stderr
        bar, self.lines = _modes(self.stream, quiet)
        self._progress = Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=Console(file=self.stream), disable=not bar)
        self._task: Any = None
        self._since = time.perf_counter()

    def __enter__(self) -> RunsProgress:
        self._progress.start()
        self._task = self._progress.add_task("runs", total=self.total)
        self._since = time.perf_counter()
        return self

    def advance(self, info: str = "") -> None:
        """One more run finished; ``info`` says which and how it ended."""
        self.done += 1
        self._progress.advance(self._task)
        if self.lines:
            _line(self.stream, f"{self.title} {self.done}/{self.total}", info, since=self._since)
            self._since = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
