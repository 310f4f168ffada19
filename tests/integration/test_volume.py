"""Volume snapshots and restores against a real engine and a real PostgreSQL 15."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from snapvol.pg import cluster
from snapvol.pipeline import archive
from tests.archives import flip_middle_byte
from tests.docker_helpers import TestBed
from tests.pgdata import fill_demo


def snapshot(cmd, container: str, *extra: str) -> dict:
    return cmd.json("snapshot", "--volume", "--container", container, *extra)


def test_postgres_round_trip_restores_the_snapshot_data(bed: TestBed, cmd, tmp_path: Path) -> None:
    pg = bed.postgres()
    fill_demo(pg)
    before = pg.dump()
    snap = snapshot(cmd, pg.name, "--name", "antes")

    assert snap["status"] == "complete" and snap["kind"] == "volume"
    assert snap["volume"] == pg.volume and snap["pg_version"] == "15"
    assert snap["meta"]["postgres"]["cluster_state"] == "shut down"
    assert snap["downtime_s"] > 0 and snap["file_count"] > 100
    assert pg.psql("select 1") == "1"  # it accepts connections the moment snapvol returns
    archive = Path(snap["path"])
    assert archive.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "manifests.db").stat().st_mode & 0o777 == 0o600
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == snap["sha256"]
    assert pg.status == "running"

    pg.psql("DELETE FROM pedidos WHERE pedido_id % 2 = 0; UPDATE usuarios SET nombre = 'x';")
    changed = pg.dump()
    assert changed != before

    result = cmd.json("restore", "antes", "--yes")
    assert result["restored"]["id"] == snap["id"]
    safety = result["safety_snapshot"]
    assert safety["status"] == "complete" and safety["meta"]["safety_for"] == snap["id"]
    assert result["undo"] == f"snapvol --db {os.environ['SNAPVOL_DB']} restore {safety['id']}"
    assert pg.status == "running"
    assert pg.psql("select 1") == "1"  # no waiting: the restore returns once it is ready
    assert pg.dump() == before

    listed = cmd.json("ls")
    assert {s["id"] for s in listed} == {snap["id"], safety["id"]}
    assert all(s["status"] == "complete" for s in listed)

    undo = cmd(*result["undo"].split()[1:], "--yes")  # the printed command undoes the restore
    assert pg.dump() == changed
    [again] = [s for s in cmd.json("ls") if s["id"] not in (snap["id"], safety["id"])]
    assert (
        f"Undo with: snapvol --db {os.environ['SNAPVOL_DB']} restore {again['id']}" in undo.stderr
    )
    assert f"Safety snapshot {again['id']} ({again['name']}): {again['path']}" in undo.stderr


def test_ls_json_and_table(bed: TestBed, cmd, tmp_path: Path) -> None:
    result = cmd("ls", "--json", exit_code=6)  # ls never creates a store
    assert result.stdout == "" and "no manifest store at" in result.stderr
    assert not (tmp_path / "manifests.db").exists()
    pg = bed.postgres()
    snap = snapshot(cmd, pg.name)
    assert cmd.json("ls", "--kind", "logical") == []
    assert snap["name"].startswith(f"{pg.name}-volume-")
    listed = cmd.json("ls")
    assert [s["id"] for s in listed] == [snap["id"]]
    assert set(listed[0]) >= {
        "id",
        "name",
        "kind",
        "container",
        "volume",
        "path",
        "sha256",
        "size_bytes",
        "raw_bytes",
        "created_at",
        "status",
        "downtime_s",
    }
    table = cmd("ls").stdout
    assert snap["id"] in table and "complete" in table


def _volume_fingerprint(bed: TestBed, volume_name: str) -> dict[str, tuple]:
    """Every member of the volume: type, mode, owner, link target and content hash."""
    from snapvol.pipeline.tarscan import TarScanner

    members: dict[str, tuple] = {}
    scanner = TarScanner(
        lambda m: members.__setitem__(
            m.path, (m.type, m.size, m.mode, m.uid, m.gid, m.linkname, m.sha256, m.mtime)
        )
    )
    helper = bed.client.containers.create(
        bed.image,
        volumes={volume_name: {"bind": "/v", "mode": "ro"}},
        network_mode="none",
        labels={"org.snapvol.test": "1"},
    )
    try:
        stream, _ = helper.get_archive("/v/.")
        for chunk in stream:
            scanner.feed(chunk)
    finally:
        helper.remove(force=True, v=True)
    members.pop(".", None)
    return members


@pytest.mark.serial  # it checks that no volume was left anywhere on the engine
@pytest.mark.parametrize(
    ("reader", "restore_reader"),
    [("host", "host"), ("endpoint", "endpoint"), ("endpoint", "host"), ("host", "endpoint")],
)
def test_non_postgres_volume_round_trips_byte_for_byte(
    bed: TestBed, cmd, reader: str, restore_reader: str
) -> None:
    """Either lane reads, either lane writes: Docker's tar and ours describe files alike."""
    container, vol = bed.plain(mount="/srv/data")
    code, out = container.exec_run(
        [
            "sh",
            "-c",
            """
        set -e; cd /srv/data
        head -c 3000000 /dev/urandom > random.bin
        mkdir -p deep/er/still 'with space' empty
        printf 'hola\\n' > 'with space/ñandú.txt'
        ln -s random.bin link-to-random
        ln random.bin hardlink.bin
        : > deep/er/still/empty-file
        chmod 640 random.bin; chmod 700 deep
        chown 1234:4321 deep/er/still/empty-file
        mkfifo pipe
    """,
        ]
    )
    assert code == 0, out
    before = _volume_fingerprint(bed, vol)
    volumes_before = {v.name for v in bed.client.volumes.list()}
    snap = snapshot(cmd, container.name, "--reader", reader)
    assert snap["pg_version"] is None and snap["downtime_s"] > 0
    assert snap["meta"]["reader"] == reader

    container.exec_run(["sh", "-c", "cd /srv/data && rm -rf deep random.bin && echo new > new.txt"])
    assert _volume_fingerprint(bed, vol) != before

    cmd("restore", snap["id"], "--yes", "--reader", restore_reader)
    container.reload()
    assert container.status == "running"
    assert _volume_fingerprint(bed, vol) == before
    # Helper containers come from an image with a VOLUME: its anonymous volume goes with them.
    # Only new anonymous volumes that no container uses count: the named ones and those of
    # helpers still running are other tests' (they run beside this one).
    new = {v.name for v in bed.client.volumes.list()} - volumes_before
    used = {m.get("Name") for c in bed.client.containers.list(all=True) for m in c.attrs["Mounts"]}
    assert {name for name in new - used if re.fullmatch("[0-9a-f]{64}", name)} == set()


