"""A PostgreSQL image of a company's own: its own entrypoint script starts the server through a
wrapper, no PG_MAJOR, PGDATA empty, the cluster below its own mount, the server's programs off
PATH, its socket in /tmp on port 5433 (where the image's clients do not look), and Debian's
default authentication: local ``peer``, password (scram-sha-256) from 127.0.0.1. Every path of
snapvol must recognise it and reach it.

The image is built here from the test image (no network), tagged uniquely and removed after.
"""

from __future__ import annotations

import secrets
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from snapvol.adapters import engine as engine_module
from snapvol.errors import DockerError
from tests import docker_helpers
from tests.docker_helpers import TEST_LABEL, PgContainer, TestBed
from tests.pgdata import fill_demo

pytestmark = pytest.mark.docker

HOME = "/srv/company/pg"  # the volume's mount; the cluster is in its "cluster" directory
SOCKET = {"PGHOST": "/tmp", "PGPORT": "5433"}  # for the tests' own psql and pg_dump

RUN_SH = """#!/bin/sh
# The company's entrypoint: its own variables and directory, the server started by a wrapper.
set -eu
[ "${1:-serve}" = serve ] || exec "$@"
home=${COMPANY_PG_HOME:?}
mkdir -p "$home/cluster"
chown postgres:postgres "$home" "$home/cluster"
chmod 700 "$home/cluster"
if [ ! -s "$home/cluster/PG_VERSION" ]; then
  setpriv --reuid=postgres --regid=postgres --init-groups \\
    /usr/lib/postgresql/15/bin/initdb -D "$home/cluster" -U postgres \\
    --auth-local=peer --auth-host=reject >/dev/null
  # As Debian's pg_createcluster writes it: password login from 127.0.0.1 (initdb itself would
  # want the superuser's password for that).
  sed -i "s/reject\\$/${COMPANY_PG_AUTH_HOST:-scram-sha-256}/" "$home/cluster/pg_hba.conf"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \\
  /usr/lib/postgresql/15/bin/postgres -D "$home/cluster" -c listen_addresses=127.0.0.1 \\
  -c unix_socket_directories=/tmp -c port=5433
"""

DOCKERFILE = f"""ARG BASE
FROM ${{BASE}}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PG_MAJOR= PGDATA= \\
    COMPANY_PG_HOME={HOME}
COPY run.sh /opt/company/run.sh
ENTRYPOINT ["/opt/company/run.sh"]
CMD ["serve"]
"""


@pytest.fixture(scope="module")
def company_image(docker_client: docker.DockerClient) -> Iterator[str]:
    tag = f"snapvol-test-company:{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(DOCKERFILE)
        script = Path(context) / "run.sh"
        script.write_text(RUN_SH)
        script.chmod(0o755)
        docker_client.images.build(
            path=context,
            tag=tag,
            buildargs={"BASE": docker_helpers.pg_image(docker_client)},
            labels={TEST_LABEL: "1"},
            rm=True,
            forcerm=True,
        )
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def company_pg(module_bed: TestBed, company_image: str) -> PgContainer:
    volume = module_bed.volume()
    container = module_bed.client.containers.run(
        company_image,
        name=module_bed.unique(),
        detach=True,
        network_mode="none",
        volumes={volume: {"bind": HOME, "mode": "rw"}},
        labels={TEST_LABEL: "1"},
    )
    module_bed.containers.append(container)
    pg = PgContainer(
        container, volume, "", database="postgres", exec_user="postgres", exec_env=SOCKET
    )
    pg.wait_ready()
    pg.psql("CREATE DATABASE pc_db")
    pg.database = "pc_db"
    return pg


@pytest.fixture
def company(company_pg: PgContainer) -> PgContainer:
    """The company's server running, with a fresh pc_db holding the demo's tables."""
    pg = company_pg
    if pg.status != "running":
        pg.container.start()
    pg.wait_ready()
    pg.psql("DROP DATABASE IF EXISTS pc_db WITH (FORCE)", database="postgres")
    pg.psql("CREATE DATABASE pc_db", database="postgres")
    fill_demo(pg)
    return pg


