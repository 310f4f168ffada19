"""Drills without the engine: the count comparison, the store's drill records, and the
recovery of a killed drill's record and leftovers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.engine import OWNER_LABEL, VolumeInfo
from snapvol.adapters.store import Drill, Store
from snapvol.drill import checks
from snapvol.drill.recovery import recover_drill_records, recover_drills
from snapvol.drill.sandbox import DRILL_LABEL, HOST_LABEL
from snapvol.errors import IntegrityError
from tests.reporters import Said


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "m.db")
    yield opened
    opened.close()


# --- comparing counts ---------------------------------------------------------------------------


def test_counts_that_match_pass_and_every_difference_is_named() -> None:
    expected = {"app": {"public.a": 3, "public.b": 0}, "postgres": {}}
    checks.compare(expected, {"app": {"public.a": 3, "public.b": 0}, "postgres": {}}, "x")
    checks.compare({"app": {"public.a": 3}}, {"app": {"public.a": 3}, "other": {"t": 1}}, "x")
    with pytest.raises(IntegrityError) as err:
        checks.compare(expected, {"app": {"public.a": 2, "public.c": 5}}, "snapshot ab12cd34")
    assert err.value.message == (
        "the restored tables do not match snapshot ab12cd34: app.public.a has 2 rows, "
        "snapshot ab12cd34 recorded 3; table public.b of app is missing; "
        "table public.c of app was not recorded (and 1 more)"
    )


# --- the store's records -----------------------------------------------------------------------


def test_drills_are_recorded_finished_and_the_last_one_of_each_snapshot_found(
    store: Store,
) -> None:
    a = store.add_drill(Drill(id="d1", snapshot_id="s1", pid=os.getpid(), host="h"))
    assert (a.ok, a.finished_at, a.counts) == (None, None, None)
    assert [d.id for d in store.drills(running=True)] == ["d1"]
    store.finish_drill("d1", ok=True, counts={"app": {"public.t": 2}}, detail="fine")
    store.add_drill(Drill(id="d2", snapshot_id="s1"))
    store.finish_drill("d2", ok=False, error="broken", detail="restored and started")
    store.add_drill(Drill(id="d3", snapshot_id="s2"))  # still running: not a result
    last = store.last_drills()
    assert sorted(last) == ["s1"]
    shown = last["s1"].to_dict()
    assert shown.pop("started_at") <= shown.pop("finished_at")
    assert shown == {
        "id": "d2",
        "snapshot_id": "s1",
        "ok": False,
        "error": "broken",
        "detail": "restored and started",
        "counts": None,
    }
    [first] = [d for d in store.drills(snapshot_id="s1") if d.id == "d1"]
    assert (first.ok, first.counts, first.pid) == (True, {"app": {"public.t": 2}}, None)
    assert [d.id for d in store.drills(running=True)] == ["d3"]


# --- recovery -----------------------------------------------------------------------------------


def test_only_drills_whose_process_is_gone_from_this_host_are_recorded_interrupted(
    store: Store, dead_pid: int, live_pid: int
) -> None:
    here = socket.gethostname()
    store.add_drill(Drill(id="dead", snapshot_id="s", pid=dead_pid, host=here))
    store.add_drill(Drill(id="live", snapshot_id="s", pid=live_pid, host=here))
    store.add_drill(Drill(id="ours", snapshot_id="s", pid=os.getpid(), host=here))
    store.add_drill(Drill(id="away", snapshot_id="s", pid=dead_pid, host=here + "-other"))
    reporter = Said()
    assert recover_drill_records(store, reporter) == 1
    assert reporter.warnings == ["drill dead of snapshot s was interrupted"]
    [dead] = [d for d in store.drills() if d.id == "dead"]
    assert (dead.ok, dead.error) == (
        False,
        f"interrupted: snapvol (pid {dead_pid}) ended before the drill finished",
    )
    assert sorted(d.id for d in store.drills(running=True)) == ["away", "live", "ours"]


class FakeEngine:
    """The engine calls recovery makes, over lists of containers and volumes."""

    def __init__(self, containers: list[dict[str, Any]], volumes: list[VolumeInfo]) -> None:
        self.containers, self.volumes = containers, volumes
        self.removed: list[str] = []

    def labelled_containers(self, label: str) -> list[dict[str, Any]]:
        return [c for c in self.containers if label in c["Labels"]]

    def labelled_volumes(self, label: str) -> list[VolumeInfo]:
        return [v for v in self.volumes if label in v.labels]

    def remove(self, container_id: str) -> None:
        self.removed.append(container_id)

    def remove_volume(self, name: str) -> None:
        self.removed.append(name)


def test_leftovers_of_drills_whose_process_is_gone_are_removed(
    dead_pid: int, live_pid: int
) -> None:
    here = socket.gethostname()

    def tags(drill: str, pid: int, host: str = here) -> dict[str, str]:
        return {DRILL_LABEL: drill, OWNER_LABEL: str(pid), HOST_LABEL: host}

    engine = FakeEngine(
        [
            {"Id": "c-dead", "Labels": tags("a", dead_pid)},
            {"Id": "c-live", "Labels": tags("b", live_pid)},
            {"Id": "c-away", "Labels": tags("c", dead_pid, "elsewhere")},
        ],
        [
            VolumeInfo("v-dead", "", "local", tags("a", dead_pid)),
            VolumeInfo("v-only", "", "local", tags("d", dead_pid)),  # killed before its container
            VolumeInfo("v-live", "", "local", tags("b", live_pid)),
        ],
    )
    reporter = Said()
    assert recover_drills(engine, reporter) == 2  # type: ignore[arg-type]
    assert engine.removed == ["c-dead", "v-dead", "v-only"]
    assert reporter.warnings == [
        "removed the container and volume of 2 drill(s) left by an interrupted run"
    ]


# --- the command's refusals (before any store or engine) ---------------------------------------


def test_database_goes_with_check_sql_and_the_query_file_must_hold_sql(cmd, tmp_path: Path) -> None:
    refused = cmd("drill", "--database", "app", exit_code=2)
    assert refused.stderr == "Error: --database says where --check-sql runs: give --check-sql too\n"
    empty = tmp_path / "empty.sql"
    empty.write_text("  \n")
    refused = cmd("drill", "--check-sql", str(empty), exit_code=2)
    assert refused.stderr == f"Error: {empty} holds no SQL\n"
    assert not (tmp_path / "manifests.db").exists()
