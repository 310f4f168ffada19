"""Choosing a snapshot interactively when `snapvol restore` is given none."""

from __future__ import annotations

import sys

import click

from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.cli.confirm import answering
from snapvol.cli.format import choices_table
from snapvol.errors import Cancelled, NotFoundError, SnapvolError, UsageError
from snapvol.names import MIN_ID_PREFIX
from snapvol.output import Console

MAX_LISTED = 50


def on_terminal() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def pick_snapshot(store: Store, console: Console) -> Snapshot:
    """List the restorable snapshots, newest first and numbered, and ask which one.

    Without a terminal there is nobody to ask: a UsageError says to give an id.
    """
    if not on_terminal():
        raise UsageError(
            "which snapshot? give an id or name (see `snapvol ls`); "
            "the interactive list needs a terminal"
        )
    snaps = store.snapshots(status=COMPLETE, limit=MAX_LISTED)
    if not snaps:
        raise NotFoundError("no complete snapshot to restore (see `snapvol ls`)")
    console.err.print(choices_table(snaps), soft_wrap=True)
    while True:
        with answering():
            answer = click.prompt(
                f"Snapshot to restore (1-{len(snaps)}, an id or a name; Enter cancels)",
                default="",
                show_default=False,
                err=True,
            ).strip()
        if not answer:
            raise Cancelled("cancelled; nothing was changed")
        if answer.isdigit() and len(answer) < MIN_ID_PREFIX:
            if 1 <= int(answer) <= len(snaps):
                return snaps[int(answer) - 1]
            console.err.print(f"[yellow]there is no number {answer} in the list[/yellow]")
            continue
        try:
            return store.resolve(answer)
        except SnapvolError as err:
            console.err.print(f"[yellow]{err.message}[/yellow]")
