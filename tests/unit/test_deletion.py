"""snapvol deletes only what it wrote: in the current backup directory, under its own naming,
for a record of its own store. Rows are crafted with the store API and archives are real files,
so these run without Docker (``ls``, ``verify``, ``rm`` and ``prune`` never need the engine)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot, Store
from snapvol.names import archive_filename, new_id
from snapvol.pipeline.members import Member
from tests.samples import tree


def dead_pid() -> int:
    """The pid of a process that has just ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def record(
    store: Store,
    name: str,
    *,
    status: str = COMPLETE,
    directory: Path | None = None,
    path: Path | None = None,
    pid: int | None = None,
    content: bytes | None = None,
    container: str = "c",
) -> Snapshot:
    """A snapshot row; with ``content``, its archive too, hashed as snapvol records it."""
    sid = new_id()
    if path is None:
        assert directory is not None
        path = directory / archive_filename(name, sid, ".tar.zst")
    snap = Snapshot(
        id=sid,
        name=name,
        kind="volume",
        container=container,
        container_id=f"id-{container}",
        volume="v",
        path=str(path),
        pid=pid,
        host=socket.gethostname(),
    )
    store.add(snap)
    if content is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if status == COMPLETE:
        digest = hashlib.sha256(content or b"").hexdigest()
        root = Member(path=".", type="dir", size=0, mode=0o755, uid=0, gid=0, mtime_ns=0)
        store.complete(sid, [root], sha256=digest, size_bytes=len(content or b""))
    elif status == FAILED:
        store.fail(sid, "crafted")
    result = store.get(sid)
    assert result is not None
    return result


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir(mode=0o700)
    return path


def test_foreign_files_and_another_stores_running_snapshot_survive_every_command(
    cmd, tmp_path: Path, backups: Path
) -> None:
    # Other programs' files, one named the way snapvol names its own, with no record here.
    (backups / "movie.mkv.partial").write_bytes(b"half a movie")
    (backups / "notes.txt").write_bytes(b"mine")
    (backups / f"stranger.{new_id()}.tar.zst").write_bytes(b"not from this store")
    (backups / f"stranger.{new_id()}.tar.zst.partial").write_bytes(b"not from this store")
    # A second store sharing the directory, taking a snapshot right now (this very process).
    other = Store.open(tmp_path / "other.db")
    running = record(other, "theirs", status=IN_PROGRESS, directory=backups, pid=os.getpid())
    Path(running.path + ".partial").write_bytes(b"their snapshot, being written")
    theirs_done = record(other, "theirs-done", directory=backups, content=b"their archive")
    other.close()
    # This store: two complete snapshots of one source and a failed one.
    store = Store.open(tmp_path / "manifests.db")
    old = record(store, "old", directory=backups, content=b"old archive")
    new = record(store, "new", directory=backups, content=b"new archive")
    failed = record(store, "broken", status=FAILED, directory=backups)
    store.close()
    foreign = {k: v for k, v in tree(backups).items() if k not in {Path(new.path).name}}
    foreign.pop(Path(old.path).name)

    cmd("ls")  # every command starts with recovery
    assert [r["ok"] for r in cmd.json("verify")] == [True, True]
    assert {s["id"] for s in cmd.json("prune", "--keep", "1", "--yes")["snapshots"]} == {
        old.id,
        failed.id,
    }
    cmd("rm", "new", "--yes")
    cmd("ls")

    assert tree(backups) == foreign
    assert cmd.json("ls") == []
    other = Store.open(tmp_path / "other.db")
    assert [s.id for s in other.snapshots()] == [theirs_done.id, running.id]
    other.close()


