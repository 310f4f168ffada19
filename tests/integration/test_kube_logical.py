"""`snapvol snapshot --logical --workload`: pg_dump in a workload's running pod, through the exec
stream, compared database to database.

AGAINST AN API FAKE, NOT A CLUSTER: every API call goes to kmock (see tests/unit/kube/conftest),
and the exec in the workload's pod runs `docker exec` in a real PostgreSQL 15 container that
stands for that pod's postgres container, its stdout handed to snapvol through the channel
interface the client's exec websocket offers. Nothing here has run against a real cluster.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import kmock as km
import pytest

from snapvol.cli import kube_target
from snapvol.kube.client import Kube
from tests.docker_helpers import PgContainer, TestBed
from tests.pgdata import fill_demo
from tests.unit.kube.conftest import NS, LocalChannel, make_kube
from tests.unit.kube.conftest import cluster as cluster  # the fake API, seeded (a fixture)

pytestmark = pytest.mark.asyncio

PSQL = ["docker", "exec", "-i"]
AS_RESTORED = ["-U", "postgres", "-d", "restored"]


class DockerExec:
    """``Kube.exec`` into the pods' postgres container: ``docker exec`` in ``pg``."""

    def __init__(self, pg: PgContainer) -> None:
        self.pg = pg
        self.calls: list[tuple[str, str | None, list[str]]] = []
        self.extra_dump_args: list[str] = []

    def __call__(
        self,
        name: str,
        namespace: str,
        command: list[str],
        *,
        stdin: bool = False,
        container: str | None = None,
    ) -> LocalChannel:
        self.calls.append((name, container, command))
        if "pg_dump" in command:
            command = [*command, *self.extra_dump_args]
        return LocalChannel(["docker", "exec", "-i", self.pg.name, *command], stdin=stdin)


@pytest.fixture
def pg(bed: TestBed) -> PgContainer:
    pg = bed.postgres()
    fill_demo(pg)
    return pg


@pytest.fixture
def execs(cluster: km.KubernetesEmulator, pg: PgContainer, monkeypatch) -> DockerExec:
    found = DockerExec(pg)

    def connect(kubeconfig: Path | None, context: str | None, namespace: str | None) -> Kube:
        kube = make_kube(cluster)
        kube.namespace = namespace or NS
        kube.context = context or "kmock"
        kube.exec = found  # type: ignore[method-assign]
        return kube

    monkeypatch.setattr(kube_target, "connect_cluster", connect)
    return found


async def run(cmd: Any, *args: str, exit_code: int = 0) -> Any:
    return await asyncio.to_thread(cmd, *args, exit_code=exit_code)


def restored_copy(pg: PgContainer, dump: Path, database: str) -> str:
    """The dump restored into a new database of ``pg``; that database's plain dump."""
    pg.psql(f"CREATE DATABASE {database}", database="postgres")
    subprocess.run(
        ["docker", "exec", "-i", pg.name, "pg_restore", "-U", "postgres", "-d", database],
        input=dump.read_bytes(),
        check=True,
        capture_output=True,
    )
    return pg.dump(database)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
async def test_a_dump_in_the_pod_holds_the_database(
    cmd, cluster, execs: DockerExec, pg: PgContainer, tmp_path: Path, fmt: str
):
    before = pg.dump()
    result = await run(
        cmd, "snapshot", "--logical", "--workload", "deployment/db", "--format", fmt, "--json"
    )
    snap = json.loads(result.stdout)
    assert (snap["kind"], snap["status"], snap["database"]) == ("logical", "complete", "pc_db")
    assert snap["container"] == "k8s:shop/deployment/db" and snap["pg_version"].startswith("15.")
    assert snap["meta"]["kubernetes"]["pod"] == "db-5d8f-x2x"
    assert snap["meta"]["kubernetes"]["container"] == "postgres"
    assert snap["meta"]["rows_counted"] is False
    assert "tables and rows not counted" in result.stderr
    # Every exec went to the workload's running pod, its postgres container.
    assert {(name, container) for name, container, _ in execs.calls} == {
        ("db-5d8f-x2x", "postgres")
    }
    # Nothing was scaled: the database kept running.
    assert cluster.objects["apps/v1/deployments", NS, "db"]["spec"]["replicas"] == 1

    await run(cmd, "verify", snap["id"])
    await run(cmd, "extract", snap["id"], "--to", str(tmp_path / "out"))
    [dump] = list((tmp_path / "out").iterdir())
    if fmt == "custom":
        assert restored_copy(pg, dump, "restored") == before
    else:
        pg.psql("CREATE DATABASE restored", database="postgres")
        subprocess.run(
            [*PSQL, pg.name, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *AS_RESTORED],
            input=dump.read_bytes(),
            check=True,
            capture_output=True,
        )
        assert pg.dump("restored") == before

    refused = await run(cmd, "restore", snap["id"], "--yes", exit_code=2)
    assert "does not restore yet: `snapvol extract" in refused.stderr


async def test_a_failing_pg_dump_is_recorded_failed(
    cmd, cluster, execs: DockerExec, tmp_path: Path
):
    result = await run(
        cmd,
        "snapshot",
        "--logical",
        "--workload",
        "deployment/db",
        "--database",
        "no_such_db",
        exit_code=11,
    )
    assert 'database "no_such_db" does not exist' in result.stderr
    assert not (tmp_path / "backups").exists() or list((tmp_path / "backups").iterdir()) == []


async def test_a_dump_that_fails_is_recorded_failed(
    cmd, cluster, execs: DockerExec, tmp_path: Path
):
    execs.extra_dump_args = ["--strict-names", "--table=no_such_table"]
    result = await run(cmd, "snapshot", "--logical", "--workload", "deployment/db", exit_code=11)
    assert "no matching tables were found" in result.stderr
    [snap] = json.loads((await run(cmd, "ls", "--json")).stdout)
    assert snap["status"] == "failed"
    assert list((tmp_path / "backups").iterdir()) == []
