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

A snapshot of a workload records no row counts (``kube.logical``): a custom-format one is read
whole by ``pg_restore`` in the pod before anything changes, and the restored copy must hold
every table it lists. The safety snapshot is recorded as a logical snapshot of the workload
(with row counts: its session holds them), so ``snapvol restore <safety>`` puts it back there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import OperationFailed
from snapvol.kube import logical
from snapvol.kube.client import Kube
from snapvol.kube.podexec import PodExec
from snapvol.output import Reporter
from snapvol.pg import logical_restore as pg_restore
from snapvol.pg import pgexec
from snapvol.pg.dumpfile import CUSTOM
from snapvol.pg.pgexec import PgTarget
from snapvol.workspace import Workspace

# The role to restore as: given, else the container's POSTGRES_USER (the official image's).
_ROLE = 'printf "%s\\n" "${1:-${POSTGRES_USER:-postgres}}"'


@dataclass(frozen=True)
class PodTarget:
    """A database of a workload's PostgreSQL, as ``snapvol.pg`` works on one."""

    dump: logical.DumpTarget  # the running pod and its PostgreSQL container
    ws: Workspace  # whose engine runs commands in that container
    pg: PgTarget


def target(
    kube: Kube,
    dump: logical.DumpTarget,
    store: Store,
    backup_dir: Path,
    reporter: Reporter,
    *,
    database: str,
    user: str | None = None,
) -> PodTarget:
    """``database`` in the pod, restored as ``user`` (default: its POSTGRES_USER)."""
    engine = PodExec(kube, dump.pod, dump.workload.namespace, dump.container)
    if user is None:
        code, out, err = engine.exec_run("", ["sh", "-c", _ROLE, "snapvol"])
        if code != 0 or not out.strip():
            raise OperationFailed(
                f"cannot read POSTGRES_USER in pod {dump.pod}: "
                f"{pgexec.pg_message(err.decode('utf-8', 'replace'))}"
            )
        user = out.decode("utf-8", "replace").splitlines()[0]
    pgexec.check_names(database, user)
    source = logical.source_of(kube, dump)
    # What the records and messages name (the workload, as its snapshots do): commands go to
    # the pod whatever the id, which only keys a container's facts (has_zstd).
    info = ContainerInfo(
        id=source.id,
        name=source.name,
        image=dump.image,
        image_id="",
        status="running",
        mounts=(),
        labels={},
        cmd=(),
        entrypoint=(),
        health=None,
        _env={},
    )
    # snapvol.pg asks of its engine exec_run and exec_stream only, which PodExec offers.
    ws = Workspace(cast(Engine, engine), store, backup_dir, reporter)
    return PodTarget(dump, ws, PgTarget(info, database, user))


def plan(
    kube: Kube,
    target: PodTarget,
    snap: Snapshot,
    options: pg_restore.RestoreOptions,
) -> pg_restore.LogicalRestorePlan:
    """The snapshot checked (its SHA-256, then, without recorded row counts, read whole by
    pg_restore in the pod) and what the restore would replace: nothing changed yet."""
    source = pg_restore.snapshot_source(target.ws, snap)
    if source.tables is None and source.format == CUSTOM:
        pg_restore.check_custom(target.ws, target.pg, source)
    found = pg_restore.plan_restore(target.ws, target.pg, source, options)
    found.safety_meta = logical.recorded_meta(kube, target.dump)
    return found


def restore(
    target: PodTarget, plan: pg_restore.LogicalRestorePlan
) -> pg_restore.LogicalRestoreResult:
    """Into a new database, checked, the safety snapshot taken, swapped in (the container
    restore's ``restore_logical``)."""
    return pg_restore.restore_logical(target.ws, plan)
