"""Progress for long grids: a rich progress bar on a terminal, plain log lines otherwise (CI).

Result lines end with the count so far and an ETA from the finished cells ('[3/12, ETA 4:10]');
while a cell trains, the bar (or, at most every STEP_LOG_SECONDS, a plain line) shows its last
reported step and validation mAP."""
from __future__ import annotations

import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


STEP_LOG_SECONDS = float(os.environ.get("XMH_STEP_LOG_SECONDS", "30"))


def clock(seconds: float) -> str:
    """Return seconds as M:SS (H:MM:SS past an hour)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Reporter:
    """Counts finished cells and shows messages; use as a context manager."""

    def __init__(self, total: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._task = None
        self._last_step = 0.0
        self._current = ""

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
        elif text != self._current:
            self.log(f"({self.done + 1}/{self.total}) {text}")
        self._current = text

    def step(self, title: str, step: int, values: dict) -> None:
        """Show a cell's progress inside its fit: the step and the last validation mAP."""
        score = values.get("val_map")
        text = f"{title} · step {step}" + ("" if score is None else f" · val mAP {float(score):.4f}")
        if self._progress is not None:
            self._progress.update(self._task, description=text)
        elif time.monotonic() - self._last_step >= STEP_LOG_SECONDS:
            self._last_step = time.monotonic()
            self.log(f"  {text}")

    def count(self) -> str:
        """Return '  [done/total, ETA m:ss]' from the cells finished so far."""
        elapsed = time.monotonic() - self.started
        left = self.total - self.done
        eta = f"ETA {clock(elapsed / self.done * left)}" if self.done and left else (f"all done in {clock(elapsed)}" if not left else "ETA -")
        return f"  [{self.done}/{self.total}, {eta}]"

    def advance(self) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress.advance(self._task)
