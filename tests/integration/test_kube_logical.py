"""`snapvol snapshot --logical --workload` (pg_dump in a workload's running pod, through the exec
stream) and `snapvol restore` of such a snapshot (the container restore's code, in the pod),
compared database to database.

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
from tests.pgdata import DEMO_COUNTS, fill_demo
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


async def run(cmd: Any, *args: str, exit_code: int = 0, input: str | None = None) -> Any:
    return await asyncio.to_thread(cmd, *args, exit_code=exit_code, input=input)


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
    # The rows were counted in the dump's own snapshot, in the pod, as for a container.
    assert snap["meta"]["tables"] == DEMO_COUNTS and "rows_counted" not in snap["meta"]
    assert f"{sum(DEMO_COUNTS.values())} rows" in result.stderr
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
        exit_code=3,
    )
    assert "Error: database 'no_such_db' does not exist in " in result.stderr
    # Found before anything was recorded or written.
    assert json.loads((await run(cmd, "ls", "--json")).stdout) == []
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


# --- restore ----------------------------------------------------------------------------------

# What a dump must carry through whole: odd names, every kind of awkward text, NULL beside '',
# bytes, a view, a function, a sequence's position, comments, and the database's own settings.
AWKWARD = r"""
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Table ""quoted"" ñ" (
    id serial PRIMARY KEY, "Mixed Case" text, raw bytea, doc jsonb, nums int[], at timestamptz);
INSERT INTO "Odd Schema"."Table ""quoted"" ñ" ("Mixed Case", raw, doc, nums, at) VALUES
    (E'tab\there\nnew line\\backslash', '\x00ff10'::bytea, '{"k": [1, "two", null]}', '{1,2,3}',
     '2026-01-02 03:04:05+00'),
    ('', '', '{}', '{}', NULL),
    (NULL, NULL, NULL, NULL, NULL),
    (E'\\! touch /tmp/pwned-by-data', 'x', '"\\u00e9"', NULL, 'infinity'),
    (E'\\.', 'y', '[]', '{-1}', '-infinity'),
    ('emoji 🐘 and 中文', repeat('z', 5000)::bytea, NULL, NULL, now());
