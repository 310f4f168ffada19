"""`snapvol extract REF [PATH]... --to DIR`: files out of a snapshot, no container touched."""

from __future__ import annotations

from pathlib import Path

import click

from snapvol.cli.context import AppContext, with_app
from snapvol.cli.options import json_option
from snapvol.errors import UsageError
from snapvol.output import human_bytes


@click.command("extract")
@click.argument("ref", metavar="REF")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write: an empty or new directory (a logical snapshot: its dump file in it).",
)
@json_option
@with_app
def command(app: AppContext, ref: str, paths: tuple[str, ...], to: Path, as_json: bool) -> None:
    """Write files out of snapshot REF into a directory, checked, without touching any container.

    A volume snapshot: the PATHs given (paths inside the volume; a directory brings what is
    below it), or everything. A logical snapshot: its dump, uncompressed (no PATH).
    """
    from snapvol import extracting

    with app.store() as store:
        snap = store.resolve(ref)
        if snap.kind == "logical":
            if paths:
                raise UsageError("a logical snapshot is one dump file: give no PATH")
            done = extracting.extract_dump(snap, to.absolute(), app.console)
        else:
            done = extracting.extract_volume(store, snap, paths, to.absolute(), app.console)
    if as_json:
        app.console.json(
            {"snapshot": snap.id, "to": str(done.where), "files": done.files, "bytes": done.bytes}
        )
    app.console.info(
        f"Extracted {done.files} file(s), {human_bytes(done.bytes)}, of {snap.id} ({snap.name}) "
        f"into {done.where}, each checked against its recorded SHA-256"
    )
