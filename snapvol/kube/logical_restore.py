"""Logical restores into a workload's PostgreSQL: ``snapvol.pg.logical_restore``, run in its pod.

The container restore's own code does all of it, through the API's exec stream instead of
``docker exec`` (``podexec.PodExec``): the snapshot's SHA-256 verified before anything else; the
dump loaded into a new database as a temporary role without superuser rights, every script psql
runs filtered on this side (``sqlscript.ScriptFilter``: meta-commands, ``\\restrict`` and
statements that reach beyond the database refused, so a crafted dump cannot run shell
commands); the new copy checked, given the current database's grants and settings, and swapped
in by two renames in one transaction, the current one dropped only once that committed and left
as it was on any failure; the safety snapshot taken in a session that holds the current
database's writes until the swap. The workload keeps running: nothing is scaled.

A snapshot of a workload records its tables' row counts (``kube.logical``), which the restored
copy must match; one taken before they were recorded, if custom-format, is read whole by
``pg_restore`` in the pod before anything changes, and the restored copy must hold every table
it lists. The safety snapshot is recorded as a logical snapshot of the workload
(with row counts: its session holds them), so ``snapvol restore <safety>`` puts it back there.
"""

from __future__ import annotations

from pathlib import Path

from snapvol.adapters.store import Snapshot
from snapvol.kube import logical
from snapvol.kube.client import Kube
from snapvol.pg import logical_restore as pg_restore
from snapvol.pg.dumpfile import CUSTOM


def plan(
    kube: Kube,
    target: logical.PodTarget,
    snap: Snapshot | None,
    options: pg_restore.RestoreOptions,
    *,
    file: Path | None = None,
) -> pg_restore.LogicalRestorePlan:
    """The snapshot checked (its SHA-256, then, without recorded row counts, read whole by
    pg_restore in the pod), or the dump ``file`` checked as a container restore checks one,
    and what the restore would replace: nothing changed yet."""
    if snap is None:
        assert file is not None
        source = pg_restore.file_source(target.ws, target.pg, file, options)
    else:
        source = pg_restore.snapshot_source(target.ws, snap)
        if source.tables is None and source.format == CUSTOM:
            pg_restore.check_custom(target.ws, target.pg, source)
    found = pg_restore.plan_restore(target.ws, target.pg, source, options)
    found.safety_meta = logical.recorded_meta(kube, target.dump)
    return found


def restore(
    target: logical.PodTarget, plan: pg_restore.LogicalRestorePlan
) -> pg_restore.LogicalRestoreResult:
    """Into a new database, checked, the safety snapshot taken, swapped in (the container
    restore's ``restore_logical``)."""
    return pg_restore.restore_logical(target.ws, plan)
