"""`snapvol ls`: the snapshots in the manifest store, newest first."""

from __future__ import annotations

from typing import Any

import click

from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Copy, Drill
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import snapshots_table
from snapvol.cli.options import json_option


@click.command("ls")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@click.option("--container", help="Only snapshots of this container (its name).")
@click.option("--kind", type=click.Choice(["volume", "logical"]), help="Only this kind.")
@click.option("--status", type=click.Choice([COMPLETE, FAILED, IN_PROGRESS]), help="Only these.")
@click.option(
    "--repo",
    "in_repo",
    is_flag=True,
    help="List the copies in the repository (the global --repo) instead; needs no store.",
)
@json_option
@with_app
def command(
    app: AppContext,
    limit: int | None,
    container: str | None,
    kind: str | None,
    status: str | None,
    in_repo: bool,
    as_json: bool,
) -> None:
    """List snapshots (id, name, kind, source, created, size, status, copies)."""
    if in_repo:
        _list_repository(app, limit, container, kind, as_json)
        return
    with app.store() as store:
        snaps = store.snapshots(limit=limit, container=container, kind=kind, status=status)
        copies: dict[str, list[Copy]] = {}
        for copy in store.copies():
            copies.setdefault(copy.snapshot_id, []).append(copy)
        drills = store.last_drills() if as_json else {}
    if not as_json:  # --json stays a bare list: its consumers index it
        app.console.info(f"Store {app.db}, archives in {app.backup_dir}")
    if as_json:
        app.console.json(
            [
                {**s.to_dict(copies.get(s.id, ())), "last_drill": _drill_dict(drills.get(s.id))}
                for s in snaps
            ]
        )
    elif not snaps and (container or kind or status):
        app.console.info("No snapshots match.")
    elif not snaps:
        app.console.info("No snapshots yet. Take one with `snapvol snapshot --volume`.")
    else:
        out = app.console.out
        width = out.width if out.is_terminal else None
        out.print(snapshots_table(snaps, copies, width), soft_wrap=True)


def _list_repository(
    app: AppContext, limit: int | None, container: str | None, kind: str | None, as_json: bool
) -> None:
    """The snapshots the repository holds copies of (their manifests), newest first."""
    from snapvol.repo import fetch

    restic = app.restic()
    listed = [
        found
        for found in reversed(fetch.manifests_in(restic))
        if container in (None, found.manifest.snapshot.container)
        and kind in (None, found.manifest.snapshot.kind)
    ][:limit]
    if as_json:
        app.console.json([fetch.listed_dict(found) for found in listed])
        return
    app.console.info(f"Repository {restic.repo.display}")
    if not listed:
        app.console.info("No snapvol copies in this repository.")
    else:
        table = snapshots_table([found.manifest.snapshot for found in listed])
        app.console.out.print(table, soft_wrap=True)


def _drill_dict(drill: Drill | None) -> dict[str, Any] | None:
    return None if drill is None else drill.to_dict()
