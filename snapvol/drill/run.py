"""One restore drill, from start to recorded result.

The drill is recorded as it starts (with this process's pid and host, so a recovery can tell an
interrupted one) and its result when it ends, whatever ends it. The snapshot is restored into a
``sandbox`` through the restore's own code (a volume archive through the lanes, each member checked
and read back; a dump through the logical restore's loader, which checks the recorded tables and
row counts), the server started, and the ``checks`` run.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from snapvol import lifecycle
from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.adapters.store import Drill, Snapshot, Store
from snapvol.drill import checks, sandbox
from snapvol.errors import IntegrityError, NotFoundError, OperationFailed, SnapvolError, UsageError
from snapvol.names import new_id
from snapvol.pg import cluster, logical_restore, pgexec
from snapvol.pg.dumpfile import CUSTOM
from snapvol.pg.logical import KIND as LOGICAL
from snapvol.pg.pgexec import PgTarget
from snapvol.pipeline.members import Member
from snapvol.workspace import Workspace

READY_TIMEOUT = 120.0  # seconds for the drill's server to accept connections


@dataclass(frozen=True)
class DrillOptions:
    check_sql: str | None = None  # a query whose single result must be true
    database: str | None = None  # where it runs (default: the snapshot's, else the server's)


def check_drillable(snap: Snapshot) -> None:
    """Drills check PostgreSQL snapshots: a logical one, or a volume holding a data directory."""
    lifecycle.check_restorable(snap)
    if snap.kind == "volume" and not snap.meta.get("is_postgres"):
        raise UsageError(
            f"snapshot {snap.id} holds no PostgreSQL data directory: drills check PostgreSQL "
            "snapshots (volume or logical)"
        )


def drill(ws: Workspace, snap: Snapshot, options: DrillOptions = DrillOptions()) -> Drill:
    """Restore ``snap`` into a throwaway server, check it, and record the result (returned:
    ``ok`` False when the snapshot did not restore or a check failed).

    Any other failure (the engine, an interruption) is recorded and raised. The drill's
    container and volume are removed however it ends."""
    check_drillable(snap)
    record = ws.store.add_drill(
        Drill(id=new_id(), snapshot_id=snap.id, pid=os.getpid(), host=socket.gethostname())
    )
    done: list[str] = []
    try:
        counts = _run(ws, snap, record.id, options, done)
    except (IntegrityError, OperationFailed) as err:
        return ws.store.finish_drill(record.id, ok=False, error=err.message, detail=_said(done))
    except BaseException as err:
        message = err.message if isinstance(err, SnapvolError) else f"interrupted ({err!r})"
        with contextlib.suppress(SnapvolError):
            ws.store.finish_drill(record.id, ok=False, error=message, detail=_said(done))
        raise
    return ws.store.finish_drill(record.id, ok=True, counts=counts, detail=_said(done))


def _said(done: list[str]) -> str:
    return "; ".join(done)


def _run(
    ws: Workspace, snap: Snapshot, drill_id: str, options: DrillOptions, done: list[str]
) -> checks.Counts:
    engine, reporter = ws.engine, ws.reporter
    with _restored(ws, snap, drill_id) as target:
        done.append("restored and started")
        reporter.step("checking every database with pg_amcheck (heap and B-tree indexes)")
        checks.amcheck(engine, target)
        done.append("pg_amcheck passed")
        reporter.step("counting the rows of every table")
        counts = checks.count_all(engine, target)
        expected, recorded_by = _expected(ws.store, snap)
        if expected is not None:
            checks.compare(expected, counts, recorded_by)
            done.append(f"tables and rows match {recorded_by}")
        else:
            done.append("tables and rows recorded (the first drill of this snapshot)")
        if options.check_sql is not None:
            database = options.database or snap.database or target.database
            reporter.step(f"running the check query in {database}")
            checks.check_sql(engine, target, database, options.check_sql)
            done.append("check query true")
    return counts


def _expected(store: Store, snap: Snapshot) -> tuple[dict[str, dict[str, int]] | None, str]:
    """The tables and rows the drilled server must hold, and who recorded them: a logical
    snapshot's own count of its database; for a volume snapshot, its first passed drill's."""
    if snap.kind == LOGICAL:
        tables = snap.meta.get("tables")
        if not isinstance(tables, dict) or not snap.database:
            return None, ""
        return {snap.database: {str(k): int(v) for k, v in tables.items()}}, f"snapshot {snap.id}"
    passed = [d for d in store.drills(snapshot_id=snap.id, running=False) if d.ok and d.counts]
    if not passed:
        return None, ""
    first = passed[-1]
    return first.counts, f"drill {first.id}"


def check_restored(ws: Workspace, snap: Snapshot, container: str) -> str | None:
    """After a volume snapshot was restored into ``container`` (running again): its tables and
    rows against what the snapshot's first passed drill counted. None when no drill counted them
    (or the server could not be asked: a warning says so); what matched; IntegrityError if not."""
    if snap.kind == LOGICAL:
        return None  # a logical restore checks its snapshot's own count before its swap
    expected, recorded_by = _expected(ws.store, snap)
    if expected is None:
        return None
    ws.reporter.step(f"counting the restored rows to compare with {recorded_by}")
    try:
        counts = checks.count_all(ws.engine, pgexec.resolve_pg_target(ws.engine, container))
    except SnapvolError as err:
        ws.reporter.warn(f"could not compare the restored tables with {recorded_by}: {err}")
        return None
    checks.compare(expected, counts, recorded_by)
    return f"tables and rows match {recorded_by}"


def _image(engine: Engine, snap: Snapshot, source: ContainerInfo | None) -> str:
    """The snapshot's image as recorded (its id, else its name), else the source container's."""
    candidates = [snap.image_id, snap.image]
    if source is not None:
        candidates += [source.image_id]
    for ref in candidates:
        if ref and engine.image_env(ref) is not None:
            return ref
    raise NotFoundError(
        f"the image of snapshot {snap.id} ({snap.image or snap.image_id}) is not here, and "
        "neither is its container: pull it to drill the snapshot"
    )


def _source(engine: Engine, snap: Snapshot) -> ContainerInfo | None:
    """The snapshot's container, if it still exists (only read: its image, user and names)."""
    for ref in (snap.container_id, snap.container):
        if ref:
            with contextlib.suppress(NotFoundError):
                return engine.container(ref)
    return None


