"""The store records each snapshot's last verification; a store from before gains the columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, text

from snapvol.adapters.store import COMPLETE, Snapshot, Store, _m001_initial


def old_store(path: Path) -> None:
    """A store as the first release wrote it: only the initial migration, one snapshot."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE snapvol_migrations (name TEXT PRIMARY KEY, applied_at DATETIME)")
        )
        _m001_initial(conn)
        conn.execute(text("INSERT INTO snapvol_migrations VALUES ('001_initial', '2026-01-01')"))
        conn.execute(
            text(
                "INSERT INTO snapshots (id, name, kind, status, container, created_at) "
                "VALUES ('0123456789ab', 'old', 'volume', 'complete', 'db', '2026-01-01 00:00')"
            )
        )
    engine.dispose()


def test_an_old_store_gains_the_verification_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "manifests.db"
    old_store(path)
    store = Store.open(path)
    try:
        snap = store.get("0123456789ab")
        assert snap is not None and snap.name == "old" and snap.status == COMPLETE
        assert snap.verified_at is None and snap.verify_ok is None
        assert snap.to_dict()["verify_ok"] is None

        store.record_verification("0123456789ab", False)
        first = store.get("0123456789ab")
        assert first is not None and first.verify_ok is False and first.verified_at is not None
        store.record_verification("0123456789ab", True)
        again = store.get("0123456789ab")
        assert again is not None and again.verify_ok is True
        assert again.to_dict()["verified_at"].endswith("Z")

        store.record_verification("no-such-id", True)  # deleted meanwhile: nothing to do
        store.add(Snapshot(id="ba9876543210", name="new", kind="volume", container="db"))
        new = store.get("ba9876543210")
        assert new is not None and new.verify_ok is None
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM snapvol_migrations ORDER BY name")]
    assert names == [
        "001_initial",
        "002_verify_result",
        "003_fidelity",
        "004_copies",
        "005_repo_checks",
        "006_drills",
        "007_copy_content_digest",
    ]
