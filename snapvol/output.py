"""Output for people and scripts: rich on stderr, progress only on a terminal, JSON on stdout."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console as RichConsole


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Reporter:
    """What the core tells the user while it works. The base class says nothing."""

    def step(self, message: str) -> None:
        """One line about what is happening now."""

    def warn(self, message: str) -> None:
        """Something the user should know even when not on a terminal."""

    @contextlib.contextmanager
    def transfer(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A byte counter; the callable is told how many bytes just went by."""
        yield lambda _n: None


class Console(Reporter):
    """Reporter on stderr: steps and progress bars only when stderr is a terminal."""

    def __init__(self, *, force_terminal: bool | None = None) -> None:
        self.err = RichConsole(stderr=True, force_terminal=force_terminal, highlight=False)
        self.interactive = self.err.is_terminal
        if not self.interactive:  # a pipe or a log: never wrap or truncate
            self.err = RichConsole(stderr=True, highlight=False, width=250, soft_wrap=True)
        out_tty = RichConsole().is_terminal
        self.out = RichConsole(
            highlight=False, soft_wrap=not out_tty, width=None if out_tty else 250
        )

    def step(self, message: str) -> None:
        if self.interactive:
            self.err.print(f"[dim]•[/dim] {message}")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {message}")

    def info(self, message: str) -> None:
        """A line people always see (summaries), on stderr so stdout stays clean for --json."""
        self.err.print(message)

    @contextlib.contextmanager
    def transfer(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if not self.interactive:
            yield lambda _n: None
            return
        from rich.progress import (  # only on a terminal: not imported by every command
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=False),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
        # refresh_per_second bounds the cost of drawing however fast the bytes go by.
        with Progress(*columns, console=self.err, transient=True, refresh_per_second=8) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()
