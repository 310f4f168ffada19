"""`snapvol ls`: the snapshots in the manifest store, newest first."""

from __future__ import annotations

import click

from snapvol.cli.context import AppContext, json_option, with_app
from snapvol.cli.format import snapshots_table


@click.command("ls")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@json_option
@with_app
def command(app: AppContext, limit: int | None, as_json: bool) -> None:
    """List snapshots (id, name, kind, container, volume, created, size, status)."""
    with app.store() as store:
        snaps = store.snapshots(limit=limit)
    if as_json:
        app.console.json([s.to_dict() for s in snaps])
    elif not snaps:
        app.console.info("No snapshots yet. Take one with `snapvol snapshot --volume`.")
    else:
        app.console.out.print(snapshots_table(snaps), soft_wrap=True)
