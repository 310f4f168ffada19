"""`snapvol restore`: one store session per command, and a snapshot that cannot be restored is
refused before the engine or its container is reached. No engine: where the command would reach
it, the session is replaced by one that records the call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapvol import recovery
from snapvol.adapters.store import COMPLETE, FAILED, Snapshot, Store
from snapvol.cli.context import AppContext
from snapvol.errors import Cancelled


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    store = Store.open(tmp_path / "manifests.db")
    for sid, name, status, kind in (
        ("aaaa1111", "good", COMPLETE, "volume"),
        ("bbbb2222", "broken", FAILED, "volume"),
        ("cccc3333", "dump", COMPLETE, "logical"),
    ):
        store.add(Snapshot(id=sid, name=name, kind=kind, status=status, container="db", path="/x"))
    store.close()
    return tmp_path / "manifests.db"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each store opened and recovered, each engine connection and each container locked;
    locking cancels the command (nothing past it runs)."""
    seen: list[str] = []
    open_store = Store.open.__func__  # type: ignore[attr-defined]
    recover = recovery.recover_store

    def opened(cls: type[Store], path: Path, **kwargs: Any) -> Store:
        seen.append("open store")
        return open_store(cls, path, **kwargs)

    def recovered(*args: Any) -> Any:
        seen.append("recover store")
        return recover(*args)

    @contextlib.contextmanager
    def connected(self: AppContext, store: Store) -> Iterator[Any]:
        seen.append("connect engine")
        yield object()

    def locked(self: AppContext, ws: Any, container: str, operation: str, also: Any = ()) -> Any:
        seen.append(f"lock {container} for {operation}")
        raise Cancelled("stopped by the test")

    monkeypatch.setattr(Store, "open", classmethod(opened))
    monkeypatch.setattr(recovery, "recover_store", recovered)  # imported where used
    monkeypatch.setattr(AppContext, "connected", connected)
    monkeypatch.setattr(AppContext, "locked", locked)
    return seen


@pytest.mark.usefixtures("store_path")
def test_a_restore_opens_and_recovers_the_store_once(cmd: Any, session: list[str]) -> None:
    cmd("restore", "good", "--yes", exit_code=10)
    assert session == [
        "open store",
        "recover store",
        "connect engine",
        "lock db for restore aaaa1111",
    ]


@pytest.mark.usefixtures("store_path")
def test_the_container_given_is_the_one_locked(cmd: Any, session: list[str]) -> None:
    cmd("restore", "dump", "--container", "other", "--yes", exit_code=10)
    assert session[-1] == "lock other for restore cccc3333"


@pytest.mark.usefixtures("store_path")
def test_a_snapshot_that_cannot_be_restored_is_refused_before_the_engine(
    cmd: Any, session: list[str]
) -> None:
    result = cmd("restore", "broken", "--yes", exit_code=7)
    assert result.stderr == (
        "Error: snapshot bbbb2222 is failed, not complete; it cannot be restored\n"
    )
    assert session == ["open store", "recover store"]


@pytest.mark.usefixtures("store_path")
def test_logical_flags_on_a_volume_restore_are_refused_before_the_engine(
    cmd: Any, session: list[str]
) -> None:
    result = cmd("restore", "good", "--database", "x", exit_code=2)
    assert "go with logical restores" in result.stderr
    assert "connect engine" not in session


def test_restore_without_id_and_without_terminal_asks_for_one(cmd: Any, tmp_path: Path) -> None:
    from snapvol.adapters.store import Store

    Store.open(tmp_path / "manifests.db").close()  # an empty store: restore never creates one
    result = cmd("restore", exit_code=2)
    assert result.stderr == (
        "Error: which snapshot? give an id or name (see `snapvol ls`); "
        "the interactive list needs a terminal\n"
    )


def test_restore_argument_combinations(cmd: Any, tmp_path: Path) -> None:
    result = cmd("restore", "abc", "--file", str(tmp_path / "x.sql"), exit_code=2)
    assert "not both" in result.stderr