def _ready_command(tcp: bool) -> list[str]:
    """pg_isready in the container; ``tcp``: on 127.0.0.1, which the official image's first
    start (its initialisation server listens on the socket only) never answers."""
    where = " -h 127.0.0.1" if tcp else ""
    return ["sh", "-c", cluster.find_program("c", "pg_isready") + f'; exec "$c" -q -t 2{where}']


@contextlib.contextmanager
def _restored(ws: Workspace, snap: Snapshot, drill_id: str) -> Iterator[PgTarget]:
    """The snapshot restored into a sandbox whose server accepts connections."""
    if snap.kind == LOGICAL:
        with _logical(ws, snap, drill_id) as target:
            yield target
    else:
        with _volume(ws, snap, drill_id) as target:
            yield target


@contextlib.contextmanager
def _volume(ws: Workspace, snap: Snapshot, drill_id: str) -> Iterator[PgTarget]:
    from snapvol.volume import restore as volume_restore
    from snapvol.volume.target import resolve_volume_target

    engine, reporter = ws.engine, ws.reporter
    lifecycle.check_archive(snap, reporter)
    members = ws.store.members(snap.id)
    refusal = lifecycle.restore_refusal(members, holds_postgres=True, pg_version=snap.pg_version)
    if refusal is not None:
        raise IntegrityError(f"snapshot {snap.id} cannot be restored: {refusal}")
    source = _source(engine, snap)
    image = _image(engine, snap, source)
    meta = snap.meta
    mount = str(meta.get("mount") or cluster.DEFAULT_PGDATA)
    env = {"PGDATA": posixpath.normpath(posixpath.join(mount, str(meta.get("pg_subdir", "."))))}
    for key in ("POSTGRES_USER", "POSTGRES_DB"):
        value = source.env(key) if source is not None else None
        if value:
            env[key] = value
    user = source.user if source is not None else ""
    with sandbox.sandbox(engine, drill_id, image, mount=mount, env=env, user=user) as box:
        reporter.step(f"restoring {snap.name} into drill volume {box.volume}")
        target = resolve_volume_target(engine, box.container_id, box.volume, helper_image=image)
        volume_restore.write_snapshot(target, snap, members, reporter)
        role = None
        if source is None:  # no container to say its POSTGRES_USER (a Kubernetes workload's)
            role = _superuser(ws, image, box, env["PGDATA"], members, meta)
        reporter.step(f"starting the drill's server ({box.name}, no network)")
        engine.start(box.container_id)
        sandbox.wait_started(engine, box.container_id, _ready_command(tcp=False), READY_TIMEOUT)
        yield pgexec.resolve_pg_target(engine, box.container_id, snap.database, role)