def test_tampered_archive_is_refused_and_nothing_changes(bed: TestBed, cmd) -> None:
    pg = bed.postgres()
    fill_demo(pg, users=50, products=10, orders=100)
    snap = snapshot(cmd, pg.name)
    pg.psql("INSERT INTO usuarios VALUES (100000, 'after', 'snapshot')")
    current = pg.dump()
    flip_middle_byte(Path(snap["path"]))

    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert "does not match its recorded SHA-256" in result.stderr
    assert "nothing was changed" in result.stderr
    assert len(cmd.json("ls")) == 1  # no safety snapshot was even started
    assert pg.status == "running"
    assert pg.dump() == current


def test_missing_archive_is_refused(bed: TestBed, cmd) -> None:
    pg = bed.postgres()
    snap = snapshot(cmd, pg.name)
    Path(snap["path"]).unlink()
    result = cmd("restore", snap["id"], "--yes", exit_code=3)
    assert "missing" in result.stderr
    assert pg.status == "running"


def test_stopped_container_stays_stopped(bed: TestBed, cmd) -> None:
    pg = bed.postgres()
    fill_demo(pg, users=20, products=5, orders=50)
    before = pg.dump()
    pg.container.stop()
    snap = snapshot(cmd, pg.name)
    assert pg.status == "exited"
    assert snap["downtime_s"] == 0

    pg.container.start()
    pg.wait_ready()
    pg.psql("DELETE FROM pedidos")
    pg.container.stop()
    done = cmd("restore", snap["id"], "--yes", "--no-safety-snapshot")
    assert "Undo with" not in done.stderr and "the current data will be gone" in done.stderr
    assert pg.status == "exited"
    pg.container.start()
    pg.wait_ready()
    assert pg.dump() == before