def change_data(pg: PgContainer) -> None:
    pg.psql("DELETE FROM pedidos WHERE pedido_id % 3 = 0; UPDATE usuarios SET nombre = 'otro';")
    pg.psql("CREATE TABLE extra (x int); INSERT INTO extra VALUES (1);")


def volume_snapshot(cmd: Any, pg: PgContainer, *extra: str) -> dict[str, Any]:
    snap: dict[str, Any] = cmd.json("snapshot", "--volume", "--container", pg.name, *extra)
    assert snap["status"] == "complete" and snap["volume"] == pg.volume
    assert snap["pg_version"] == "15"
    assert snap["meta"]["mount"] == HOME and snap["meta"]["pg_subdir"] == "cluster"
    assert snap["meta"]["postgres"]["major_version"] == "15"
    assert snap["meta"]["postgres"]["cluster_state"] == "shut down"  # pg_controldata off PATH
    return snap


def test_the_image_hides_every_sign_the_old_detection_read(company: PgContainer) -> None:
    config = company.container.attrs["Config"]
    assert config["Entrypoint"] == ["/opt/company/run.sh"] and config["Cmd"] == ["serve"]
    assert {"PG_MAJOR=", "PGDATA="} <= set(config["Env"])
    assert not any(e.startswith("POSTGRES_") for e in config["Env"])
    code, out = company.container.exec_run(
        ["psql", "-X", "-U", "postgres", "-c", "select 1"], environment=SOCKET
    )
    assert code != 0 and b"Peer authentication failed" in out  # root is not let in as postgres
    code, out = company.container.exec_run(["psql", "-X", "-U", "postgres", "-c", "select 1"])
    assert code != 0 and b"No such file" in out  # not where the image's psql looks


def test_logical_snapshot_and_restore(company: PgContainer, cmd: Any) -> None:
    before = company.dump()
    snap = cmd.json("snapshot", "--logical", "--container", company.name, "--database", "pc_db")
    assert snap["status"] == "complete" and snap["database"] == "pc_db"
    assert snap["pg_version"].split(".")[0] == "15" and snap["meta"]["user"] == "postgres"

    change_data(company)
    assert company.dump() != before
    cmd.json("restore", snap["id"], "--yes")
    assert company.dump() == before


def test_restore_file(company: PgContainer, cmd: Any, tmp_path: Path) -> None:
    before = company.dump()
    path = tmp_path / "company.sql"
    path.write_text(before)
    change_data(company)
    result = cmd.json(
        "restore", "--file", str(path), "--container", company.name, "--database", "pc_db", "--yes"
    )
    assert result["format"] == "plain"
    assert company.dump() == before


@pytest.mark.parametrize("reader", ["auto", "endpoint"])
def test_volume_snapshot_and_restore_of_the_running_server(
    company: PgContainer, cmd: Any, reader: str
) -> None:
    before = company.dump()
    snap = volume_snapshot(cmd, company, "--reader", reader)
    assert snap["downtime_s"] > 0
    assert company.status == "running"
    assert company.psql("select 1") == "1"  # the restart waited for the server

    change_data(company)
    result = cmd.json("restore", snap["id"], "--yes", "--reader", reader)
    assert result["safety_snapshot"]["pg_version"] == "15"
    assert company.status == "running"
    assert company.psql("select 1") == "1"
    assert company.dump() == before


def test_volume_snapshot_and_restore_of_the_stopped_server(company: PgContainer, cmd: Any) -> None:
    before = company.dump()
    company.container.stop()
    snap = volume_snapshot(cmd, company)  # only the volume's cluster tells it is PostgreSQL
    assert company.status == "exited"

    company.container.start()
    company.wait_ready()
    change_data(company)
    company.container.stop()
    result = cmd.json("restore", snap["id"], "--yes")
    assert result["safety_snapshot"]["pg_version"] == "15"
    assert company.status == "exited"  # a stopped container stays stopped
    company.container.start()
    company.wait_ready()
    assert company.dump() == before


