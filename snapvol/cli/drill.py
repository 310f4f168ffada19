"""`snapvol drill`: prove that a snapshot restores, in a throwaway server."""

from __future__ import annotations

from pathlib import Path

import click

from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.options import json_option
from snapvol.errors import IntegrityError, NotFoundError, UsageError


@click.command("drill")
@click.argument("ref", required=False)
@click.option(
    "--check-sql",
    "check_sql",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file of SQL whose single result must be true (run in the restored database).",
)
@click.option("--database", help="Where --check-sql runs (default: the snapshot's database).")
@json_option
@with_app
def command(
    app: AppContext, ref: str | None, check_sql: Path | None, database: str | None, as_json: bool
) -> None:
    """Restore a snapshot into a throwaway server and check it (default: the newest one).

    The snapshot (PostgreSQL: a volume or a logical one) is restored into a new container of
    its image with no network and a volume of its own, never its own container or volume;
    there pg_amcheck checks every database's tables and indexes, the tables and row counts must
    match those recorded (a volume snapshot's first drill records them), and --check-sql's
    query must return true. The result is recorded (`show` prints it), and `prune` never
    deletes the newest snapshot of a source whose last drill passed. The container and volume
    are removed at the end, and by the next command if the drill was killed. A snapshot whose
    archive is only in the repository (--repo) is fetched from it first, and checked.

    Exits 0 when the drill passed, 7 when it failed.
    """
    from snapvol.drill import run

    sql = _read(check_sql) if check_sql is not None else None
    if database is not None and sql is None:
        raise UsageError("--database says where --check-sql runs: give --check-sql too")
    with app.store() as store:
        snap = store.resolve(ref) if ref is not None else _newest(store)
        run.check_drillable(snap)
        snap = _local(app, store, snap)
        with app.connected(store) as ws:
            result = run.drill(ws, snap, run.DrillOptions(check_sql=sql, database=database))
    if as_json:
        app.console.json({**result.to_dict(), "snapshot": snap.to_dict()})
    elif result.ok:
        app.console.info(
            f"Drill {result.id} of snapshot {snap.id} ({snap.name}) passed: {result.detail} "
            f"({_counted(result.counts or {})})"
        )
    if not result.ok:
        raise IntegrityError(f"drill {result.id} of snapshot {snap.id} failed: {result.error}")


def _counted(counts: dict[str, dict[str, int]]) -> str:
    """What was counted, as "3 tables, 3120 rows in 2 databases"."""
    tables = sum(len(t) for t in counts.values())
    rows = sum(sum(t.values()) for t in counts.values())
    return f"{tables} tables, {rows} rows in {len(counts)} databases"


def _local(app: AppContext, store: Store, snap: Snapshot) -> Snapshot:
    """The snapshot with its archive here: fetched from the repository (and checked) when only
    the repository has it."""
    from snapvol import restoring
    from snapvol.cli.restore import fetch_archive, refuse_copied_away

    if not restoring.archive_missing(snap, app.backup_dir):
        return snap
    if app.repo is not None:
        return fetch_archive(app, store, snap)
    refuse_copied_away(store, snap)
    return snap  # the drill says the archive is missing


def _read(path: Path) -> str:
    sql = path.read_text(encoding="utf-8").strip()
    if not sql:
        raise UsageError(f"{path} holds no SQL")
    return sql


def _newest(store: Store) -> Snapshot:
    """The newest complete snapshot a drill can check."""

    for snap in store.snapshots(status=COMPLETE):
        if snap.kind == "logical" or snap.meta.get("is_postgres"):
            return snap
    raise NotFoundError("no complete PostgreSQL snapshot to drill (see `snapvol ls`)")