def test_declined_confirmation_changes_nothing(bed: TestBed, cmd) -> None:
    pg = bed.postgres()
    snap = snapshot(cmd, pg.name)
    pg.psql("CREATE TABLE after_snapshot (x int)")
    current = pg.dump()

    result = cmd("restore", snap["id"], input="no\n", exit_code=10)
    assert "cancelled; nothing was changed" in result.stderr
    assert "Overwrites" in result.stderr and pg.volume in result.stderr
    result = cmd("restore", snap["id"], input="", exit_code=10)  # EOF, as Ctrl-D
    assert len(cmd.json("ls")) == 1
    assert pg.status == "running"
    assert pg.dump() == current


def test_a_container_of_the_same_name_that_is_not_the_snapshots_is_named_in_the_plan(
    bed: TestBed, cmd
) -> None:
    """A container created again under the snapshot's name (compose recreates them; another
    engine may have one so named): the plan says it is not the snapshot's before anything
    changes; the restore still goes there when confirmed."""
    container, vol = bed.plain()
    container.exec_run(["sh", "-c", "echo before > /srv/data/f"])
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    name, old_id = container.name, container.id
    container.remove(force=True)
    again, _ = bed.plain(volume=vol)
    again.rename(name)
    again.exec_run(["sh", "-c", "echo after > /srv/data/f"])

    result = cmd("restore", snap["id"], input="no\n", exit_code=10)
    note = (
        f"container {name} is {again.id[:12]}, not the one the snapshot was taken of "
        f"({old_id[:12]})"
    )
    assert note in " ".join(result.stderr.split()), result.stderr
    assert again.exec_run(["cat", "/srv/data/f"]).output == b"after\n"
    cmd("restore", snap["id"], "--yes")
    assert again.exec_run(["cat", "/srv/data/f"]).output == b"before\n"


def test_failed_extraction_rolls_back_to_the_safety_snapshot(
    bed: TestBed, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = bed.postgres()
    fill_demo(pg)
    snap = snapshot(cmd, pg.name)
    pg.psql("UPDATE productos SET precio = precio + 1")
    current = pg.dump()

    real = archive.decompressed_chunks
    target = Path(snap["path"])

    def failing(path: Path, progress=None):
        for n, chunk in enumerate(real(path, progress)):
            if path == target and n == 3:
                raise OSError("simulated failure halfway through the extraction")
            yield chunk

    monkeypatch.setattr(archive, "decompressed_chunks", failing)
    result = cmd("restore", snap["id"], "--yes", exit_code=11)
    assert "rolled back to safety snapshot" in result.stderr
    assert pg.status == "running"
    pg.wait_ready()
    assert pg.dump() == current


def test_postgres_major_version_mismatch_is_refused(bed: TestBed, cmd, tmp_path: Path) -> None:
    pg = bed.postgres()
    snap = snapshot(cmd, pg.name)
    with sqlite3.connect(tmp_path / "manifests.db") as db:
        db.execute("UPDATE snapshots SET pg_version = '14' WHERE id = ?", (snap["id"],))
    result = cmd("restore", snap["id"], "--yes", exit_code=8)
    assert "PostgreSQL 14" in result.stderr and "runs PostgreSQL 15" in result.stderr


def test_target_resolution_errors(bed: TestBed, cmd) -> None:
    result = cmd("snapshot", "--volume", "--container", "snapvol-test-does-not-exist", exit_code=3)
    # (other tests' containers may be close enough to be suggested)
    assert result.stderr.startswith("Error: no container named 'snapvol-test-does-not-exist'")
    second = bed.volume()
    container, first = bed.plain(mount="/a")
    container.remove(force=True, v=True)
    container = bed.sleeper({first: {"bind": "/a"}, second: {"bind": "/b"}})
    result = cmd("snapshot", "--volume", "--container", container.name, exit_code=2)
    assert "several volumes" in result.stderr and first in result.stderr and second in result.stderr
    snap = snapshot(cmd, container.name, "--volume-name", second)
    assert snap["volume"] == second
    assert json.loads(cmd("ls", "--json").stdout)[0]["volume"] == second


def test_an_anonymous_volume_and_a_mistyped_name_are_explained(bed: TestBed, cmd) -> None:
    """The image's VOLUME, never named: the error says so and names the way forward; a name
    with '-' for '_' (or a typo) gets the container's real name suggested."""
    container = bed.sleeper({})  # the image declares VOLUME /var/lib/postgresql/data
    container.reload()
    [mount] = [m for m in container.attrs["Mounts"] if m["Type"] == "volume"]
    result = cmd("snapshot", "--volume", "--container", container.name, exit_code=2)
    assert "anonymous volume" in result.stderr and "/var/lib/postgresql/data" in result.stderr
    assert f"--volume-name {mount['Name']}" in result.stderr
    snap = snapshot(cmd, container.name, "--volume-name", mount["Name"])
    assert snap["volume"] == mount["Name"]

    mistyped = container.name.replace("snapvol-test-", "snapvol_test_")
    result = cmd("snapshot", "--volume", "--container", mistyped, exit_code=3)
    assert f"no container named {mistyped!r} (did you mean {container.name}?)" in result.stderr


def test_a_volume_another_running_container_uses_is_refused(bed: TestBed, cmd) -> None:
    container, vol = bed.plain(mount="/srv/data")
    container.exec_run(["sh", "-c", "echo antes > /srv/data/file"])
    snap = snapshot(cmd, container.name)

    writer = bed.sleeper({vol: {"bind": "/shared", "mode": "rw"}})
    container.exec_run(["sh", "-c", "echo ahora > /srv/data/file"])
    for args in (("snapshot", "--volume", "--container", container.name), ("restore", snap["id"])):
        result = cmd(*args, "--yes" if args[0] == "restore" else "--json", exit_code=13)
        assert writer.name in result.stderr and "stop them first" in result.stderr
        container.reload()
        assert container.status == "running"  # never stopped
    assert container.exec_run(["cat", "/srv/data/file"]).output == b"ahora\n"
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]  # nothing recorded

    writer.remove(force=True, v=True)
    reader = bed.sleeper({vol: {"bind": "/shared", "mode": "ro"}})
    snapshot(cmd, container.name)  # a reader cannot make it less cold
    result = cmd("restore", snap["id"], "--yes", exit_code=13)  # but must not see it rewritten
    assert reader.name in result.stderr
    reader.remove(force=True, v=True)
    cmd("restore", snap["id"], "--yes")
    assert container.exec_run(["cat", "/srv/data/file"]).output == b"antes\n"


