"""`snapvol restore`: put a snapshot (or a dump file) back, after checking it and asking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from snapvol import lifecycle
from snapvol.adapters.store import Snapshot
from snapvol.cli import picker
from snapvol.cli.confirm import confirm_by_typing
from snapvol.cli.context import DEFAULT_CONTAINER, AppContext, json_option, reader_option, with_app
from snapvol.cli.format import local_time
from snapvol.errors import UsageError
from snapvol.output import human_bytes

MAX_TABLES_SHOWN = 12


def _plan_table(plan: Any, safety: bool) -> Table:
    snap, target = plan.snapshot, plan.target
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Snapshot", f"{snap.id}  {snap.name}  ({snap.kind})")
    table.add_row("Taken", f"{local_time(snap.created_at)} from {snap.container}:{snap.volume}")
    table.add_row(
        "Size",
        f"{human_bytes(snap.size_bytes)} archive, {human_bytes(snap.raw_bytes)} "
        f"of data in {snap.file_count} files",
    )
    if snap.pg_version:
        table.add_row(
            "PostgreSQL", f"{snap.pg_version} (target runs {plan.target_pg_major or '?'})"
        )
    table.add_row("SHA-256", f"{snap.sha256}  [green]verified[/]")
    table.add_row(
        "[red]Overwrites[/]",
        f"volume {target.volume} of container {target.container.name} ({target.container.status})",
    )
    table.add_row(
        "Current data",
        f"{human_bytes(plan.current_bytes)} in {plan.current_files} files"
        if plan.current_bytes is not None
        else "unknown",
    )
    table.add_row(
        "Safety snapshot",
        "yes, taken first (rolled back to on failure)"
        if safety
        else "[red]no[/] (--no-safety-snapshot): the current data will be gone",
    )
    for warning in plan.warnings:
        table.add_row("[yellow]Note[/]", warning)
    return table


def _tables_text(tables: dict[str, int] | list[str] | None, estimated: bool = False) -> str:
    if tables is None:
        return "not recorded"
    if not tables:
        return "none"
    names = sorted(tables)
    shown = [
        f"{name} ({'~' if estimated else ''}{tables[name]})" if isinstance(tables, dict) else name
        for name in names[:MAX_TABLES_SHOWN]
    ]
    more = f", … {len(names) - MAX_TABLES_SHOWN} more" if len(names) > MAX_TABLES_SHOWN else ""
    return f"{len(names)}: {', '.join(shown)}{more}"


def _logical_table(plan: Any) -> Table:
    source, target, current = plan.source, plan.target, plan.current
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    snap = source.snapshot
    if snap is not None:
        table.add_row("Snapshot", f"{snap.id}  {snap.name}  (logical, {snap.format} format)")
        table.add_row(
            "Taken",
            f"{local_time(snap.created_at)} from database {snap.database} of {snap.container} "
            f"(PostgreSQL {snap.pg_version})",
        )
        table.add_row(
            "Size",
            f"{human_bytes(snap.size_bytes)} archive, {human_bytes(snap.raw_bytes)} of dump",
        )
        table.add_row("SHA-256", f"{snap.sha256}  [green]verified[/]")
    else:
        compressed = ", zstd-compressed" if source.compressed else ""
        table.add_row("File", f"{source.path}  ({source.format} format{compressed})")
        header = source.header
        if header:
            table.add_row(
                "Dumped",
                f"from database {header.get('database', '?')} at {header.get('created', '?')} "
                f"(PostgreSQL {header.get('server_version', '?')})",
            )
        table.add_row(
            "Size",
            f"{human_bytes(source.size_bytes)} file, {human_bytes(source.raw_bytes)} of dump",
        )
        table.add_row("Checked", "[green]whole and readable[/] (nothing changed yet)")
    table.add_row("Contains", "tables " + _tables_text(source.tables or source.listed))
    where = f"container {target.container.name}, PostgreSQL {plan.server_version}"
    if current.exists:
        table.add_row("[red]Replaces[/]", f"database {target.database} ({where})")
        table.add_row(
            "Current data",
            f"{human_bytes(current.size_bytes)}, tables "
            + _tables_text(current.tables, estimated=True),
        )
    else:
        table.add_row("Creates", f"database {target.database} ({where}; it does not exist yet)")
    if current.exists:
        how = (
            f"restored into new database {plan.scratch}, checked, given the current one's "
            "grants and settings, then swapped in; the current one is dropped only after the "
            "swap, and left as it is on any failure"
        )
    else:
        how = f"restored into new database {plan.scratch}, checked, then renamed"
    table.add_row("How", how)
    if plan.takes_safety:
        safety = (
            f"yes: a logical snapshot of database {target.database}, taken after the new copy "
            "was checked and right before the swap, while writes wait; "
            "`snapvol restore <its id>` undoes the restore"
        )
    elif current.exists:
        safety = (
            "[red]no[/] (--no-safety-snapshot): there is no way back, the current database is "
            "dropped after the swap"
        )
    else:
        safety = f"none needed: database {target.database} does not exist yet"
    table.add_row("Safety snapshot", safety)
    if plan.no_owner:
        table.add_row(
            "Owners",
            f"the dump's owners and privileges are skipped: {plan.db_owner} owns every object",
        )
    table.add_row(
        "Loads as",
        "a temporary role without superuser rights; meta-commands and statements beyond the "
        "database are refused",
    )
    if plan.extensions:
        table.add_row(
            "Extensions",
            ", ".join(e.name for e in plan.extensions)
            + " (created by the superuser before the load)",
        )
    if plan.allow_roles:
        roles = ", ".join(plan.new_roles) or "none"
        kept = f"; already here, left as they are: {', '.join(plan.existing_roles)}"
        table.add_row(
            "[red]Roles[/]",
            f"the dump creates role(s): {roles} (--allow-roles; never superusers, never a change "
            f"to an existing role){kept if plan.existing_roles else ''}",
        )
    for warning in plan.warnings:
        table.add_row("[yellow]Note[/]", warning)
    return table


@click.command("restore")
@click.argument("ref", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Restore this dump file (custom or SQL, optionally .zst) instead of a snapshot.",
)
@click.option(
    "--container",
    default=None,
    envvar="SNAPVOL_CONTAINER",
    help="Restore into this container (default: the snapshot's own; pc_db for --file).",
)
@click.option("--database", help="Logical: the database to replace (default: the snapshot's).")
@click.option("--user", help="Logical: the role to restore as (default: POSTGRES_USER).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--no-safety-snapshot",
    is_flag=True,
    help="Do not snapshot the current volume or database first: no automatic rollback of a "
    "volume restore, and no way back from either.",
)
@click.option(
    "--no-owner",
    is_flag=True,
    help="Logical, custom format: skip the dump's owners and privileges; the database's "
    "owner gets every object (for a dump from a server whose roles do not exist here).",
)
@click.option(
    "--allow-roles",
    is_flag=True,
    help="Logical, SQL file: let the dump create the roles it needs (CREATE ROLE and ALTER "
    "ROLE of those roles; never a superuser, never an existing role).",
)
@click.option("--helper-image", help="Image for helper containers (default: the target's image).")
@reader_option
@json_option
@with_app
def command(
    app: AppContext,
    ref: str | None,
    file: Path | None,
    container: str | None,
    database: str | None,
    user: str | None,
    assume_yes: bool,
    no_safety_snapshot: bool,
    no_owner: bool,
    allow_roles: bool,
    helper_image: str | None,
    reader: str,
    as_json: bool,
) -> None:
    """Restore snapshot REF (an id, a unique id prefix of 4+ digits, or a name), or a dump file.

    Without REF on a terminal, lists the snapshots and asks which one.
    """
    snap: Snapshot | None = None
    if file is not None:
        if ref is not None:
            raise UsageError("give a snapshot or --file, not both")
    else:
        with app.store() as store:
            snap = (
                store.resolve(ref) if ref is not None else picker.pick_snapshot(store, app.console)
            )
        snap = lifecycle.located(snap, app.backup_dir)
        lifecycle.check_restorable(snap)  # before looking for its container
    if snap is None or snap.kind == "logical":
        summary = _restore_logical(
            app,
            snap,
            file,
            container or (snap.container if snap is not None else DEFAULT_CONTAINER),
            database,
            user,
            assume_yes,
            no_owner,
            safety=not no_safety_snapshot,
            allow_roles=allow_roles,
        )
    else:
        if database is not None or user is not None or no_owner or allow_roles:
            raise UsageError(
                "--database, --user, --no-owner and --allow-roles go with logical restores"
            )
        summary = _restore_volume(
            app, snap, container, assume_yes, no_safety_snapshot, helper_image, reader
        )
    if as_json:
        app.console.json(summary)


def _restore_volume(
    app: AppContext,
    snap: Snapshot,
    container: str | None,
    assume_yes: bool,
    no_safety_snapshot: bool,
    helper_image: str | None,
    reader: str = "auto",
) -> dict[str, Any]:
    from snapvol.volume import restore as volume_restore

    target_ref = container or snap.container
    with app.workspace(lock=target_ref, operation=f"restore {snap.id}") as ws:
        plan = volume_restore.plan_volume_restore(
            ws.engine,
            ws.store,
            snap,
            container,
            helper_image_override=helper_image,
            reporter=ws.reporter,
            reader=reader,
        )
        app.console.err.print(_plan_table(plan, not no_safety_snapshot))
        confirm_by_typing(plan.target.container.name, assume_yes=assume_yes, what="restore")
        result = volume_restore.restore_volume(
            ws.engine,
            ws.store,
            ws.backup_dir,
            plan,
            safety_snapshot=not no_safety_snapshot,
            helper_image_override=helper_image,
            reporter=ws.reporter,
            watchdog=ws.watchdog,
        )
    app.console.info(
        f"Restored {result.snapshot.id} ({result.snapshot.name}) into {plan.target.volume}: "
        f"{result.duration_s:.1f} s, downtime {result.downtime_s:.1f} s"
    )
    _print_undo(app, result.safety)
    return {
        "restored": result.snapshot.to_dict(),
        **_undo_fields(app, result.safety),
        "container": plan.target.container.name,
        "volume": plan.target.volume,
        "downtime_s": round(result.downtime_s, 3),
        "duration_s": round(result.duration_s, 3),
    }


def _restore_logical(
    app: AppContext,
    snap: Snapshot | None,
    file: Path | None,
    container: str,
    database: str | None,
    user: str | None,
    assume_yes: bool,
    no_owner: bool,
    *,
    safety: bool = True,
    allow_roles: bool = False,
) -> dict[str, Any]:
    from snapvol.pg import logical_restore, pgexec

    operation = f"restore {snap.id}" if snap is not None else f"restore --file {file}"
    # A dump file needs no store of its own: --file may create one, to record what it does.
    options = logical_restore.RestoreOptions(
        no_owner=no_owner, safety=safety, allow_roles=allow_roles
    )
    with app.workspace(lock=container, operation=operation, create=file is not None) as ws:
        if snap is not None:
            target = pgexec.resolve_pg_target(ws.engine, container, database or snap.database, user)
            source = logical_restore.snapshot_source(ws, snap)
        else:
            assert file is not None
            target = pgexec.resolve_pg_target(ws.engine, container, database, user)
            source = logical_restore.file_source(ws, target, file, options)
        plan = logical_restore.plan_restore(ws, target, source, options)
        app.console.err.print(_logical_table(plan))
        confirm_by_typing(
            target.container.name, assume_yes=assume_yes, what=f"replace {target.database}"
        )
        result = logical_restore.restore_logical(ws, plan)
    what = f"{snap.id} ({snap.name})" if snap is not None else str(file)
    app.console.info(
        f"Restored {what} into database {target.database} of {target.container.name}: "
        f"{len(result.tables)} tables, {sum(result.tables.values())} rows checked, "
        f"{result.duration_s:.1f} s"
    )
    _print_undo(app, result.safety)
    return {
        "restored": snap.to_dict() if snap is not None else None,
        **_undo_fields(app, result.safety),
        "file": str(file) if file is not None else None,
        "format": source.format,
        "container": target.container.name,
        "database": target.database,
        "tables": result.tables,
        "duration_s": round(result.duration_s, 3),
        "replaced_existing": plan.current.exists,
        "no_owner": plan.no_owner,
        "roles_created": plan.new_roles,
        "extensions": [e.name for e in plan.extensions],
        "previous_kept_as": result.retired_kept,
    }


def _undo_command(app: AppContext, safety: Snapshot) -> str:
    return app.command("restore", safety.id)


def _print_undo(app: AppContext, safety: Snapshot | None) -> None:
    """After a restore: where its way back is, and the command that takes it."""
    if safety is None:
        return
    app.console.info(f"Safety snapshot {safety.id} ({safety.name}): {safety.path}")
    app.console.info(f"Undo with: {_undo_command(app, safety)}")


def _undo_fields(app: AppContext, safety: Snapshot | None) -> dict[str, Any]:
    return {
        "safety_snapshot": safety.to_dict() if safety is not None else None,
        "undo": _undo_command(app, safety) if safety is not None else None,
    }
