"""Progress for long grids: a rich progress bar on a terminal, plain log lines otherwise (CI)."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Counts finished cells and shows messages; use as a context manager."""

    def __init__(self, total: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> "Reporter":
        if self.console.is_terminal and self.total:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("runs", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def log(self, message: str) -> None:
        """Print one line (above the bar on a terminal, timestamped in plain logs)."""
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            elapsed = time.monotonic() - self.started
            self.console.print(f"[{elapsed:7.1f}s] {message}", markup=False, highlight=False, soft_wrap=True)

    def describe(self, text: str) -> None:
        """Show what runs now (terminal) or log it (plain)."""
        if self._progress is not None:
            self._progress.update(self._task, description=text)
        else:
            self.log(f"({self.done + 1}/{self.total}) {text}")

    def advance(self) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress.advance(self._task)
