"""`snapvol copy`: copy snapshots to the restic repository."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from snapvol.cli.context import AppContext, with_app
from snapvol.cli.options import json_option
from snapvol.repo.opening import Opening, locked

if TYPE_CHECKING:
    from snapvol.adapters.store import Copy, Snapshot


def copy_dict(snap: Snapshot, copy: Copy) -> dict[str, Any]:
    return {
        "snapshot_id": snap.id,
        "name": snap.name,
        **copy.to_dict(),
        "manifest_snapshot": copy.manifest_snapshot,
        "raw_bytes": copy.raw_bytes,
        "raw_sha256": copy.raw_sha256,
        "content_sha256": copy.content_sha256,
    }


def copied_line(snap: Snapshot, copy: Copy) -> str:
    added = copy.bytes_added or 0
    return (
        f"copied {snap.id} ({snap.name}) to {copy.repository}: restic snapshot "
        f"{(copy.data_snapshot or '')[:8]}, {copy.raw_bytes} bytes, {added} added to the repository"
    )


@click.command("copy")
@click.argument("refs", nargs=-1, metavar="[REF]...")
@json_option
@with_app
def command(app: AppContext, refs: tuple[str, ...], as_json: bool) -> None:
    """Copy snapshots to the repository (default: every complete one not copied there yet).

    The repository's own list of snapshots decides what is there: a copy the store recorded
    but the repository lost is made again. One copy (or prune) per repository at a time.
    """
    # restic opens the repository (two processes) while the store is imported and opened
    opening = Opening(app.restic())
    from snapvol.repo.copy import copy_all, listed, mark_lost, missing, raise_failures

    with app.store() as store:
        target = opening.target()
        with locked(target, "copy") as last_held:
            present = listed(opening, target, last_held)
            mark_lost(store, target, present, app.console)
            snaps = [store.resolve(ref) for ref in refs] if refs else missing(store, target)
            run = copy_all(store, target, snaps, app.console, present)
    by_id = {s.id: s for s in snaps}
    if as_json:
        app.console.json([copy_dict(by_id[c.snapshot_id], c) for c in run.copies])
    for c in run.copies:
        app.console.info(copied_line(by_id[c.snapshot_id], c))
    for snap in run.skipped:
        app.console.info(f"{snap.id} ({snap.name}) is already in {target.display}")
    if not snaps:
        app.console.info(f"nothing to copy: every complete snapshot is in {target.display}")
    raise_failures(run)
