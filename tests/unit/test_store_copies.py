"""The store records copies of snapshots in restic repositories (migration 004_copies)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Copy, Snapshot, Store


def test_copies_are_recorded_completed_failed_and_listed_newest_first(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db")
    try:
        t0 = datetime(2026, 12, 1, tzinfo=UTC)
        a = store.add_copy(
            Copy(
                id="c1",
                snapshot_id="s1",
                repository_id="R1",
                repository="/r1",
                pid=7,
                host="h",
                created_at=t0,
            )
        )
        assert a.status == IN_PROGRESS
        store.add_copy(
            Copy(
                id="c2",
                snapshot_id="s1",
                repository_id="R2",
                repository="/r2",
                created_at=t0 + timedelta(1),
            )
        )
        store.add_copy(
            Copy(
                id="c3",
                snapshot_id="s2",
                repository_id="R1",
                repository="/r1",
                created_at=t0 + timedelta(2),
            )
        )
        done = store.complete_copy(
            "c1",
            data_snapshot="d" * 64,
            manifest_snapshot="m" * 64,
            raw_sha256="a" * 64,
            raw_bytes=10,
            bytes_added=5,
        )
        assert done.status == COMPLETE and done.pid is None and done.completed_at is not None
        store.fail_copy("c2", "server went away")
        store.fail_copy("nope", "deleted meanwhile")
        assert [c.id for c in store.copies()] == ["c3", "c2", "c1"]
        assert [c.id for c in store.copies(snapshot_id="s1")] == ["c2", "c1"]
        assert [c.id for c in store.copies(repository_id="R1")] == ["c3", "c1"]
        assert [c.id for c in store.copies(status=FAILED)] == ["c2"]
        assert store.copies(status=FAILED)[0].error == "server went away"
        assert [
            c.id for c in store.copies(snapshot_id="s1", repository_id="R1", status=COMPLETE)
        ] == ["c1"]
    finally:
        store.close()


def test_a_copy_outlives_its_snapshot_and_shows_in_to_dict(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db")
    try:
        store.add(Snapshot(id="0a1b2c3d", name="n", kind="volume", container="db"))
        store.add_copy(
            Copy(id="c1", snapshot_id="0a1b2c3d", repository_id="R", repository="sftp:host:/r")
        )
        copy = store.complete_copy("c1", data_snapshot="d" * 64, bytes_added=42)
        snap = store.get("0a1b2c3d")
        assert snap is not None
        assert snap.to_dict()["copies"] == []
        assert snap.to_dict(store.copies(snapshot_id=snap.id))["copies"] == [
            {
                "repository": "sftp:host:/r",
                "restic_snapshot": "d" * 64,
                "status": "complete",
                "completed_at": copy.to_dict()["completed_at"],
                "bytes_added": 42,
            }
        ]
        assert copy.to_dict()["completed_at"].endswith("Z")
        store.delete("0a1b2c3d")
        assert [c.id for c in store.copies(snapshot_id="0a1b2c3d")] == ["c1"]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "m.db") as db:
        names = [r[0] for r in db.execute("SELECT name FROM snapvol_migrations ORDER BY name")]
    assert "004_copies" in names


def test_a_copy_completed_meanwhile_is_never_marked_failed(tmp_path: Path) -> None:
    """Recovery reads the in-progress copies, then judges each pid: a copy whose process
    completed it in between must stay complete."""
    store = Store.open(tmp_path / "m.db")
    try:
        store.add_copy(Copy(id="c1", snapshot_id="s1", repository_id="R", repository="/r"))
        store.complete_copy("c1", bytes_added=1)
        assert not store.fail_copy("c1", "interrupted")
        assert [(c.id, c.status) for c in store.copies()] == [("c1", COMPLETE)]
        store.add_copy(Copy(id="c2", snapshot_id="s2", repository_id="R", repository="/r"))
        assert store.fail_copy("c2", "interrupted")
        assert {c.id: c.status for c in store.copies()} == {"c1": COMPLETE, "c2": FAILED}
    finally:
        store.close()
