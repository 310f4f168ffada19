"""`snapvol restore`: put a snapshot back, after checking it and asking."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from snapvol.cli.confirm import confirm_by_typing
from snapvol.cli.context import AppContext, json_option, with_app
from snapvol.cli.format import local_time
from snapvol.errors import UsageError
from snapvol.output import human_bytes


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


@click.command("restore")
@click.argument("ref", required=False)
@click.option(
    "--container",
    default=None,
    envvar="SNAPVOL_CONTAINER",
    help="Restore into this container (default: the snapshot's own).",
)
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--no-safety-snapshot",
    is_flag=True,
    help="Do not snapshot the current data first (no automatic rollback).",
)
@click.option("--helper-image", help="Image for helper containers (default: the target's image).")
@json_option
@with_app
def command(
    app: AppContext,
    ref: str | None,
    container: str | None,
    assume_yes: bool,
    no_safety_snapshot: bool,
    helper_image: str | None,
    as_json: bool,
) -> None:
    """Restore snapshot REF (an id, a unique id prefix, or a name)."""
    from snapvol import volume

    if ref is None:
        raise UsageError("which snapshot? give an id or name (see `snapvol ls`)")
    with app.store() as store:
        snap = store.resolve(ref)
    target_ref = container or snap.container
    with app.session(lock=target_ref, operation=f"restore {snap.id}") as (store, engine):
        plan = volume.plan_volume_restore(
            engine, store, snap, container, helper_image_override=helper_image, reporter=app.console
        )
        app.console.err.print(_plan_table(plan, not no_safety_snapshot))
        confirm_by_typing(plan.target.container.name, assume_yes=assume_yes, what="restore")
        result = volume.restore_volume(
            engine,
            store,
            app.backup_dir,
            plan,
            safety_snapshot=not no_safety_snapshot,
            helper_image_override=helper_image,
            reporter=app.console,
            watchdog=app.watchdog,
        )
    summary = {
        "restored": result.snapshot.to_dict(),
        "safety_snapshot": result.safety.to_dict() if result.safety else None,
        "container": plan.target.container.name,
        "volume": plan.target.volume,
        "downtime_s": round(result.downtime_s, 3),
        "duration_s": round(result.duration_s, 3),
    }
    if as_json:
        app.console.json(summary)
    safety_note = f"; safety snapshot {result.safety.id}" if result.safety else ""
    app.console.info(
        f"Restored {result.snapshot.id} ({result.snapshot.name}) into {plan.target.volume}: "
        f"{result.duration_s:.1f} s, downtime {result.downtime_s:.1f} s{safety_note}"
    )
