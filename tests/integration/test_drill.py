"""`snapvol drill`: snapshots restored into throwaway servers, checked, and the result recorded."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import docker

from tests.docker_helpers import PgContainer, TestBed

DRILL_LABEL = "org.snapvol.drill"
OWNER_LABEL = "org.snapvol.owner-pid"


def _fill(pg: PgContainer) -> None:
    pg.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"
        "CREATE INDEX items_name ON items (name);"
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 3000) g;"
        "CREATE SCHEMA shop; CREATE TABLE shop.orders (id serial PRIMARY KEY, item int);"
        "INSERT INTO shop.orders (item) SELECT g % 50 FROM generate_series(1, 120) g;"
        "CREATE TABLE empty_one (x int);"
    )


EXPECTED = {"public.empty_one": 0, "public.items": 3000, "shop.orders": 120}


def _leftovers(client: docker.DockerClient) -> tuple[list[str], list[str]]:
    """The drill containers and volumes this process's snapvol runs (``cmd`` runs in process)
    left; another test worker's drill, running meanwhile, is not this test's."""
    mine = [DRILL_LABEL, f"{OWNER_LABEL}={os.getpid()}"]
    containers = client.containers.list(all=True, filters={"label": mine}, ignore_removed=True)
    volumes = client.volumes.list(filters={"label": mine})
    return [str(c.name) for c in containers], [str(v.name) for v in volumes]


def _started_at(pg: PgContainer) -> str:
    return str(pg.reload().container.attrs["State"]["StartedAt"])


def _detail_and_times(drill: dict) -> dict:
    return {k: v for k, v in drill.items() if k not in ("started_at", "finished_at", "id")}


def test_volume_drill_passes_records_counts_and_compares_them_later(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    pg = bed.postgres()
    _fill(pg)
    snap = cmd.json("snapshot", "--volume", "--container", pg.name)
    started = _started_at(pg)
    before = pg.dump()

    prom = tmp_path / "snapvol.prom"
    first = cmd.json("drill", snap["id"], "--metrics-file", str(prom))
    src = f'container="{pg.name}",kind="volume",source="{pg.volume}"'
    assert f"snapvol_last_drill_ok{{{src}}} 1\n" in prom.read_text()
    assert _detail_and_times(first) == {
        "snapshot_id": snap["id"],
        "ok": True,
        "error": None,
        "detail": "restored and started; pg_amcheck passed; "
        "tables and rows recorded (the first drill of this snapshot)",
        "counts": {"pc_db": EXPECTED, "postgres": {}},
        "snapshot": snap | {"verified_at": None},
    }
    second = cmd.json("drill")  # the newest snapshot by default
    assert second["ok"] is True and second["counts"] == first["counts"]
    assert second["detail"] == (
        f"restored and started; pg_amcheck passed; tables and rows match drill {first['id']}"
    )
    # The source was never touched: still running since before the drills, same data.
    assert pg.status == "running" and _started_at(pg) == started
    assert pg.dump() == before
    assert _leftovers(bed.client) == ([], [])

    shown = cmd.json("show", snap["id"])
    second.pop("snapshot")
    assert shown["last_drill"] == second
    [listed] = cmd.json("ls")
    assert listed["last_drill"] == second
    assert "passed" in cmd("show", snap["id"]).stdout

    # Later drills compare with the first one's count: a count that does not match fails.
    with sqlite3.connect(tmp_path / "manifests.db") as db:
        db.execute(
            "UPDATE drills SET counts_json = ? WHERE id = ?",
            (
                '{"pc_db": {"public.empty_one": 0, "public.items": 2999, "shop.orders": 120},'
                ' "postgres": {}}',
                first["id"],
            ),
        )
    failed = cmd("drill", snap["id"], "--metrics-file", str(prom), exit_code=7)
    assert f"snapvol_last_drill_ok{{{src}}} 0\n" in prom.read_text()
    assert 'snapvol_last_run_success{command="drill"} 0' in prom.read_text()
    assert failed.stderr.strip().endswith(
        f"failed: the restored tables do not match drill {first['id']}: "
        f"pc_db.public.items has 3000 rows, drill {first['id']} recorded 2999"
    )
    last = cmd.json("show", snap["id"])["last_drill"]
    assert last["ok"] is False and last["counts"] is None
    assert _leftovers(bed.client) == ([], [])


def test_a_volume_restore_compares_the_rows_a_drill_counted(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    """The first drill of a volume snapshot counts its rows; a restore of it compares: what
    matches is said, what does not fails the restore, naming the way back."""
    pg = bed.postgres()
    _fill(pg)
    snap = cmd.json("snapshot", "--volume", "--container", pg.name)
    restored = cmd("restore", snap["id"], "--yes")  # no drill yet: nothing to compare
    assert "tables and rows match" not in restored.stderr
    drill = cmd.json("drill", snap["id"])
    pg.psql("DELETE FROM items WHERE id > 2000")  # undone by the restore
    restored = cmd("restore", snap["id"], "--yes")
    assert f"tables and rows match drill {drill['id']}" in restored.stderr
    assert pg.psql("SELECT count(*) FROM items") == "3000"

    with sqlite3.connect(tmp_path / "manifests.db") as db:  # a drill that counted otherwise
        db.execute(
            "UPDATE drills SET counts_json = ? WHERE id = ?",
            (
                '{"pc_db": {"public.empty_one": 0, "public.items": 2999, "shop.orders": 120}}',
                drill["id"],
            ),
        )
    failed = cmd("restore", snap["id"], "--yes", "--json", exit_code=7)
    safety = next(s for s in cmd.json("ls") if "-safety-" in s["name"])  # the newest first
    assert failed.stderr.strip().endswith(
        f"restored, but the restored tables do not match drill {drill['id']}: "
        f"pc_db.public.items has 3000 rows, drill {drill['id']} recorded 2999; "
        f"`snapvol restore {safety['id']}` puts back what was there"
    ), failed.stderr
    assert pg.status == "running"


def test_logical_drill_loads_the_dump_and_checks_the_recorded_counts(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    pg = bed.postgres()
    _fill(pg)
    snap = cmd.json("snapshot", "--logical", "--container", pg.name)
    started = _started_at(pg)
    databases = pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")

    true_sql = tmp_path / "true.sql"
    true_sql.write_text("SELECT count(*) = 3000 AND max(id) = 3000 FROM items;\n")
    drill = cmd.json("drill", snap["id"], "--check-sql", str(true_sql))
    assert _detail_and_times(drill) == {
        "snapshot_id": snap["id"],
        "ok": True,
        "error": None,
        "detail": f"restored and started; pg_amcheck passed; tables and rows match snapshot "
        f"{snap['id']}; check query true",
        "counts": {"pc_db": EXPECTED, "postgres": {}},
        "snapshot": snap | {"verified_at": None},
    }
    assert drill["counts"]["pc_db"] == snap["meta"]["tables"]

    false_sql = tmp_path / "false.sql"
    false_sql.write_text("SELECT count(*) = 2999 FROM items")
    failed = cmd("drill", snap["id"], "--check-sql", str(false_sql), exit_code=7)
    assert failed.stderr.strip().endswith("failed: the check query returned 'f', not true")
    last = cmd.json("show", snap["id"])["last_drill"]
    assert (last["ok"], last["error"]) == (False, "the check query returned 'f', not true")

    # Nothing of the drills is left, and the source was never touched.
    assert _leftovers(bed.client) == ([], [])
    assert pg.status == "running" and _started_at(pg) == started
    assert pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database") == databases


def _corrupt_middle_of(path: Path, page: int) -> None:
    """Overwrite the middle of one 8 kB page of a relation file (tuple headers and data)."""
    with open(path, "r+b") as f:
        f.seek(page * 8192 + 2048)
        f.write(bytes([0x5A, 0xA5, 0xFF, 0x00]) * 1024)


def test_a_corrupted_heap_page_fails_the_drill(bed: TestBed, cmd) -> None:
    pg = bed.postgres()
    _fill(pg)
    relpath = pg.psql("SELECT pg_relation_filepath('items')")
    pg.container.stop()
    mountpoint = bed.client.volumes.get(pg.volume).attrs["Mountpoint"]
    _corrupt_middle_of(Path(mountpoint) / relpath, page=3)
    snap = cmd.json("snapshot", "--volume", "--container", pg.name)

    failed = cmd("drill", snap["id"], exit_code=7)
    line = failed.stderr.strip()
    assert line.startswith("Error: drill ") and "pg_amcheck found corruption" in line, line
    last = cmd.json("show", snap["id"])["last_drill"]
    assert last["ok"] is False and last["error"].startswith("pg_amcheck found corruption")
    assert 'heap table "pc_db.public.items", block 3' in last["error"], last["error"]
    assert last["detail"] == "restored and started"
    assert _leftovers(bed.client) == ([], [])
    assert pg.status == "exited"  # left as it was


def test_refuses_a_snapshot_without_postgres(bed: TestBed, cmd) -> None:
    container, _ = bed.plain()
    snap = cmd.json("snapshot", "--volume", "--container", str(container.name))
    failed = cmd("drill", snap["id"], exit_code=2)
    assert failed.stderr.strip() == (
        f"Error: snapshot {snap['id']} holds no PostgreSQL data directory: drills check "
        "PostgreSQL snapshots (volume or logical)"
    )
    assert cmd.json("show", snap["id"])["last_drill"] is None


def test_prune_keeps_the_newest_snapshot_whose_last_drill_passed(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    pg = bed.postgres()
    _fill(pg)
    uno = cmd.json("snapshot", "--logical", "--container", pg.name, "--name", "uno")
    dos = cmd.json("snapshot", "--logical", "--container", pg.name, "--name", "dos")
    tres = cmd.json("snapshot", "--logical", "--container", pg.name, "--name", "tres")
    said = cmd("drill", "uno").stderr.strip().splitlines()[-1]
    assert said.startswith("Drill ") and said.endswith(
        f" of snapshot {uno['id']} (uno) passed: restored and started; pg_amcheck passed; "
        f"tables and rows match snapshot {uno['id']} (3 tables, 3120 rows in 2 databases)"
    ), said
    false_sql = tmp_path / "false.sql"
    false_sql.write_text("SELECT false")
    cmd("drill", "dos", "--check-sql", str(false_sql), exit_code=7)  # failed: not kept for it

    plan = cmd.json("prune", "--keep-last", "1", "-n")["snapshots"]
    assert {p["name"]: (p["action"], p["reasons"]) for p in plan} == {
        "tres": ("keep", ["last snapshot"]),
        "dos": ("remove", ["matches no keep rule"]),
        "uno": ("keep", ["newest drilled"]),
    }
    cmd("prune", "--keep-last", "1", "--yes")
    assert [s["id"] for s in cmd.json("ls")] == [tres["id"], uno["id"]]
    assert Path(uno["path"]).exists() and not Path(dos["path"]).exists()
