"""`snapvol diff A B`: the files added, removed and changed between two volume snapshots."""

from __future__ import annotations

import click

from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import shown_path
from snapvol.cli.options import json_option


@click.command("diff")
@click.argument("first", metavar="A")
@click.argument("second", metavar="B")
@json_option
@with_app
def command(app: AppContext, first: str, second: str, as_json: bool) -> None:
    """List the files added (+), removed (-) and changed (M, and what changed) from volume
    snapshot A to volume snapshot B, from the files the store recorded: no archive is read.
    """
    from snapvol import diffing

    with app.store() as store:
        a = diffing.volume_only(store.resolve(first))
        b = diffing.volume_only(store.resolve(second))
        found = diffing.diff(store.members(a.id), store.members(b.id))
    if as_json:
        app.console.json(
            {
                "from": a.id,
                "to": b.id,
                "added": found.added,
                "removed": found.removed,
                "changed": [{"path": c.path, "what": list(c.aspects)} for c in found.changed],
            }
        )
    else:
        lines = [f"+ {shown_path(p)}" for p in found.added]
        lines += [f"- {shown_path(p)}" for p in found.removed]
        lines += [f"M {shown_path(c.path)}  ({', '.join(c.aspects)})" for c in found.changed]
        for line in sorted(lines, key=lambda ln: ln[2:]):
            click.echo(line)
    app.console.info(
        f"{a.id} ({a.name}) -> {b.id} ({b.name}): {len(found.added)} added, "
        f"{len(found.removed)} removed, {len(found.changed)} changed"
    )
