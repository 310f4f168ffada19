"""`snapvol rm` and `snapvol verify`: deleting only when asked, checking without changing."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

from snapvol import locking
from tests.archives import flip_middle_byte
from tests.docker_helpers import TestBed, fail_a_snapshot


def file_rows(db: Path, snapshot_id: str) -> int:
    with sqlite3.connect(db) as conn:
        query = "select count(*) from snapshot_files where snapshot_id = ?"
        return int(conn.execute(query, (snapshot_id,)).fetchone()[0])


def two_snapshots(bed: TestBed, cmd) -> tuple[object, dict, dict]:
    container, _vol = bed.plain()
    container.exec_run(
        ["sh", "-c", "head -c 300000 /dev/urandom > /srv/data/blob; echo hi > /srv/data/a"]
    )
    first = cmd.json("snapshot", "--volume", "--container", container.name, "--name", "uno")
    second = cmd.json("snapshot", "--volume", "--container", container.name, "--name", "dos")
    return container, first, second


def test_rm_asks_then_deletes_archive_and_record(bed: TestBed, cmd, tmp_path: Path) -> None:
    container, first, second = two_snapshots(bed, cmd)
    db = tmp_path / "manifests.db"
    assert file_rows(db, first["id"]) > 0

    declined = cmd("rm", "uno", input="n\n", exit_code=10)
    assert "uno" in declined.stderr and "nothing was deleted" in declined.stderr
    assert Path(first["path"]).exists() and len(cmd.json("ls")) == 2

    cmd("rm", first["id"][:7], input="y\n")  # a prefix; [:4] would clash once in 65536 runs
    assert not Path(first["path"]).exists()
    assert [s["id"] for s in cmd.json("ls")] == [second["id"]]
    assert file_rows(db, first["id"]) == 0
    assert Path(second["path"]).exists() and file_rows(db, second["id"]) > 0

    # What is left is whole: it still restores.
    cmd("restore", "dos", "--container", container.name, "--yes", "--no-safety-snapshot")
    removed = cmd.json("rm", "dos", "--yes")
    assert [s["id"] for s in removed] == [second["id"]]
    assert cmd.json("ls") == [] and not Path(second["path"]).exists()
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == []


def test_rm_finds_every_ref_before_deleting_any(bed: TestBed, cmd) -> None:
    _container, first, _second = two_snapshots(bed, cmd)
    result = cmd("rm", "uno", "no-such-snapshot", "--yes", exit_code=3)
    assert "no-such-snapshot" in result.stderr
    assert Path(first["path"]).exists() and len(cmd.json("ls")) == 2


def test_rm_refuses_while_an_operation_holds_the_container(bed: TestBed, cmd) -> None:
    container, first, _second = two_snapshots(bed, cmd)
    held = locking.acquire(container.id, container.name, "restore dos")  # what a restore holds
    try:
        result = cmd("rm", "uno", "--yes", exit_code=9)
        assert "`snapvol restore dos`" in result.stderr
        assert Path(first["path"]).exists() and len(cmd.json("ls")) == 2
    finally:
        held.release()
    cmd("rm", "uno", "--yes")
    assert len(cmd.json("ls")) == 1


def test_rm_removes_the_record_of_a_failed_snapshot(bed: TestBed, cmd) -> None:
    container, _vol = bed.plain()
    failed = fail_a_snapshot(cmd, container.name)
    listed = cmd.json("ls")
    assert [s["status"] for s in listed] == ["failed"], failed.stderr
    cmd("rm", listed[0]["id"], "--yes")
    assert cmd.json("ls") == []


def test_verify_reports_each_archive_and_fails_on_a_bad_one(bed: TestBed, cmd) -> None:
    _container, first, second = two_snapshots(bed, cmd)
    assert [r["ok"] for r in cmd.json("verify")] == [True, True]
    assert "ok" in cmd("verify", "uno").stderr

    archive = Path(first["path"])
    flip_middle_byte(archive)
    result = cmd("verify", exit_code=7)
    assert "does not match its recorded SHA-256" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 1 of 2 snapshot(s) failed verification"
    )
    report = {r["id"]: r for r in cmd.json("verify", exit_code=7)}
    assert report[second["id"]]["ok"] and not report[first["id"]]["ok"]

    archive.unlink()
    missing = cmd.json("verify", "uno", exit_code=7)
    assert "is missing" in missing[0]["error"]
    assert archive.exists() is False and len(cmd.json("ls")) == 2  # verify changes nothing


def test_prune_keeps_the_newest_per_source(bed: TestBed, cmd) -> None:
    container, first, second = two_snapshots(bed, cmd)
    other, _vol = bed.plain()
    lone = cmd.json("snapshot", "--volume", "--container", other.name, "--name", "solo")
    third = cmd.json("snapshot", "--volume", "--container", container.name, "--name", "tres")

    cmd("prune", "--keep", "1", input="n\n", exit_code=10)
    assert len(cmd.json("ls")) == 4

    removed = cmd.json("prune", "--keep", "1", "--yes")["snapshots"]
    assert [s["id"] for s in removed] == [second["id"], first["id"]]
    assert {s["id"] for s in cmd.json("ls")} == {third["id"], lone["id"]}
    assert [s["id"] for s in cmd.json("ls", "--container", other.name)] == [lone["id"]]
    assert cmd.json("ls", "--kind", "logical") == []
    assert "No snapshots match." in cmd("ls", "--status", "failed").stderr
    assert not Path(first["path"]).exists() and not Path(second["path"]).exists()
    assert Path(third["path"]).exists() and Path(lone["path"]).exists()
    assert "nothing to prune" in cmd("prune", "--keep", "1").stderr
    assert cmd.json("verify") and all(r["ok"] for r in cmd.json("verify"))


def test_a_moved_backup_directory_still_verifies_restores_and_deletes(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, _first, second = two_snapshots(bed, cmd)
    moved = tmp_path / "elsewhere"
    (tmp_path / "backups").rename(moved)  # as if copied, with the store, to another machine
    assert "is missing" in cmd("verify", "dos", exit_code=7).stderr

    elsewhere = ("--backup-dir", str(moved))
    assert [r["ok"] for r in cmd.json(*elsewhere, "verify")] == [True, True]
    container.exec_run(["sh", "-c", "echo changed > /srv/data/a; rm /srv/data/blob"])
    cmd(*elsewhere, "restore", "dos", "--container", container.name, "--yes")
    code, out = container.exec_run(["sh", "-c", "cat /srv/data/a; wc -c < /srv/data/blob"])
    assert code == 0 and out.split() == [b"hi", b"300000"]

    cmd(*elsewhere, "rm", "dos", "--yes")
    assert not (moved / Path(second["path"]).name).exists()


def test_rm_through_a_copied_store_leaves_the_original_whole(
    bed: TestBed, cmd, tmp_path: Path, monkeypatch
) -> None:
    _container, first, second = two_snapshots(bed, cmd)
    copy = tmp_path / "copy"
    copy.mkdir()
    for part in tmp_path.glob("manifests.db*"):
        shutil.copy2(part, copy / part.name)
    shutil.copytree(tmp_path / "backups", copy / "backups")
    original = {p.name: p.read_bytes() for p in (tmp_path / "backups").iterdir()}
    assert len(original) == 2

    # Only --db: the backup directory beside it is the copy's, not the recorded one.
    at_copy = ("--db", str(copy / "manifests.db"))
    monkeypatch.delenv("SNAPVOL_BACKUP_DIR")
    removed = cmd.json(*at_copy, "rm", "uno", "dos", "--yes")
    assert {s["id"] for s in removed} == {first["id"], second["id"]}
    assert cmd.json(*at_copy, "ls") == [] and list((copy / "backups").iterdir()) == []

    assert {p.name: p.read_bytes() for p in (tmp_path / "backups").iterdir()} == original
    assert [r["ok"] for r in cmd.json("verify")] == [True, True]


def test_only_snapshot_creates_the_store_and_says_where(bed: TestBed, cmd, tmp_path: Path) -> None:
    container, _vol = bed.plain()
    assert "no manifest store at" in cmd("verify", exit_code=6).stderr
    assert not (tmp_path / "manifests.db").exists()
    first = cmd("snapshot", "--volume", "--container", container.name)
    assert (
        f"created the manifest store {tmp_path / 'manifests.db'} "
        f"(archives in {tmp_path / 'backups'})"
    ) in first.stderr
    second = cmd("snapshot", "--volume", "--container", container.name)
    assert "created the manifest store" not in second.stderr
    assert len(cmd.json("ls")) == 2


def test_a_backup_directory_linked_to_a_shared_one_keeps_its_mode(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (tmp_path / "backups").symlink_to(shared)
    container, _vol = bed.plain()
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    assert stat.S_IMODE(shared.lstat().st_mode) == 0o1777
    archive = Path(snap["path"])
    assert archive.parent == shared.resolve() and stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert [r["ok"] for r in cmd.json("verify")] == [True]
    cmd("rm", snap["id"], "--yes")
    assert list(shared.iterdir()) == [] and stat.S_IMODE(shared.lstat().st_mode) == 0o1777
