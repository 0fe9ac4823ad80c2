"""Rich progress bars (rate and ETA) and the console every stage prints to."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

# no source-path column and no wrapping: log lines stay greppable in CI logs
console = Console(stderr=True, highlight=False, log_path=False, soft_wrap=True)


class RateColumn(ProgressColumn):
    """Items per second, with the unit of the task (img/s, step/s)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text("?" if speed is None else f"{speed:,.1f} {unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def progress() -> Iterator[Progress]:
    """A progress display; silent (no live redraw) when rank != 0 or not a terminal."""
    quiet = int(os.environ.get("RANK", 0)) != 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=False) as p:
        yield p
