"""A snapshot's life in the store: recorded as in progress before any byte is written, then
completed or failed; and the checks every restore starts with, which a volume snapshot must pass
before it is recorded complete."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from snapvol import locking
from snapvol.adapters.engine import COMPOSE_PROJECT, COMPOSE_SERVICE
from snapvol.adapters.store import COMPLETE, IN_PROGRESS, Snapshot, Store
from snapvol.errors import (
    IntegrityError,
    LockedError,
    NotFoundError,
    SnapvolError,
    describe,
)
from snapvol.names import archive_filename, default_name, new_id, validate_name
from snapvol.output import Reporter
from snapvol.pipeline import archive
from snapvol.pipeline.destination import Destination, LocalDirectory
from snapvol.pipeline.members import Member, MemberCheck


class Source(Protocol):
    """What a snapshot is recorded as taken of: a container (``ContainerInfo``), or another
    source that names itself the same way (a Kubernetes workload: ``snapvol.kube.records``)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def image_id(self) -> str: ...
    @property
    def labels(self) -> dict[str, str]: ...


def unique_name(store: Store, name: str | None, container: str, kind: str) -> str:
    if name is not None:
        return validate_name(name)  # uniqueness: Store.add refuses a taken name
    base = default_name(container, kind, datetime.now(UTC))
    candidate, n = base, 1
    while store.name_exists(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def begin(
    store: Store,
    backup_dir: Path,
    target_info: Source,
    *,
    kind: str,
    name: str | None,
    volume: str | None,
    suffix: str,
    meta: Mapping[str, object] | None = None,
    database: str | None = None,
    format: str | None = None,
) -> Snapshot:
    """Record a snapshot as in progress (with our pid, for recovery) before any byte is written."""
    if suffix not in archive.ARCHIVE_SUFFIXES:
        raise ValueError(f"unknown archive suffix {suffix!r}")
    destination = _destination(backup_dir)
    destination.prepare()
    snap_id = new_id()
    while store.id_exists(snap_id):
        snap_id = new_id()
    snap_name = unique_name(store, name, target_info.name, kind)
    path = destination.location(archive_filename(snap_name, snap_id, suffix))
    return store.add(
        Snapshot(
            id=snap_id,
            name=snap_name,
            kind=kind,
            container=target_info.name,
            container_id=target_info.id,
            volume=volume,
            image=target_info.image,
            image_id=target_info.image_id,
            path=path,
            pid=os.getpid(),
            host=socket.gethostname(),
            compose_project=target_info.labels.get(COMPOSE_PROJECT),
            compose_service=target_info.labels.get(COMPOSE_SERVICE),
            database=database,
            format=format,
        ),
        meta=meta or {},
    )


@contextlib.contextmanager
def recorded(store: Store, snap: Snapshot) -> Iterator[Snapshot]:
    """A snapshot's whole life, from the in-progress record ``begin`` made: the body writes the
    archive and completes the record; any exception on the way fails it (``fail``: the record
    says why, the archive is removed) and goes on up. Use as
    ``with recorded(store, begin(store, ...)) as snap:``."""
    try:
        yield snap
    except BaseException as err:
        fail(store, snap, err)
        raise


def complete_dump(
    store: Store,
    snap: Snapshot,
    result: archive.ArchiveResult,
    seconds: float,
    server_version: str,
    meta: Mapping[str, object] | None = None,
) -> Snapshot:
    """Record a logical snapshot complete: its archive ``result``, taken in ``seconds`` with
    no downtime from a server reporting ``server_version`` (``15.14 (Debian ...)``)."""
    return store.complete(
        snap.id,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        raw_bytes=result.raw_bytes or None,
        duration_s=round(seconds, 3),
        downtime_s=0.0,
        pg_version=server_version.split()[0],
        meta=meta,
    )


def _destination(backup_dir: Path) -> Destination:
    """Where archives go: today always the local backup directory."""
    return LocalDirectory(backup_dir)


def fail(
    store: Store, snap: Snapshot, why: BaseException | str, backup_dir: Path | None = None
) -> None:
    """Record why the snapshot failed and remove whatever of its archive exists.

    ``backup_dir`` defaults to the directory ``begin`` chose for it in this process.
    """
    _destination(backup_dir if backup_dir is not None else Path(snap.path).parent).remove(snap)
    store.fail(snap.id, why if isinstance(why, str) else describe(why))


def remove(
    store: Store, snaps: Sequence[Snapshot], backup_dir: Path, reporter: Reporter | None = None
) -> list[Snapshot]:
    """Delete snapshots, archives and records; return those deleted (gone already: skipped).

    Archives are deleted only in ``backup_dir`` (see ``LocalDirectory.remove``): through a copied
    store, ``rm`` never touches the original's files. An archive found only at its recorded path
    elsewhere is left there, and the reporter says so.

    Each snapshot's container lock is held throughout (``locking.holding``: all or none), so
    nothing is deleted while a snapshot or a restore of that container runs: a restore's safety
    snapshot stays until the restore ends. The records are read again here, under those locks.
    The archive goes before the record: a crash between leaves a record whose archive is missing,
    which restore refuses and a second ``rm`` finishes, never an archive nobody knows about.
    """
    with locking.holding(((s.container_id, s.container) for s in snaps), "rm"):
        current = [s for s in (store.get(snap.id) for snap in snaps) if s is not None]
        for snap in current:
            if snap.status == IN_PROGRESS:
                raise LockedError(
                    f"snapshot {snap.id} ({snap.name}) is being taken (pid {snap.pid}); "
                    "nothing was deleted"
                )
        destination = _destination(backup_dir)
        for snap in current:
            if not destination.remove(snap) and reporter is not None:
                _say_left_alone(snap, backup_dir, reporter)
            store.delete(snap.id)
        return current


def _say_left_alone(snap: Snapshot, backup_dir: Path, reporter: Reporter) -> None:
    recorded = Path(snap.path) if snap.path else None
    if snap.status == COMPLETE and recorded is not None and recorded.is_file():
        reporter.warn(
            f"snapshot {snap.id}: its archive is not in {backup_dir.resolve()}; {recorded} "
            "was left where it is (snapvol deletes only in the backup directory it is given)"
        )


def located(snap: Snapshot, backup_dir: Path) -> Snapshot:
    """The snapshot with the archive to read: its file in ``backup_dir`` if it is there, else
    the recorded path (moved or copied stores: reading only; deleting never looks there).

    The current backup directory comes first, so a copied store reads its own copy; the SHA-256
    check every restore and verify starts with proves it is the one.
    """
    here = _destination(backup_dir).find(snap)
    if here is None or here == snap.path:
        return snap
    return Snapshot.model_validate({**snap.model_dump(), "path": here})


def verify(
    store: Store, snaps: Sequence[Snapshot], backup_dir: Path, reporter: Reporter
) -> Iterator[tuple[Snapshot, str | None]]:
    """Check each snapshot's archive as a restore would; yield it with what is wrong, or None.

    Volume snapshots' recorded files are also checked as a restore checks them before it
    touches anything (``restore_refusal``). The result of each complete snapshot is recorded:
    retention keeps the newest snapshot of a source that verified good.
    """
    for snap in snaps:
        problem = _problem(store, snap, backup_dir, reporter)
        if snap.status == COMPLETE:
            store.record_verification(snap.id, problem is None)
        yield snap, problem


def _problem(store: Store, snap: Snapshot, backup_dir: Path, reporter: Reporter) -> str | None:
    try:
        check_archive(located(snap, backup_dir), reporter)
    except SnapvolError as err:
        return err.message
    if snap.kind != "volume":
        return None
    refusal = restore_refusal(
        store.members(snap.id),
        holds_postgres=bool(snap.meta.get("is_postgres")),
        pg_version=snap.pg_version,
    )
    return None if refusal is None else f"a restore would refuse it: {refusal}"


def check_restorable(snapshot: Snapshot) -> None:
    """Only a snapshot recorded as complete can be restored."""
    if snapshot.status != COMPLETE:
        raise IntegrityError(
            f"snapshot {snapshot.id} is {snapshot.status}, not complete; it cannot be restored"
        )


def restore_refusal(
    members: Sequence[Member], *, holds_postgres: bool, pg_version: str | None
) -> str | None:
    """Why a restore would refuse a volume snapshot recorded with ``members`` (and, when it
    holds PostgreSQL data, ``pg_version``) before touching anything; None when it would not.

    A restore runs this on the recorded list before it stops anything, and a volume snapshot
    runs it before it is recorded complete: the one function keeps them from ever disagreeing,
    so that "complete" means "restorable".
    """
    if not members:
        return "it has no recorded files"
    if holds_postgres and not pg_version:
        return (
            "it holds PostgreSQL data but no major version was recorded, so it cannot be "
            "checked against the target's"
        )
    check = MemberCheck()
    seen: set[str] = set()
    for member in members:
        reason = check(member)
        if reason is not None:
            return f"archive member {member.path!r} would land outside the volume ({reason})"
        if member.path in seen:
            return f"archive member {member.path!r} is recorded twice"
        seen.add(member.path)
    return None


def check_archive(snapshot: Snapshot, reporter: Reporter) -> None:
    """The snapshot must be complete and its archive must hash to what the store recorded."""
    check_restorable(snapshot)
    path = Path(snapshot.path)
    if not path.exists():
        raise NotFoundError(
            f"archive {path} of snapshot {snapshot.id} is missing; nothing was changed"
        )
    assert snapshot.sha256 is not None
    reporter.step(f"verifying SHA-256 of {path.name}")
    with reporter.transfer("verifying", snapshot.size_bytes) as advance:
        actual, size = archive.file_sha256(path, advance)
    if size != snapshot.size_bytes or actual != snapshot.sha256:
        raise IntegrityError(
            f"archive {path.name} does not match its recorded SHA-256 "
            f"(expected {snapshot.sha256[:12]}…, got {actual[:12]}…): it was modified or "
            "truncated; nothing was changed"
        )
