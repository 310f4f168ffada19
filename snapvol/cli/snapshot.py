"""`snapvol snapshot`: take a volume (cold) or logical (pg_dump) snapshot."""

from __future__ import annotations

from typing import Any

import click

from snapvol.adapters.store import Snapshot
from snapvol.cli.context import AppContext, json_option, reader_option, target_options, with_app
from snapvol.cli.format import snapshot_summary
from snapvol.errors import UsageError
from snapvol.names import validate_name
from snapvol.options import SnapshotOptions


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
@reader_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["custom", "plain"]),
    default=None,
    help="--logical: pg_dump's custom format (pg_restore-able, the default) or plain SQL.",
)
@click.option("--database", help="--logical: the database (default: the container's POSTGRES_DB).")
@click.option("--user", help="--logical: the role (default: the container's POSTGRES_USER).")
@target_options
@json_option
@with_app
def command(app: AppContext, mode: str | None, as_json: bool, **options: Any) -> None:
    """Take a snapshot of a container's data and record it in the manifest store."""
    if mode is None:
        raise UsageError("choose --volume (cold, whole volume) or --logical (pg_dump)")
    if options["name"] is not None:
        validate_name(options["name"])  # before anything is looked up or stopped
    snap = _logical(app, options) if mode == "logical" else _volume(app, options)
    if as_json:
        app.console.json(snap.to_dict())
    app.console.info(snapshot_summary(snap))
    if snap.kind == "logical":
        tables = snap.meta.get("tables") or {}
        app.console.info(
            f"Database {snap.database} ({snap.format} format, PostgreSQL {snap.pg_version}): "
            f"{len(tables)} tables, {sum(tables.values())} rows"
        )


def _volume(app: AppContext, options: dict[str, Any]) -> Snapshot:
    for flag in ("fmt", "database", "user"):
        if options[flag] is not None:
            raise UsageError(f"--{'format' if flag == 'fmt' else flag} goes with --logical")
    from snapvol.volume import snapshot as volume

    with app.workspace(lock=options["container"], operation="snapshot --volume", create=True) as ws:
        target = volume.resolve_target(
            ws.engine, options["container"], options["volume_name"], options["reader"]
        )
        return volume.snapshot_volume(
            ws.engine,
            ws.store,
            ws.backup_dir,
            target,
            name=options["name"],
            level=options["level"],
            helper_image_override=options["helper_image"],
            reporter=ws.reporter,
            watchdog=ws.watchdog,
        )


def _logical(app: AppContext, options: dict[str, Any]) -> Snapshot:
    # Only a --reader typed on this command line is refused: SNAPVOL_READER applies to volumes.
    source = click.get_current_context().get_parameter_source("reader")
    if source is click.core.ParameterSource.COMMANDLINE:
        raise UsageError("--reader goes with --volume")
    for flag in ("volume_name", "helper_image"):
        if options[flag] is not None:
            raise UsageError(f"--{flag.replace('_', '-')} goes with --volume")
    from snapvol.pg import logical, pgexec

    snapshot = SnapshotOptions(name=options["name"], level=options["level"])
    dump = logical.DumpOptions(format=options["fmt"] or "custom")
    with app.workspace(
        lock=options["container"], operation="snapshot --logical", create=True
    ) as ws:
        target = pgexec.resolve_pg_target(
            ws.engine, options["container"], options["database"], options["user"]
        )
        return logical.snapshot_logical(ws, target, snapshot, dump)
