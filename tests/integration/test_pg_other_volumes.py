"""A PostgreSQL container's other volumes (here a backups volume beside the data directory) are
plain volumes: snapshotted and restored whole, with no cluster to read, while the container is
still stopped and started as the PostgreSQL server it is. Against a real engine and PostgreSQL 15.
"""

from __future__ import annotations

from typing import Any

import pytest
from docker.models.containers import Container

from tests.docker_helpers import TEST_LABEL, PgContainer, TestBed
from tests.pgdata import fill_demo

BACKUPS = "/backups"
# Everything a file is, as the container sees it (type, mode, owner, size, mtime, name and link
# target), and the content of regular files.
SEEN = (
    f"cd {BACKUPS} && find . -mindepth 1 -exec stat -c '%F|%a|%u|%g|%s|%Y|%N' {{}} + | sort"
    " && find . -type f -exec sha256sum {} + | sort"
)
TREE = f"""
set -e; cd {BACKUPS}
mkdir -p nightly/2026-12-01 'weekly copies'
head -c 300000 /dev/urandom > nightly/2026-12-01/pc_db.dump
printf 'SELECT 1;\\n' > 'weekly copies/notas ñ.sql'
ln -s nightly/2026-12-01/pc_db.dump latest
chown -R postgres:postgres nightly; chmod 600 nightly/2026-12-01/pc_db.dump
touch -d '2001-02-03 04:05:06' 'weekly copies/notas ñ.sql'
echo 15 > nightly/PG_VERSION
"""


def sh(container: Container, script: str) -> str:
    code, out = container.exec_run(["sh", "-c", script], user="root")
    assert code == 0, out
    return str(out.decode())


def pg_with_backups(bed: TestBed) -> tuple[PgContainer, str]:
    """The test PostgreSQL with its data volume and a second named volume at /backups."""
    data, backups = bed.volume(), bed.volume()
    password = "pw-other-volumes"
    container = bed.client.containers.run(
        bed.image,
        name=bed.unique(),
        detach=True,
        environment={"POSTGRES_PASSWORD": password, "POSTGRES_DB": "pc_db"},
        volumes={
            data: {"bind": "/var/lib/postgresql/data", "mode": "rw"},
            backups: {"bind": BACKUPS, "mode": "rw"},
        },
        labels={TEST_LABEL: "1"},
        stop_signal="SIGINT",
        network_mode="none",
    )
    bed.containers.append(container)
    pg = PgContainer(container=container, volume=data, password=password)
    pg.wait_ready()
    fill_demo(pg)
    sh(container, TREE)
    return pg, backups


@pytest.mark.parametrize("reader", ["auto", "endpoint"])
def test_a_second_volume_of_a_postgres_container_round_trips(
    bed: TestBed, cmd: Any, reader: str
) -> None:
    pg, backups = pg_with_backups(bed)
    database, tree = pg.dump(), sh(pg.container, SEEN)
    snap = cmd.json(
        "snapshot", "--volume", "--container", pg.name, "--volume-name", backups,
        "--reader", reader,
    )  # fmt: skip
    assert snap["status"] == "complete" and snap["volume"] == backups
    assert snap["meta"]["is_postgres"] is False and snap["meta"]["mount"] == BACKUPS
    assert snap["pg_version"] is None and "postgres" not in snap["meta"]
    assert snap["downtime_s"] > 0  # stopped for the snapshot, like any cold one
    assert pg.psql("select 1") == "1"  # no wait here: the restart waited for the server
    assert pg.dump() == database

    sh(pg.container, f"find {BACKUPS} -mindepth 1 -delete")
    assert sh(pg.container, SEEN) != tree
    result = cmd.json("restore", snap["id"], "--yes", "--reader", reader)
    assert result["safety_snapshot"]["meta"]["is_postgres"] is False
    assert result["safety_snapshot"]["pg_version"] is None
    assert pg.status == "running"
    assert pg.psql("select 1") == "1"
    assert sh(pg.container, SEEN) == tree
    assert pg.dump() == database

    # the data volume is still the PostgreSQL one
    data = cmd.json("snapshot", "--volume", "--container", pg.name, "--volume-name", pg.volume)
    assert data["meta"]["is_postgres"] is True and data["pg_version"] == "15"
    assert data["meta"]["postgres"]["cluster_state"] == "shut down"
