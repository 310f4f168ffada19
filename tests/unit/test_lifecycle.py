"""A snapshot's life in the store, without Docker: names, the archive's own file name, deleting
only snapvol's files, finding a moved archive, and the checks every restore starts with. Real
stores and real files in tmp_path; real locks in the machine-wide lock directory."""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import pytest

from snapvol import lifecycle, locking
from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot, Store
from snapvol.errors import IntegrityError, LockedError, NotFoundError, UsageError
from snapvol.names import archive_filename, new_id
from snapvol.output import Reporter
from snapvol.pipeline.members import DIRECTORY, REGULAR, SYMLINK, Member


class Said(Reporter):
    """A reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.steps: list[str] = []

    def step(self, message: str) -> None:
        self.steps.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def add(
    store: Store,
    name: str,
    directory: Path,
    container_id: str,
    *,
    status: str = COMPLETE,
    content: bytes | None = b"archive",
    suffix: str = ".tar.zst",
    path: Path | None = None,
) -> Snapshot:
    """A record (and with ``content`` its archive, hashed as snapvol records it)."""
    sid = new_id()
    path = path or directory / archive_filename(name, sid, suffix)
    store.add(
        Snapshot(
            id=sid,
            name=name,
            kind="volume",
            container="db",
            container_id=container_id,
            path=str(path),
            pid=None if status != IN_PROGRESS else 1,
            host=socket.gethostname(),
        )
    )
    if content is not None:
        path.write_bytes(content)
    if status == COMPLETE:
        digest = hashlib.sha256(content or b"").hexdigest()
        store.complete(sid, [member(".", DIRECTORY)], sha256=digest, size_bytes=len(content or b""))
    elif status == FAILED:
        store.fail(sid, "crafted")
    got = store.get(sid)
    assert got is not None
    return got


def member(path: str, type: str = REGULAR, linkname: str = "") -> Member:
    return Member(
        path=path, type=type, size=0, mode=0o644, uid=0, gid=0, mtime_ns=0, linkname=linkname
    )


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --- unique_name --------------------------------------------------------------------------------


def test_a_given_name_is_only_validated(store: Store, backups: Path, cid: str) -> None:
    add(store, "mine", backups, cid)
    assert lifecycle.unique_name(store, "mine", "db", "volume") == "mine"  # Store.add refuses it
    with pytest.raises(UsageError, match="already exists"):
        add(store, "mine", backups, cid)
    for bad in (".hidden", "a/b", "", "x" * 129, "with space"):
        with pytest.raises(UsageError, match="invalid snapshot name"):
            lifecycle.unique_name(store, bad, "db", "volume")


def test_a_default_name_is_the_container_kind_and_time(store: Store) -> None:
    name = lifecycle.unique_name(store, None, "/my db", "logical")
    assert re.fullmatch(r"_my_db-logical-\d{8}-\d{6}", name), name


def test_a_taken_default_name_gets_the_next_free_number(
    store: Store, backups: Path, cid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "default_name", lambda container, kind, when: "db-volume-t")
    assert lifecycle.unique_name(store, None, "db", "volume") == "db-volume-t"
    for taken in ("db-volume-t", "db-volume-t-2", "db-volume-t-3", "db-volume-t-5"):
        add(store, taken, backups, cid)
    assert lifecycle.unique_name(store, None, "db", "volume") == "db-volume-t-4"


def test_remove_deletes_the_archive_its_partial_and_the_record_and_nothing_else(
    store: Store, backups: Path, cid: str
) -> None:
    gone = add(store, "gone", backups, cid)
    Path(gone.path + ".partial").write_bytes(b"half")
    kept = add(store, "kept", backups, cid)
    Path(kept.path + ".partial").write_bytes(b"half")
    (backups / "gone.txt").write_bytes(b"not ours")
    (backups / f"gone.{gone.id}.tar").write_bytes(b"not our suffix")
    before = names(backups)

    assert [s.id for s in lifecycle.remove(store, [gone], backups)] == [gone.id]
    assert names(backups) == before - {Path(gone.path).name, Path(gone.path).name + ".partial"}
    assert store.get(gone.id) is None and store.get(kept.id) is not None
    assert not locking.is_held(cid)  # the lock was released


def test_remove_skips_records_already_gone(store: Store, backups: Path, cid: str) -> None:
    first, second = add(store, "first", backups, cid), add(store, "second", backups, cid)
    store.delete(first.id)
    assert [s.id for s in lifecycle.remove(store, [first, second], backups)] == [second.id]
    assert names(backups) == {Path(first.path).name}  # its record gone, its file is no longer ours


def test_remove_of_a_snapshot_being_taken_deletes_nothing(
    store: Store, backups: Path, cid: str
) -> None:
    done = add(store, "done", backups, cid)
    running = add(store, "running", backups, cid, status=IN_PROGRESS)
    before = names(backups)
    with pytest.raises(LockedError, match=rf"snapshot {running.id} \(running\) is being taken"):
        lifecycle.remove(store, [done, running], backups)
    assert names(backups) == before
    assert store.get(done.id) is not None and store.get(running.id) is not None
    assert not locking.is_held(cid)


def test_remove_while_the_container_is_locked_deletes_nothing(
    store: Store, backups: Path, cid: str
) -> None:
    done = add(store, "done", backups, cid)
    held = locking.acquire(cid, "db", "restore done")
    try:
        with pytest.raises(LockedError, match="another snapvol operation is running on db"):
            lifecycle.remove(store, [done], backups)
    finally:
        held.release()
    assert store.get(done.id) is not None and Path(done.path).exists()


def test_remove_leaves_an_archive_outside_the_backup_directory_and_says_so(
    store: Store, backups: Path, tmp_path: Path, cid: str
) -> None:
    original = tmp_path / "original"
    original.mkdir()
    elsewhere = add(store, "elsewhere", original, cid)
    said = Said()
    assert lifecycle.remove(store, [elsewhere], backups, said)
    assert Path(elsewhere.path).read_bytes() == b"archive"
    assert store.get(elsewhere.id) is None
    assert said.warnings == [
        f"snapshot {elsewhere.id}: its archive is not in {backups.resolve()}; {elsewhere.path} "
        "was left where it is (snapvol deletes only in the backup directory it is given)"
    ]
    # A failed snapshot's leftover elsewhere is not worth a word.
    failed = add(store, "failed", original, cid, status=FAILED)
    lifecycle.remove(store, [failed], backups, said)
    assert len(said.warnings) == 1 and Path(failed.path).exists()


def test_remove_deletes_a_copy_in_the_backup_directory_not_the_recorded_one(
    store: Store, backups: Path, tmp_path: Path, cid: str
) -> None:
    original = tmp_path / "original"
    original.mkdir()
    snapshot = add(store, "copied", original, cid)
    copy = backups / Path(snapshot.path).name
    copy.write_bytes(b"archive")
    lifecycle.remove(store, [snapshot], backups, Said())
    assert not copy.exists() and Path(snapshot.path).exists()


# --- located ------------------------------------------------------------------------------------


def test_located_prefers_the_backup_directory(
    store: Store, backups: Path, tmp_path: Path, cid: str
) -> None:
    moved_from = tmp_path / "old"
    moved_from.mkdir()
    snapshot = add(store, "moved", moved_from, cid)
    # Not in the backup directory: the recorded path, the same record.
    assert lifecycle.located(snapshot, backups) is snapshot
    here = backups / Path(snapshot.path).name
    here.write_bytes(b"archive")
    found = lifecycle.located(snapshot, backups)
    assert found.path == str(here.resolve()) and found.id == snapshot.id
    assert snapshot.path == str(moved_from / here.name)  # the record itself is unchanged
    assert store.get(snapshot.id).path == snapshot.path  # type: ignore[union-attr]
    # Already there: the record as it is.
    at_home = add(store, "home", backups.resolve(), cid)
    assert lifecycle.located(at_home, backups) is at_home


def test_located_ignores_what_is_not_an_archive_of_ours(
    store: Store, backups: Path, tmp_path: Path, cid: str
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    foreign = add(store, "foreign", other, cid, path=other / "foreign.tar.zst")
    (backups / "foreign.tar.zst").write_bytes(b"archive")
    assert lifecycle.located(foreign, backups) is foreign
    linked = add(store, "linked", other, cid)
    (backups / Path(linked.path).name).symlink_to(linked.path)  # a link is not a file here
    assert lifecycle.located(linked, backups) is linked
    directory = add(store, "directory", other, cid)
    (backups / Path(directory.path).name).mkdir()
    assert lifecycle.located(directory, backups) is directory


# --- restore_refusal and check_archive -----------------------------------------------------------


def refusal(
    members: list[Member], holds_postgres: bool = False, pg_version: str | None = None
) -> str | None:
    return lifecycle.restore_refusal(members, holds_postgres=holds_postgres, pg_version=pg_version)


def test_restore_refusal_cases() -> None:
    root = member(".", DIRECTORY)
    assert refusal([root]) is None
    assert refusal([root], pg_version="15") is None  # a version without PostgreSQL data: fine
    assert refusal([root], holds_postgres=True, pg_version="") is not None
    assert refusal([root, member("l", SYMLINK, "/etc"), member("l/passwd")]) == (
        "archive member 'l/passwd' would land outside the volume "
        "(its parent 'l' is a symbolic link)"
    )
    # A link beside a directory of the same prefix is not its parent.
    assert (
        refusal([root, member("l", SYMLINK, "x"), member("lx", DIRECTORY), member("lx/f")]) is None
    )


def test_check_archive_cases(store: Store, backups: Path, cid: str) -> None:
    good = add(store, "good", backups, cid)
    lifecycle.check_archive(good, Said())
    failed = add(store, "failed", backups, cid, status=FAILED)
    with pytest.raises(IntegrityError, match=f"snapshot {failed.id} is failed, not complete"):
        lifecycle.check_archive(failed, Said())
    running = add(store, "running", backups, cid, status=IN_PROGRESS)
    with pytest.raises(IntegrityError, match="is in_progress, not complete"):
        lifecycle.check_restorable(running)
    missing = add(store, "missing", backups, cid)
    Path(missing.path).unlink()
    with pytest.raises(NotFoundError, match=f"archive {missing.path} of snapshot .* is missing"):
        lifecycle.check_archive(missing, Said())
    for damage in (b"archivE", b"archive and more", b"archiv"):
        Path(good.path).write_bytes(damage)
        with pytest.raises(IntegrityError, match="does not match its recorded SHA-256"):
            lifecycle.check_archive(good, Said())