# The bootstrap superuser (oid 10) of a data directory, asked of the directory itself: a
# single-user backend logs in as it without being told its name. Hex-encoded, so that any
# name comes back whole from the backend's printout.
_SUPERUSER_SQL = (
    "SELECT 'snapvol:' || encode(convert_to(rolname::text, 'UTF8'), 'hex') AS r "
    "FROM pg_authid WHERE oid = 10"
)
# Run as root: the backend looks its own user up (getpwuid) and exits when the image's
# /etc/passwd does not name the data directory's owner (a workload's runAsUser), so the helper
# names it there, then becomes it (setpriv, gosu or su-exec: whichever the image has).
_SUPERUSER_SCRIPT = (
    cluster.find_program("c", "postgres")
    + """; q=$1; d=$2; u=$3; g=$4; set --
if [ "$(id -u)" = 0 ]; then
  getent passwd "$u" >/dev/null 2>&1 || echo "snapvol-drill:x:$u:$g::/nonexistent:/bin/sh" \
    >> /etc/passwd
  if command -v setpriv >/dev/null 2>&1; then set -- setpriv --reuid="$u" --regid="$g" \
    --clear-groups
  elif command -v gosu >/dev/null 2>&1; then set -- gosu "$u:$g"
  elif command -v su-exec >/dev/null 2>&1; then set -- su-exec "$u:$g"
  fi
fi
printf '%s\\n' "$q" | "$@" "$c" --single -D "$d" template1"""
)


def _superuser(
    ws: Workspace,
    image: str,
    box: sandbox.Sandbox,
    pgdata: str,
    members: list[Member],
    meta: dict[str, Any],
) -> str | None:
    """The restored cluster's superuser, read by a single-user backend in a helper of the
    drill's image running as the data directory's owner; None (and a warning: the server's
    defaults are tried) when it cannot say."""
    top = str(meta.get("pg_subdir") or ".")
    owner = next(((m.uid, m.gid) for m in members if m.path.rstrip("/") == top), None)
    if owner is None or not owner[0]:  # unknown, or root (whom postgres refuses)
        return None
    ws.reporter.step("asking the restored data directory who its superuser is")
    argv = ["sh", "-c", _SUPERUSER_SCRIPT, "snapvol-superuser", _SUPERUSER_SQL, pgdata]
    argv += [str(owner[0]), str(owner[1])]
    code, out = ws.engine.run_helper(
        image, box.volume, box.mount, argv, read_only=False, timeout=READY_TIMEOUT, user="0"
    )
    found = re.search(r'\br = "snapvol:((?:[0-9a-f]{2})+)"', out)
    if code == 0 and found:
        return bytes.fromhex(found.group(1)).decode("utf-8", "replace")
    last = out.strip().splitlines()[-1:] or ["no output"]
    ws.reporter.warn(f"could not read the restored cluster's superuser (exit {code}): {last[0]}")
    return None


@contextlib.contextmanager
def _logical(ws: Workspace, snap: Snapshot, drill_id: str) -> Iterator[PgTarget]:
    engine, reporter = ws.engine, ws.reporter
    source = logical_restore.snapshot_source(ws, snap)  # its SHA-256 checked
    owner = _source(engine, snap)
    image = _image(engine, snap, owner)
    mount = (engine.image_env(image) or {}).get("PGDATA") or cluster.DEFAULT_PGDATA
    role = str(snap.meta.get("user") or "postgres")
    # A fresh cluster: its superuser is the role that dumped; its password is random and goes
    # through the container's environment (never an argument), which the drill's tools read.
    env = {"POSTGRES_USER": role, "POSTGRES_PASSWORD": secrets.token_urlsafe(24)}
    user = owner.user if owner is not None else ""
    with sandbox.sandbox(engine, drill_id, image, mount=mount, env=env, user=user) as box:
        reporter.step(f"starting a fresh server for the drill ({box.name}, no network)")
        engine.start(box.container_id)
        sandbox.wait_started(engine, box.container_id, _ready_command(tcp=True), READY_TIMEOUT)
        target = pgexec.resolve_pg_target(engine, box.container_id, snap.database, role)
        # The drill proves the data restores; the roles owning it need not exist in a fresh
        # cluster, so a custom dump is loaded without its owners (as --no-owner does).
        options = logical_restore.RestoreOptions(no_owner=source.format == CUSTOM, safety=False)
        plan = logical_restore.plan_restore(ws, target, source, options)
        logical_restore.restore_logical(ws, plan)
        yield target
