"""Podman as the engine (issue 14, item 1), through its Docker-compatible API: volume and
logical snapshots and restores with their safety snapshot, on the host lane over Podman's own
volume directories (rootful). Whole databases compared, not counts."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests import fidelity_tree
from tests.docker_helpers import PgContainer, TestBed

pytestmark = pytest.mark.serial  # Podman's service is one per run; its storage is shared


def whole_database(pg: PgContainer) -> str:
    """The database as pg_dump writes it: schema and every row."""
    return pg.dump()


def _filled(bed: TestBed) -> PgContainer:
    pg = bed.postgres()
    pg.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text, at timestamptz);"
        "INSERT INTO items SELECT g, md5(g::text), now() - g * interval '1 minute' "
        "FROM generate_series(1, 20000) g"
    )
    return pg


def test_a_volume_snapshot_and_restore_through_podman(pbed: TestBed, cmd) -> None:
    pg = _filled(pbed)
    before = whole_database(pg)
    cmd("snapshot", "--volume", "--container", pg.name)
    snap = cmd.json("ls")[0]
    assert snap["status"] == "complete" and snap["meta"]["reader"] == "host"
    assert snap["volume"] == pg.volume

    pg.psql("DELETE FROM items WHERE id % 3 = 0; UPDATE items SET name = 'changed'")
    changed = whole_database(pg)
    assert changed != before
    done = cmd("restore", snap["id"], "--yes", "--json")
    assert "Undo with:" in done.stderr
    pg.reload()
    assert pg.status == "running" and whole_database(pg) == before
    assert cmd("verify").exit_code == 0

    safety = [s for s in cmd.json("ls") if "safety_for" in s["meta"]]
    assert len(safety) == 1
    cmd("restore", safety[0]["id"], "--yes")  # the undo puts back what the restore replaced
    assert whole_database(pg) == changed


def test_a_logical_snapshot_and_restore_through_podman(pbed: TestBed, cmd) -> None:
    pg = _filled(pbed)
    before = whole_database(pg)
    cmd("snapshot", "--logical", "--container", pg.name)
    snap = cmd.json("ls")[0]
    assert snap["meta"]["tables"] == {"public.items": 20000}
    pg.psql("TRUNCATE items")
    cmd("restore", snap["id"], "--yes")
    assert whole_database(pg) == before


def test_a_container_that_ignores_its_stop_signal_waits_only_the_stop_timeout(
    pbed: TestBed, cmd
) -> None:
    """Through Podman too: a process that ignores SIGTERM is killed after --stop-timeout (Podman
    honours the API's timeout), and the volume round-trips."""
    container, _ = pbed.plain(stubborn=True)
    fill = "head -c 200000 /dev/urandom > /srv/data/f; echo x > /srv/data/g"
    assert container.exec_run(["sh", "-c", fill]).exit_code == 0
    digests = ["sh", "-c", "cd /srv/data && sha256sum * && ls -la --time-style=full-iso"]
    before = container.exec_run(digests).output
    snap = cmd.json("snapshot", "--volume", "--container", container.name, "--stop-timeout", "1")
    assert snap["status"] == "complete" and snap["downtime_s"] < 15
    container.exec_run(["sh", "-c", "echo changed > /srv/data/f; rm /srv/data/g"])

    restored = cmd.json("restore", snap["id"], "--yes", "--stop-timeout", "1")
    assert restored["downtime_s"] < 15
    container.reload()
    assert container.status == "running" and container.exec_run(digests).output == before


@pytest.mark.skipif(os.geteuid() != 0, reason="builds the tree as root")
def test_the_host_lane_restores_an_awkward_tree_in_a_podman_volume_exactly(
    pbed: TestBed, cmd
) -> None:
    """The host lane on Podman's own volume directory: xattrs, ACLs, sparse files, hard links,
    device nodes, odd names and times, long paths, compared entry by entry after a wipe."""
    container, vol = pbed.plain(mount="/srv/data")
    root = Path(pbed.client.volumes.get(vol).attrs["Mountpoint"])
    assert str(root).startswith("/var/lib/containers/storage/volumes/")  # Podman's, not Docker's
    fidelity_tree.build(root)
    before = {
        k: v for k, v in fidelity_tree.fingerprint(root).items() if v["type"] != stat.S_IFSOCK
    }

    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    assert snap["status"] == "complete" and snap["meta"]["reader"] == "host"
    subprocess.run(["find", str(root), "-mindepth", "1", "-delete"], check=True)
    cmd("restore", snap["id"], "--yes")
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []
    container.reload()
    assert container.status == "running"
