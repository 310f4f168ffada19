"""Cleaning up after interrupted runs (``recovery.recover_store``), without Docker: a real store
in tmp_path, real partial files, real processes for the pids and real container locks."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from snapvol import locking, recovery
from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot, Store
from snapvol.names import archive_filename, new_id
from tests.reporters import Said


def add(
    store: Store,
    name: str,
    directory: Path,
    container_id: str,
    *,
    status: str = IN_PROGRESS,
    pid: int | None = None,
    host: str | None = None,
    created: datetime | None = None,
    partial: bool = True,
) -> tuple[Snapshot, Path]:
    """A record and (with ``partial``) the partial file its run was writing."""
    sid = new_id()
    path = directory / archive_filename(name, sid, ".tar.zst")
    snap = Snapshot(
        id=sid,
        name=name,
        kind="volume",
        container="db",
        container_id=container_id,
        path=str(path),
        pid=pid,
        host=host or socket.gethostname(),
        created_at=created or datetime.now(UTC),
    )
    store.add(snap)
    if status == COMPLETE:
        path.write_bytes(b"archive")
        store.complete(sid, sha256="0" * 64, size_bytes=7)
    elif status == FAILED:
        store.fail(sid, "crafted")
    partial_path = Path(str(path) + ".partial")
    if partial:
        partial_path.write_bytes(b"half an archive")
    got = store.get(sid)
    assert got is not None
    return got, partial_path


def status(store: Store, snap: Snapshot) -> str:
    got = store.get(snap.id)
    assert got is not None
    return got.status


def test_a_dead_runs_snapshot_is_failed_and_its_partial_file_removed(
    store: Store, backups: Path, cid: str, dead_pid: int
) -> None:
    snap, partial = add(store, "dead", backups, cid, pid=dead_pid)
    said = Said()
    assert [s.id for s in recovery.recover_store(store, backups, said)] == [snap.id]
    got = store.get(snap.id)
    assert got is not None and (got.status, got.pid) == (FAILED, None)
    assert got.error == f"interrupted: snapvol (pid {dead_pid}) ended before it finished"
    assert not partial.exists() and list(backups.iterdir()) == []
    assert said.warnings == [
        f"snapshot {snap.id} (dead) was interrupted; marked failed and removed its partial file"
    ]
    assert recovery.recover_store(store, backups, Said()) == []  # once only


def test_a_record_without_a_pid_is_interrupted_too(store: Store, backups: Path, cid: str) -> None:
    snap, partial = add(store, "nopid", backups, cid, pid=None)
    assert [s.id for s in recovery.recover_store(store, backups, Said())] == [snap.id]
    assert status(store, snap) == FAILED and not partial.exists()


def test_running_snapshots_are_left_alone(
    store: Store, backups: Path, cid: str, dead_pid: int, live_pid: int
) -> None:
    before = datetime.now(UTC) + timedelta(seconds=5)  # recorded after its process started
    live, live_partial = add(store, "live", backups, cid, pid=live_pid, created=before)
    ours, ours_partial = add(store, "ours", backups, cid, pid=os.getpid())  # this process
    elsewhere, elsewhere_partial = add(
        store, "elsewhere", backups, cid, pid=dead_pid, host=f"not-{socket.gethostname()}"
    )
    said = Said()
    assert recovery.recover_store(store, backups, said) == []
    assert said.warnings == []
    for snap, partial in (
        (live, live_partial),
        (ours, ours_partial),
        (elsewhere, elsewhere_partial),
    ):
        assert status(store, snap) == IN_PROGRESS and partial.exists(), snap.name


def test_a_dead_pid_whose_container_lock_is_held_is_left_alone(
    store: Store, backups: Path, cid: str, dead_pid: int
) -> None:
    """A watchdog holding the lock is still putting the container back."""
    snap, partial = add(store, "held", backups, cid, pid=dead_pid)
    held = locking.acquire(cid, "db", "snapshot --volume")
    try:
        assert recovery.recover_store(store, backups, Said()) == []
        assert status(store, snap) == IN_PROGRESS and partial.exists()
    finally:
        held.release()
    assert [s.id for s in recovery.recover_store(store, backups, Said())] == [snap.id]


def test_a_reused_pid_is_not_the_run(store: Store, backups: Path, cid: str, live_pid: int) -> None:
    """The pid is alive but its process started after the record: another program has it."""
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    snap, partial = add(store, "reused", backups, cid, pid=live_pid, created=long_ago)
    assert [s.id for s in recovery.recover_store(store, backups, Said())] == [snap.id]
    assert status(store, snap) == FAILED and not partial.exists()


def test_partial_files_of_finished_records_are_removed_and_named(
    store: Store, backups: Path, cid: str
) -> None:
    failed, failed_partial = add(store, "failed", backups, cid, status=FAILED)
    done, done_partial = add(store, "done", backups, cid, status=COMPLETE)
    said = Said()
    assert recovery.recover_store(store, backups, said) == []
    assert not failed_partial.exists() and not done_partial.exists()
    assert Path(done.path).read_bytes() == b"archive"  # the archive itself stays
    assert sorted(said.warnings) == sorted(
        f"removed {p.name}, left by an interrupted run" for p in (failed_partial, done_partial)
    )
    assert (status(store, failed), status(store, done)) == (FAILED, COMPLETE)


def test_partial_files_that_are_not_this_stores_are_left_alone(
    store: Store, backups: Path, tmp_path: Path, cid: str
) -> None:
    failed, _ = add(store, "failed", backups, cid, status=FAILED, partial=False)
    sid = failed.id
    foreign = [
        "movie.mkv.partial",  # another program's
        f"other.{new_id()}.tar.zst.partial",  # another store's record, in a shared directory
        f"renamed.{sid}.tar.zst.partial",  # our id, but not our record's name
        f"failed.{sid}.tar.partial",  # not one of our suffixes
        f"failed.{sid}.tar.zst.partial.partial",
        f"failed{sid}.tar.zst.partial",
    ]
    for name in foreign:
        (backups / name).write_bytes(b"not ours")
    (backups / f"failed.{sid}.tar.zst.partial").mkdir()  # ours by name, but a directory
    before = sorted(p.name for p in backups.iterdir())
    said = Said()
    assert recovery.recover_store(store, backups, said) == []
    assert sorted(p.name for p in backups.iterdir()) == before
    assert said.warnings == []


def test_a_dead_runs_file_outside_the_backup_directory_is_left(
    store: Store, backups: Path, tmp_path: Path, cid: str, dead_pid: int
) -> None:
    """A copied store's record points at the original's directory: the record is failed here,
    but only files in this backup directory are removed."""
    original = tmp_path / "original"
    original.mkdir()
    snap, partial = add(store, "copied", original, cid, pid=dead_pid)
    here = backups / partial.name
    here.write_bytes(b"half an archive")
    assert [s.id for s in recovery.recover_store(store, backups, Said())] == [snap.id]
    assert partial.exists() and not here.exists()
