"""`snapvol repo`: the restic repository snapvol copies snapshots to."""

from __future__ import annotations

import click

from snapvol.cli.context import AppContext, with_app
from snapvol.cli.options import json_option


@click.group("repo")
def group() -> None:
    """The restic repository for copies (--repo / SNAPVOL_REPOSITORY)."""


@group.command("init")
@json_option
@with_app
def init(app: AppContext, as_json: bool) -> None:
    """Create the repository (restic format 2, compressed)."""
    restic = app.restic()
    config = restic.init()
    if as_json:
        app.console.json({"repository": restic.repo.display, "id": config.id})
    app.console.info(f"created repository {restic.repo.display} (id {config.id[:12]})")


@group.command("import")
@json_option
@with_app
def import_(app: AppContext, as_json: bool) -> None:
    """Record in the store the snapshots the repository holds copies of (a lost store, or
    another machine's): complete, their archives fetched by `restore` when needed."""
    from snapvol.repo import fetch

    restic = app.restic()
    listed = fetch.manifests_in(restic)
    repository_id = restic.config().id
    with app.store(create=True) as store:
        added = fetch.import_manifests(
            store,
            listed,
            app.backup_dir,
            app.console,
            repository_id=repository_id,
            repository=restic.repo.display,
        )
    app.console.info(
        f"imported {len(added)} of {len(listed)} snapshot(s) copied to {restic.repo.display}"
    )
    if as_json:
        app.console.json(
            {
                "repository": restic.repo.display,
                "imported": [s.to_dict() for s in added],
                "copies": len(listed),
            }
        )
