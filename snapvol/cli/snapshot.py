"""`snapvol snapshot`: take a volume (cold) or logical (pg_dump) snapshot."""

from __future__ import annotations

from typing import Any

import click

from snapvol.cli.context import AppContext, json_option, target_options, with_app
from snapvol.cli.format import snapshot_summary
from snapvol.errors import UsageError


@click.command("snapshot")
@click.option("--volume", "mode", flag_value="volume", help="Cold snapshot of the named volume.")
@click.option("--logical", "mode", flag_value="logical", help="pg_dump of a running database.")
@click.option("--name", help="A unique name (letters, digits, '.', '_', '-').")
@click.option(
    "--level",
    type=click.IntRange(1, 19),
    default=3,
    show_default=True,
    help="zstd compression level.",
)
@click.option("--helper-image", help="Image for helper containers (default: the target's image).")
@target_options
@json_option
@with_app
def command(app: AppContext, mode: str | None, as_json: bool, **options: Any) -> None:
    """Take a snapshot of a container's data and record it in the manifest store."""
    if mode is None:
        raise UsageError("choose --volume (cold, whole volume) or --logical (pg_dump)")
    from snapvol import volume

    with app.session(lock=options["container"], operation="snapshot --volume") as (store, engine):
        target = volume.resolve_target(engine, options["container"], options["volume_name"])
        snap = volume.snapshot_volume(
            engine,
            store,
            app.backup_dir,
            target,
            name=options["name"],
            level=options["level"],
            helper_image_override=options["helper_image"],
            reporter=app.console,
            watchdog=app.watchdog,
        )
    if as_json:
        app.console.json(snap.to_dict())
    app.console.info(snapshot_summary(snap))
