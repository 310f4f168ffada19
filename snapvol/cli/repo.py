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
