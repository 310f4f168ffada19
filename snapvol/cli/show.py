"""`snapvol show`: one snapshot's whole record and its copies in restic repositories."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from snapvol.adapters.restic import display_location
from snapvol.adapters.store import Copy, Drill, Snapshot, iso_seconds
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import files_table, snapshot_details
from snapvol.cli.options import json_option
from snapvol.pipeline.members import Member


def show_dict(snap: Snapshot, copies: list[Copy], drill: Drill | None = None) -> dict[str, Any]:
    """``ls --json``'s object for the snapshot (its ``last_drill`` included); each copy also
    says when it started and, when it failed, why."""
    data = {**snap.to_dict(copies), "last_drill": None if drill is None else drill.to_dict()}
    for row, copy in zip(data["copies"], copies, strict=True):
        row["repository"] = display_location(row["repository"])
        row["started_at"] = iso_seconds(copy.created_at)
        row["error"] = copy.error
    return data


def file_dict(m: Member) -> dict[str, Any]:
    return {
        "path": m.path,
        "type": m.type,
        "size": m.size,
        "mode": m.mode,
        "uid": m.uid,
        "gid": m.gid,
        "mtime_ns": m.mtime_ns,
        "linkname": m.linkname or None,
        "sha256": m.sha256,
    }


@click.command("show")
@click.argument("ref", metavar="REF")
@click.option(
    "--files", is_flag=True, help="Also list its files (a volume snapshot's), as tar -tv."
)
@json_option
@with_app
def command(app: AppContext, ref: str, files: bool, as_json: bool) -> None:
    """Show one snapshot (id, unique id prefix or name): its record and its copies."""
    with app.store() as store:
        snap = store.resolve(ref)
        copies = store.copies(snapshot_id=snap.id)
        members = store.members(snap.id) if files else []
        drill = store.last_drills().get(snap.id)
    if as_json:
        shown = show_dict(snap, copies, drill)
        if files:
            shown["files"] = [file_dict(m) for m in members]
        app.console.json(shown)
        return
    app.console.out.print(snapshot_details(snap, copies, drill), soft_wrap=True)
    if files:
        app.console.out.print(Text())
        app.console.out.print(files_table(members), soft_wrap=True)
