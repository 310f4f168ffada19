"""A drill killed mid-way: the next command removes its container and volume, and records it
interrupted; the source is never touched."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from tests.docker_helpers import TestBed
from tests.faults.procs import snapvol_process

DRILL_LABEL = "org.snapvol.drill"


def _drill_containers(bed: TestBed) -> list:
    return bed.client.containers.list(all=True, filters={"label": DRILL_LABEL}, ignore_removed=True)


def _leftovers(bed: TestBed) -> tuple[list[str], list[str]]:
    volumes = bed.client.volumes.list(filters={"label": DRILL_LABEL})
    return sorted(str(c.name) for c in _drill_containers(bed)), sorted(str(v.name) for v in volumes)


def test_a_killed_drill_leaves_nothing_after_the_next_command(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    pg = bed.postgres()
    pg.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g")
    snap = cmd.json("snapshot", "--volume", "--container", pg.name)
    started_at = pg.reload().container.attrs["State"]["StartedAt"]

    proc = snapvol_process("drill", snap["id"])
    deadline = time.monotonic() + 120
    mine: list = []
    while not mine:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the drill never created its container"
        mine = [
            c
            for c in _drill_containers(bed)
            if c.labels.get("org.snapvol.owner-pid") == str(proc.pid)
        ]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    drill_id = mine[0].labels[DRILL_LABEL]
    name = f"snapvol-drill-{drill_id}"
    assert _leftovers(bed) == ([name], [name])  # the kill left them behind

    # The next command that reaches the engine removes them (and then drills for real).
    again = cmd("drill", snap["id"], "--json")
    assert "removed the container and volume of 1 drill(s) left by an interrupted run" in (
        again.stderr
    )
    assert f"drill {drill_id} of snapshot {snap['id']} was interrupted" in again.stderr
    assert _leftovers(bed) == ([], [])
    with sqlite3.connect(tmp_path / "manifests.db") as db:
        rows = db.execute(
            "SELECT id, ok, error, finished_at IS NOT NULL FROM drills ORDER BY started_at"
        ).fetchall()
    passed_id = rows[1][0]
    assert rows == [
        (drill_id, 0, f"interrupted: snapvol (pid {proc.pid}) ended before the drill finished", 1),
        (passed_id, 1, None, 1),
    ]
    # The source kept running throughout, never restarted.
    assert pg.status == "running"
    assert pg.reload().container.attrs["State"]["StartedAt"] == started_at
