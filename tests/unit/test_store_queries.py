"""`snapvol ls` stays fast with thousands of snapshots: what every command asks the store is
answered from an index, never by scanning or sorting the tables (a query plan, not a timing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event

from snapvol.adapters.store import FAILED, IN_PROGRESS, Snapshot, Store


def plans(tmp_path: Path, call: Any) -> list[str]:
    store = Store.open(tmp_path / "manifests.db")
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", record)
    call(store)
    store.close()
    with sqlite3.connect(tmp_path / "manifests.db") as db:
        return [
            " | ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in seen
        ]


def test_listing_walks_the_created_at_index(tmp_path: Path) -> None:
    for plan in plans(tmp_path, lambda s: (s.snapshots(limit=20), s.snapshots())):
        assert "ix_snapshots_created_at" in plan and "TEMP B-TREE" not in plan, plan


def test_recovery_finds_runs_in_progress_by_the_status_index(tmp_path: Path) -> None:
    [plan] = plans(tmp_path, lambda s: s.snapshots(status=IN_PROGRESS))
    assert "ix_snapshots_status" in plan, plan


def test_resolving_a_reference_never_scans(tmp_path: Path) -> None:
    for plan in plans(tmp_path, lambda s: [s.get("00000000"), s.name_exists("x")]):
        assert "SCAN" not in plan, plan


def test_listing_filters_by_container_kind_and_status(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "manifests.db")
    for n, (container, kind) in enumerate([("db", "volume"), ("db", "logical"), ("web", "volume")]):
        store.add(Snapshot(id=f"{n:08x}", name=f"s{n}", kind=kind, container=container, path="/x"))
    store.fail("00000002", "boom")

    def names(**filters: str) -> list[str]:
        return sorted(s.name for s in store.snapshots(**filters))

    assert names(container="db") == ["s0", "s1"]
    assert names(kind="volume") == ["s0", "s2"]
    assert names(container="db", kind="logical") == ["s1"]
    assert names(status=FAILED) == ["s2"]
    assert names(container="nope") == []