def test_rows_pointing_outside_the_backup_directory_delete_nothing_there(
    cmd, tmp_path: Path, backups: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (backups / "link").symlink_to(outside)  # a way out of the backup directory
    store = Store.open(tmp_path / "manifests.db")
    # An interrupted snapshot (dead pid) naming any file, and one named as snapvol names its
    # archives, only in the wrong directory.
    record(store, "any", status=IN_PROGRESS, path=outside / "any-file", pid=dead_pid())
    (outside / "any-file").write_bytes(b"precious")
    dead = record(store, "dead", status=IN_PROGRESS, directory=outside, pid=dead_pid())
    Path(dead.path).write_bytes(b"a")
    Path(dead.path + ".partial").write_bytes(b"b")
    # A failed record (prune clears it) and complete ones (rm): outside, and through the link.
    failed = record(store, "failed", status=FAILED, directory=outside)
    Path(failed.path).write_bytes(b"c")
    record(store, "done", directory=outside, content=b"d", container="c1")
    record(store, "through", directory=backups / "link", content=b"e", container="c2")
    store.close()
    before = tree(outside)

    result = cmd("ls")
    assert "was interrupted" in result.stderr
    assert [s["status"] for s in cmd.json("ls", "--status", "failed")] == [FAILED] * 3
    cmd("prune", "--keep", "1", "--yes")
    cmd("rm", "done", "through", "--yes")

    assert tree(outside) == before
    assert [s["name"] for s in cmd.json("ls")] == []


def test_rm_through_a_copied_store_never_deletes_the_originals_archives(
    cmd, tmp_path: Path
) -> None:
    original = tmp_path / "original"
    store = Store.open(original / "manifests.db")
    first = record(store, "first", directory=original / "backups", content=b"1" * 1000)
    second = record(store, "second", directory=original / "backups", content=b"2" * 1000)
    store.close()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    at_original = (
        "--db",
        str(original / "manifests.db"),
        "--backup-dir",
        str(original / "backups"),
    )
    at_copy = ("--db", str(copy / "manifests.db"), "--backup-dir", str(copy / "backups"))
    before = tree(original)

    # The copy reads its own archive (tampered here, so the copy's is the one read).
    (copy / "backups" / Path(second.path).name).write_bytes(b"x" * 1000)
    report = {r["name"]: r["ok"] for r in cmd.json(*at_copy, "verify", exit_code=7)}
    assert report == {"first": True, "second": False}

    cmd(*at_copy, "rm", "first", "--yes")
    assert not (copy / "backups" / Path(first.path).name).exists()
    # A copy without the archive: the record goes, the original's file stays (and is named).
    (copy / "backups" / Path(second.path).name).unlink()
    result = cmd(*at_copy, "rm", "second", "--yes")
    assert f"{second.path} was left where it is" in result.stderr
    assert cmd.json(*at_copy, "ls") == []

    assert tree(original) == before
    assert [r["ok"] for r in cmd.json(*at_original, "verify")] == [True, True]


def test_only_partial_files_of_this_stores_records_are_cleaned_up(
    cmd, tmp_path: Path, backups: Path
) -> None:
    store = Store.open(tmp_path / "manifests.db")
    dead = record(store, "dead", status=IN_PROGRESS, directory=backups, pid=dead_pid())
    Path(dead.path + ".partial").write_bytes(b"left by a killed run")
    failed = record(store, "failed", status=FAILED, directory=backups)
    Path(failed.path + ".partial").write_bytes(b"left behind")
    store.close()
    (backups / "movie.mkv.partial").write_bytes(b"x")

    result = cmd("ls")
    assert f"snapshot {dead.id} (dead) was interrupted" in result.stderr
    assert f"removed {Path(failed.path).name}.partial" in result.stderr
    assert tree(backups) == {"movie.mkv.partial": b"x"}


def test_every_archive_suffix_is_one_snapvol_deletes() -> None:
    from snapvol.pg import logical
    from snapvol.pipeline import archive
    from snapvol.volume import archiving

    assert {archiving.SUFFIX, *logical.SUFFIXES.values()} == set(archive.ARCHIVE_SUFFIXES)
