"""`snapvol show REF` and `ls`'s COPIES column, over a real store file (no Docker)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapvol.adapters.store import COMPLETE, FAILED, Copy, Snapshot, Store


@pytest.fixture
def store_file() -> Path:
    path = Path(os.environ["SNAPVOL_DB"])
    store = Store.open(path)
    try:
        for sid, name in (("90c0d4ab", "primero"), ("90c0aaaa", "segundo")):
            snap = store.add(Snapshot(id=sid, name=name, kind="volume", container="db"))
            store.complete(snap.id, path=f"/b/{name}.tar.zst", sha256="a" * 64, size_bytes=10)
        for cid, status, at, error in (
            ("c1", FAILED, datetime(2026, 1, 1, 10, tzinfo=UTC), "connection refused"),
            ("c2", COMPLETE, datetime(2026, 1, 1, 11, tzinfo=UTC), None),
        ):
            store.add_copy(
                Copy(
                    id=cid,
                    snapshot_id="90c0d4ab",
                    repository_id="R",
                    repository="rest:https://host:8000/repo",
                    status=status,
                    data_snapshot="fedcba9876543210" if status == COMPLETE else None,
                    bytes_added=2048 if status == COMPLETE else None,
                    created_at=at,
                    completed_at=at if status == COMPLETE else None,
                    error=error,
                )
            )
    finally:
        store.close()
    return path


@pytest.mark.parametrize("ref", ["90c0d4ab", "90c0d", "primero"])
def test_show_finds_a_snapshot_as_restore_does(store_file: Path, cmd, ref: str) -> None:
    shown = cmd("show", ref).stdout
    assert shown.splitlines()[0].split() == ["Snapshot", "90c0d4ab", "primero", "(volume)"]
    assert "/b/primero.tar.zst" in shown and "a" * 64 in shown
    assert "1 complete of 2" in shown
    assert "fedcba98" in shown and "failed: connection refused" in shown


def test_show_json_is_ls_json_with_when_and_why_of_each_copy(store_file: Path, cmd) -> None:
    shown = cmd.json("show", "primero")
    listed = next(s for s in cmd.json("ls") if s["id"] == "90c0d4ab")
    extra = [{"started_at": c.pop("started_at"), "error": c.pop("error")} for c in shown["copies"]]
    assert shown == listed
    assert extra == [
        {"started_at": "2026-01-01T11:00:00Z", "error": None},
        {"started_at": "2026-01-01T10:00:00Z", "error": "connection refused"},
    ]
    assert [c["restic_snapshot"] for c in shown["copies"]] == ["fedcba9876543210", None]


@pytest.mark.parametrize(
    ("ref", "code", "said"),
    [
        ("nope", 3, "no snapshot with id or name 'nope'"),
        ("90c", 3, "4 or more hex digits"),
        ("90c0", 2, "matches several snapshots"),
    ],
)
def test_show_refuses_what_it_cannot_find_in_one_line(
    store_file: Path, cmd, ref: str, code: int, said: str
) -> None:
    result = cmd("show", ref, exit_code=code)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and said in line


def test_show_without_a_store_creates_none(cmd) -> None:
    cmd("show", "primero", exit_code=6)
    assert not Path(os.environ["SNAPVOL_DB"]).exists()


def test_ls_shows_how_many_copies_are_complete(store_file: Path, cmd) -> None:
    lines = cmd("ls").stdout.splitlines()
    assert lines[0].split()[-2:] == ["STATUS", "COPIES"]
    counts = {line.split()[0]: line.split()[-1] for line in lines[1:]}
    assert counts == {"90c0d4ab": "1", "90c0aaaa": "-"}


def test_a_failed_snapshot_shows_no_archive_unless_one_is_there(
    store_file: Path, cmd, tmp_path: Path
) -> None:
    store = Store.open(store_file)
    try:
        for sid, name in (("7e57aaaa", "gone"), ("7e57bbbb", "kept")):
            store.add(Snapshot(id=sid, name=name, kind="volume", container="db"))
            store.update(sid, path=str(tmp_path / f"{name}.tar.zst"))
            store.fail(sid, "interrupted")
    finally:
        store.close()
    (tmp_path / "kept.tar.zst").write_bytes(b"x")
    assert "none (the snapshot failed; what it wrote was removed)" in cmd("show", "gone").stdout
    assert str(tmp_path / "kept.tar.zst") in cmd("show", "kept").stdout