CREATE VIEW "Odd Schema".v AS SELECT id, "Mixed Case" FROM "Odd Schema"."Table ""quoted"" ñ";
CREATE FUNCTION "Odd Schema".f(x int) RETURNS int LANGUAGE sql AS $$ SELECT x * 2 $$;
CREATE SEQUENCE s START 40; SELECT nextval('s'); SELECT nextval('s');
COMMENT ON TABLE usuarios IS 'comment with ''quotes'' and ; semicolons';
"""


def awkward_pg(pg: PgContainer) -> None:
    pg.psql(AWKWARD)
    pg.psql("ALTER DATABASE pc_db SET work_mem = '7MB'", database="postgres")


def change(pg: PgContainer) -> None:
    pg.psql(
        "DELETE FROM pedidos WHERE pedido_id % 3 = 0; UPDATE usuarios SET nombre = 'otro'; "
        'DROP TABLE "Odd Schema"."Table ""quoted"" ñ" CASCADE; CREATE TABLE extra (x int); '
        "INSERT INTO extra VALUES (1); SELECT setval('s', 1000)"
    )


def settings(pg: PgContainer) -> str:
    return pg.psql(
        "SELECT array_to_string(s.setconfig, '|') FROM pg_db_role_setting s "
        "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'pc_db'",
        database="postgres",
    )


def databases_of(pg: PgContainer) -> set[str]:
    return set(pg.psql("SELECT datname FROM pg_database", database="postgres").split())


BASE = {"postgres", "template0", "template1", "pc_db"}


LOAD_PASSWORD = "load-role-password-" + "x" * 12


@pytest.mark.parametrize("fmt", ["custom", "plain"])
async def test_a_workload_dump_restores_whole_and_its_safety_snapshot_undoes_it(
    cmd, cluster, execs: DockerExec, pg: PgContainer, fmt: str, monkeypatch
):
    import secrets
    import types

    from snapvol.pg import logical_restore

    known = types.SimpleNamespace(
        token_hex=secrets.token_hex, token_urlsafe=lambda _n: LOAD_PASSWORD
    )
    monkeypatch.setattr(logical_restore, "secrets", known)
    awkward_pg(pg)
    whole = pg.dump()
    snap = json.loads(
        (
            await run(
                cmd, "snapshot", "--logical", "--workload", "deployment/db", "--format", fmt,
                "--json",
            )
        ).stdout
    )  # fmt: skip
    change(pg)
    changed = pg.dump()
    assert changed != whole
    execs.calls.clear()

    result = await run(cmd, "restore", snap["id"], "--yes", "--json")
    done = json.loads(result.stdout)
    assert pg.dump() == whole  # every table's rows, the schema, comments, sequences
    assert settings(pg) == "work_mem=7MB"  # the database's own settings kept
    assert databases_of(pg) == BASE  # no scratch or replaced copy left
    assert "Restored " in result.stderr and "(pod db-5d8f-x2x)" in result.stderr
    assert done["kubernetes"]["pod"] == "db-5d8f-x2x" and done["database"] == "pc_db"
    assert done["replaced_existing"] is True
    # Every command ran in the workload's pod, its postgres container; nothing was scaled.
    assert {(name, container) for name, container, _ in execs.calls} == {
        ("db-5d8f-x2x", "postgres")
    }
    assert cluster.objects["apps/v1/deployments", NS, "db"]["spec"]["replicas"] == 1
    # No secret in an exec's arguments: the load role's password went on stdin.
    assert not any(LOAD_PASSWORD in arg for _, _, argv in execs.calls for arg in argv)

    safety = done["safety_snapshot"]
    assert (safety["kind"], safety["status"]) == ("logical", "complete")
    assert safety["meta"]["safety_for"] == snap["id"]
    assert safety["container"] == "k8s:shop/deployment/db"
    assert safety["meta"]["kubernetes"]["workload"] == "db"
    # Rows counted in the session that held the writes: the database as the restore found it.
    assert safety["meta"]["tables"]["public.pedidos"] == 3334
    assert safety["meta"]["tables"]["public.extra"] == 1
    undo = json.loads((await run(cmd, *done["undo"].split()[1:], "--yes", "--json")).stdout)
    assert undo["restored"]["id"] == safety["id"]
    assert pg.dump() == changed  # the whole database as the restore found it
    assert databases_of(pg) == BASE


async def test_a_restore_into_another_workloads_database(
    cmd, cluster, execs: DockerExec, pg: PgContainer
):
    from tests.unit.kube.conftest import DEPLOYMENTS, PODS, deployment, pod

    cluster.objects[DEPLOYMENTS, NS, "db2"] = deployment("db2", claim="pgdata2")
    owner = ("ReplicaSet", "db2-1")
    cluster.objects[PODS, NS, "db2-1"] = pod("db2-1", "pgdata2", {"app": "db2"}, owner)
    awkward_pg(pg)
    whole = pg.dump()
    snap = json.loads(
        (await run(cmd, "snapshot", "--logical", "--workload", "deployment/db", "--json")).stdout
    )
    execs.calls.clear()
    result = await run(
        cmd, "restore", snap["id"], "--workload", "deploy/db2", "--database", "copy", "--yes",
        "--json",
    )  # fmt: skip
    done = json.loads(result.stdout)
    assert pg.dump("copy") == whole
    assert done["safety_snapshot"] is None and done["replaced_existing"] is False
    assert {name for name, _, _ in execs.calls} == {"db2-1"}


def rewrite_archive(tmp_path: Path, snap: dict[str, Any], edit: Any) -> None:
    """The snapshot's dump changed by ``edit`` and the store made to agree (size, SHA-256): a
    crafted dump that passes the checksum."""
    import hashlib
    import sqlite3

    import zstandard

    path = Path(snap["path"])
    raw = edit(zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30))
    data = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(data)
    with sqlite3.connect(tmp_path / "manifests.db") as db:
        db.execute(
            "UPDATE snapshots SET sha256 = ?, size_bytes = ?, raw_bytes = ? WHERE id = ?",
            (hashlib.sha256(data).hexdigest(), len(data), len(raw), snap["id"]),
        )


PWNED = "/tmp/snapvol-pwned"


def with_shell_command(raw: bytes) -> bytes:
    """A plain dump that would run a shell command after a table's data (``\\restrict``, which
    a new psql would hold against it, taken out)."""
    text = raw.decode()
    text = "".join(
        line
        for line in text.splitlines(keepends=True)
        if not line.startswith(("\\restrict ", "\\unrestrict "))
    )
    at = text.index("\n\\.\n", text.index("COPY public.pedidos")) + 4  # after its data
    return (text[:at] + f"\\! touch {PWNED}\n" + text[at:]).encode()


async def test_a_failing_restore_leaves_the_database_as_it_was(
    cmd, cluster, execs: DockerExec, pg: PgContainer, isolated_env: Path
):
    awkward_pg(pg)
    snap = json.loads(
        (
            await run(
                cmd, "snapshot", "--logical", "--workload", "deployment/db", "--format", "plain",
                "--json",
            )
        ).stdout
    )  # fmt: skip
    change(pg)
    before = pg.dump()
    original = Path(snap["path"]).read_bytes()

    # Not confirmed (the workload's name mistyped): nothing happens.
    result = await run(cmd, "restore", snap["id"], input="deployment/db2\n", exit_code=10)
    assert "Type the workload (deployment/db) to replace database pc_db" in result.stderr
    assert "cancelled; nothing was changed" in result.stderr
    assert pg.dump() == before and databases_of(pg) == BASE

    # A crafted dump (its checksum made to match) that would run a shell command after a
    # table's data: refused, naming its line (this one is caught by the plan's read of the
    # script's start, before anything is created).
    rewrite_archive(isolated_env, snap, with_shell_command)
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=2)
    assert "psql meta-command \\! is not allowed" in result.stderr, result.stderr
    assert pg.dump() == before and databases_of(pg) == BASE
    code, _ = pg.container.exec_run(["test", "-e", PWNED])
    assert code != 0  # no shell ran

    # A row that cannot load, halfway through a table's data: psql stops, nothing changes.
    def break_row(raw: bytes) -> bytes:
        lines = raw.decode().splitlines(keepends=True)
        start = next(i for i, line in enumerate(lines) if line.startswith("COPY public.pedidos"))
        lines[start + 2500] = "1\t2\t3\t4\t2026-01-01 00:00:00\tone too many\n"
        return "".join(lines).encode()

    Path(snap["path"]).write_bytes(original)
    rewrite_archive(isolated_env, snap, break_row)
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=11)
    assert "extra data after last expected column" in result.stderr, result.stderr
    assert "database pc_db was not changed" in result.stderr
    assert pg.dump() == before and databases_of(pg) == BASE

    # An archive whose bytes no longer match its SHA-256: refused before anything changes.
    path = Path(snap["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=7)
    assert "SHA-256" in result.stderr
    assert pg.dump() == before and databases_of(pg) == BASE


async def test_a_dump_file_restores_into_a_workload(
    cmd, cluster, execs: DockerExec, pg: PgContainer, tmp_path: Path
):
    """``restore --file DUMP --workload``: a pg_dump made elsewhere, checked as a container
    restore checks one, loaded in the pod; a crafted one refused with nothing changed."""
    awkward_pg(pg)
    whole = pg.dump()
    plain = tmp_path / "pc_db.sql"
    plain.write_text(whole)
    custom = tmp_path / "pc_db.dump"
    custom.write_bytes(
        subprocess.run(
            ["docker", "exec", pg.name, "pg_dump", "-U", "postgres", "-Fc", "pc_db"],
            check=True,
            capture_output=True,
        ).stdout
    )
    change(pg)
    changed = pg.dump()
    for dump in (plain, custom):
        execs.calls.clear()
        result = await run(
            cmd, "restore", "--file", str(dump), "--workload", "deploy/db", "--yes", "--json"
        )
        done = json.loads(result.stdout)
        assert pg.dump() == whole, dump.name  # the whole database, schema and rows
        assert databases_of(pg) == BASE
        assert done["file"] == str(dump) and done["restored"] is None
        assert {name for name, _, _ in execs.calls} == {"db-5d8f-x2x"}
        # Its way back: the database as the restore found it.
        await run(cmd, *done["undo"].split()[1:], "--yes")
        assert pg.dump() == changed

    crafted = tmp_path / "crafted.sql"
    crafted.write_bytes(with_shell_command(plain.read_bytes()))
    before = pg.dump()
    result = await run(
        cmd, "restore", "--file", str(crafted), "--workload", "deploy/db", "--yes", exit_code=2
    )
    assert "psql meta-command \\! is not allowed" in result.stderr, result.stderr
    assert pg.dump() == before and databases_of(pg) == BASE
    code, _ = pg.container.exec_run(["test", "-e", PWNED])
    assert code != 0  # no shell ran


async def test_a_containers_logical_snapshot_restores_into_a_workload(
    cmd, cluster, execs: DockerExec, pg: PgContainer
):
    awkward_pg(pg)
    whole = pg.dump()
    snap = json.loads(
        (await run(cmd, "snapshot", "--logical", "--container", pg.name, "--json")).stdout
    )
    change(pg)
    execs.calls.clear()
    done = json.loads(
        (
            await run(cmd, "restore", snap["id"], "--workload", "deployment/db", "--yes", "--json")
        ).stdout
    )
    assert pg.dump() == whole and databases_of(pg) == BASE
    assert {name for name, _, _ in execs.calls} == {"db-5d8f-x2x"}  # through the pod
    assert done["safety_snapshot"]["container"] == "k8s:shop/deployment/db"


async def test_a_workload_dump_is_drilled_on_this_host_with_the_workloads_image(
    cmd, cluster, execs: DockerExec, pg: PgContainer
):
    """A drill needs the workload's image here (it runs on this host's engine, not in the
    cluster): refused while it is not, then run, its counts those the pod recorded."""
    from tests.unit.kube.conftest import DEPLOYMENTS

    snap = json.loads(
        (await run(cmd, "snapshot", "--logical", "--workload", "deployment/db", "--json")).stdout
    )
    result = await run(cmd, "drill", snap["id"], exit_code=3)
    assert f"the image of snapshot {snap['id']} (registry.example/shop/" in result.stderr
    assert "pull it to drill the snapshot" in result.stderr

    # The workload runs an image this host has: the drill restores the dump into it.
    image = pg.container.image.tags[0]
    [db] = cluster.objects[DEPLOYMENTS, NS, "db"]["spec"]["template"]["spec"]["containers"][1:]
    db["image"] = image
    snap = json.loads(
        (await run(cmd, "snapshot", "--logical", "--workload", "deployment/db", "--json")).stdout
    )
    assert snap["image"] == image
    drill = json.loads((await run(cmd, "drill", snap["id"], "--json")).stdout)
    assert drill["ok"] is True, drill
    assert drill["counts"]["pc_db"] == snap["meta"]["tables"] == DEMO_COUNTS