def test_the_restart_waits_for_pg_controldata(bed: TestBed, cmd, monkeypatch) -> None:
    """The container starts again as soon as the volume has been read, but never before
    pg_controldata has read the stopped cluster (a slow helper container stands in here)."""
    pg = bed.postgres()
    real = cluster.read_cluster_state

    def slow(*args, **kwargs):
        time.sleep(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster, "read_cluster_state", slow)
    snap = snapshot(cmd, pg.name)
    assert snap["meta"]["postgres"]["cluster_state"] == "shut down"
    assert pg.psql("select 1") == "1"


def test_a_container_that_ignores_its_stop_signal_waits_only_the_stop_timeout(
    bed: TestBed, cmd
) -> None:
    """Its process ignores SIGTERM: only the engine's kill ends it, after --stop-timeout (the
    default would wait 30 s), and the snapshot and the restore still round-trip its volume."""
    container, vol = bed.plain(stubborn=True)
    container.exec_run(["sh", "-c", "head -c 200000 /dev/urandom > /srv/data/f"])
    before = _volume_fingerprint(bed, vol)
    snap = snapshot(cmd, container.name, "--stop-timeout", "1")
    assert snap["status"] == "complete" and snap["downtime_s"] < 15
    container.exec_run(["sh", "-c", "echo changed > /srv/data/f"])

    restored = cmd.json("restore", snap["id"], "--yes", "--stop-timeout", "1")
    assert restored["downtime_s"] < 15
    container.reload()
    assert container.status == "running" and _volume_fingerprint(bed, vol) == before


def test_an_interrupted_rollback_exits_130_and_leaves_the_container_stopped(
    bed: TestBed, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extraction fails, then Ctrl-C lands in the rollback: exit 130 (as the Kubernetes
    path's KeepDown), the container left stopped, the way back named."""
    pg = bed.postgres()
    snap = snapshot(cmd, pg.name)

    real = archive.decompressed_chunks
    target = Path(snap["path"])

    def failing(path: Path, progress=None):
        for n, chunk in enumerate(real(path, progress)):
            if n == 3:
                if path == target:
                    raise OSError("simulated failure halfway through the extraction")
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(archive, "decompressed_chunks", failing)
    result = cmd("restore", snap["id"], "--yes", exit_code=130)
    said = " ".join(result.stderr.split())
    assert "the container was left stopped. To put it back: run `snapvol" in said
    assert pg.status == "exited"