@pytest.mark.parametrize("state", ["running", "exited"])
def test_a_snapshot_of_another_major_version_is_refused(
    company: PgContainer, cmd: Any, tmp_path: Path, state: str
) -> None:
    snap = volume_snapshot(cmd, company)
    with sqlite3.connect(tmp_path / "manifests.db") as db:
        db.execute("UPDATE snapshots SET pg_version = '14' WHERE id = ?", (snap["id"],))
    before = company.dump()
    if state == "exited":
        company.container.stop()  # the image's own server programs tell its version
    result = cmd("restore", snap["id"], "--yes", exit_code=8)
    assert "PostgreSQL 14" in result.stderr and "runs PostgreSQL 15" in result.stderr
    assert company.status == state
    if state == "exited":
        company.container.start()
        company.wait_ready()
    assert company.dump() == before


def test_a_container_without_a_server_process_is_not_postgresql(bed: TestBed, cmd: Any) -> None:
    """The PostgreSQL image with its programs, but running only a shell: not a server."""
    container, _ = bed.plain()
    result = cmd("snapshot", "--logical", "--container", container.name, exit_code=8)
    assert "does not run PostgreSQL" in result.stderr
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    assert snap["pg_version"] is None and "postgres" not in snap["meta"]
    container.stop(timeout=5)
    result = cmd("snapshot", "--logical", "--container", container.name, exit_code=11)
    assert "not running" in result.stderr


def test_a_server_whose_processes_cannot_be_listed_is_found_on_its_volume(
    company: PgContainer, cmd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``docker top`` failing is no proof that no server runs: the cluster on the volume tells."""

    def top_fails(self: engine_module.Engine, container_id: str) -> list[str]:
        raise DockerError("listing the container's processes failed: 500 Server Error")

    monkeypatch.setattr(engine_module.Engine, "top", top_fails)
    before = company.dump()
    volume_snapshot(cmd, company)  # version, cluster state, and the restart waited for the server
    assert company.status == "running"
    assert company.psql("select 1") == "1"
    assert company.dump() == before


def test_a_server_that_allows_only_peer_login_refuses_a_logical_restore_clearly(
    module_bed: TestBed, company_image: str, cmd: Any, tmp_path: Path
) -> None:
    """No password login on the socket nor from 127.0.0.1: the restore's temporary role cannot
    log in, which is said in one line; the database is as it was, no scratch copy or role left."""
    container = module_bed.client.containers.run(
        company_image,
        name=module_bed.unique(),
        detach=True,
        network_mode="none",
        environment={"COMPANY_PG_AUTH_HOST": "reject"},
        volumes={module_bed.volume(): {"bind": HOME, "mode": "rw"}},
        labels={TEST_LABEL: "1"},
    )
    module_bed.containers.append(container)
    pg = PgContainer(container, "", "", database="postgres", exec_user="postgres", exec_env=SOCKET)
    pg.wait_ready()
    pg.psql("CREATE DATABASE pc_db")
    pg.database = "pc_db"
    fill_demo(pg)
    before = pg.dump()
    path = tmp_path / "plain.sql"
    path.write_text(before)
    pg.psql("UPDATE usuarios SET nombre = 'otro'")
    changed = pg.dump()
    result = cmd(
        "restore", "--file", str(path), "--container", pg.name, "--database", "pc_db", "--yes",
        exit_code=11,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "cannot log in" in lines[0] and "pg_hba.conf must allow password login" in lines[0]
    assert "database pc_db was not changed" in lines[0]
    assert pg.dump() == changed
    names = pg.psql("SELECT datname FROM pg_database UNION ALL SELECT rolname FROM pg_roles")
    assert "__snapvol_" not in names and "snapvol_restore_" not in names
