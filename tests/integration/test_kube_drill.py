"""`snapvol drill` of a Kubernetes cold copy (`snapshot --volume --workload`): a claim that holds
a real PostgreSQL 15 data directory, restored into a throwaway server on this host's engine
and checked.

AGAINST AN API FAKE, NOT A CLUSTER: every API call goes to kmock (see tests/unit/kube/conftest),
and the helper pod's tar (and find, cat) runs on this host, on a directory that stands for the
claim (test_cli's ``ClaimExec``). That directory holds a real data directory: a PostgreSQL 15
container's, filled and cleanly stopped, copied with its owners into ``pgdata/`` below the
claim's root (the layout an image gets with PGDATA a subdirectory of the mount, recorded as
``pg_subdir``) or into the root itself. The drill runs the workload's image, which this host
has.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from snapvol.cli import kube_target
from tests.docker_helpers import PgContainer, TestBed
from tests.integration.test_drill import _corrupt_middle_of, _leftovers
from tests.pgdata import fill_demo
from tests.unit.kube.conftest import DEPLOYMENTS, NS
from tests.unit.kube.conftest import cluster as cluster  # the fake API, seeded (a fixture)
from tests.unit.kube.conftest import controllers as controllers  # its controllers (a fixture)
from tests.unit.kube.test_cli import Fake

pytestmark = pytest.mark.asyncio

OTHER_DB = "inventario"


def actual_counts(pg: PgContainer) -> dict[str, dict[str, int]]:
    """Every table's rows in every database a client can connect to, each counted with its
    own ``count(*)`` (not the drill's query)."""
    found: dict[str, dict[str, int]] = {}
    listed = pg.psql(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate",
        database="postgres",
    )
    for db in listed.split():
        tables = pg.psql(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            database=db,
        ).split()
        found[db] = {t: int(pg.psql(f"SELECT count(*) FROM {t}", database=db)) for t in tables}
    return found


def fill(pg: PgContainer) -> None:
    fill_demo(pg)
    pg.psql("CREATE INDEX pedidos_fecha ON pedidos (fecha_pedido)")
    pg.psql(f"CREATE DATABASE {OTHER_DB}", database="postgres")
    pg.psql(
        "CREATE SCHEMA almacen; CREATE TABLE almacen.stock (sku text PRIMARY KEY, n int);"
        "INSERT INTO almacen.stock SELECT 'sku-' || g, g FROM generate_series(1, 777) g;"
        "CREATE TABLE vacia (x int);",
        database=OTHER_DB,
    )


def claim_from(bed: TestBed, pg: PgContainer, claim: Path, subdir: str) -> Path:
    """``pg``'s data directory (its server stopped cleanly) copied, owners, modes and times
    kept, into ``claim/subdir`` (returned); with a subdirectory, the claim's root also holds
    lost+found, as a filesystem's root does (why images put PGDATA below the mount)."""
    pg.container.stop()  # SIGINT: a fast shutdown, which leaves the cluster shut down cleanly
    assert pg.status == "exited"
    mountpoint = bed.client.volumes.get(pg.volume).attrs["Mountpoint"]
    data = claim / subdir if subdir else claim
    claim.parent.mkdir(parents=True, exist_ok=True)
    if subdir:
        (claim / "lost+found").mkdir(parents=True, mode=0o700)
    subprocess.run(["cp", "-a", f"{mountpoint}/.", str(data)], check=True)
    control = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{data}:/d:ro",
         "--entrypoint", "pg_controldata", bed.image, "/d"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "Database cluster state:               shut down\n" in control, control
    return data


async def run(cmd: Any, *args: str, exit_code: int = 0) -> Any:
    return await asyncio.to_thread(cmd, *args, exit_code=exit_code)


async def run_json(cmd: Any, *args: str, exit_code: int = 0) -> Any:
    import json

    return json.loads((await run(cmd, *args, "--json", exit_code=exit_code)).stdout)


def postgres_container(kmock: Any) -> dict[str, Any]:
    """The deployment's postgres container (its pod template's second)."""
    containers = kmock.objects[DEPLOYMENTS, NS, "db"]["spec"]["template"]["spec"]["containers"]
    assert containers[1]["name"] == "postgres"
    found: dict[str, Any] = containers[1]
    return found


@pytest.fixture
def claim(tmp_path: Path) -> Path:
    return tmp_path / "claims" / "pgdata"


@pytest.fixture
def fake(cluster, claim: Path, bed: TestBed, monkeypatch: pytest.MonkeyPatch) -> Fake:
    """The fake cluster, its deployment's postgres container running this host's image."""
    postgres_container(cluster)["image"] = bed.image
    faked = Fake(cluster, {"pgdata": claim})
    monkeypatch.setattr(kube_target, "connect_cluster", faked.connect)
    return faked


@pytest.mark.parametrize(
    # pgdata/ with the workload's own superuser, and the data at the claim's root as postgres's
    ("subdir", "superuser"),
    [("pgdata", "app"), ("", "postgres")],
)
async def test_a_cold_copy_of_a_claim_is_drilled_and_a_corrupted_one_fails(
    cmd, fake: Fake, controllers, bed: TestBed, claim: Path, tmp_path: Path, subdir: str,
    superuser: str,
):  # fmt: skip
    """``subdir``: where the claim holds the data directory (PGDATA .../data/pgdata, as the
    official image's documentation suggests for a mount with lost+found; or the mount);
    ``superuser``: the cluster's (the workload's POSTGRES_USER when not postgres)."""
    pg = bed.postgres(user=superuser)
    if superuser != "postgres":  # as the workload's container sets it (a Secret's, often)
        postgres_container(fake.kmock)["env"] = [{"name": "POSTGRES_USER", "value": superuser}]
    fill(pg)
    expected = actual_counts(pg)
    assert expected[OTHER_DB] == {"almacen.stock": 777, "public.vacia": 0}
    relpath = pg.psql("SELECT pg_relation_filepath('pedidos')")
    data = claim_from(bed, pg, claim, subdir)

    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    assert (snap["status"], snap["image"], snap["pg_version"]) == ("complete", bed.image, "15")
    assert snap["meta"]["is_postgres"] is True and snap["meta"]["pg_subdir"] == subdir
    assert snap["meta"]["reader"] == "pod"  # tar in the (fake) helper pod, not the host lane

    first = await run_json(cmd, "drill", snap["id"])
    assert first["ok"] is True, first
    assert first["counts"] == expected  # every database's tables, as the server held them
    assert first["detail"] == (
        "restored and started; pg_amcheck passed; "
        "tables and rows recorded (the first drill of this snapshot)"
    )
    check = tmp_path / "check.sql"
    check.write_text("SELECT count(*) = 5000 AND max(pedido_id) = 5000 FROM pedidos")
    second = await run_json(
        cmd, "drill", snap["id"], "--check-sql", str(check), "--database", "pc_db"
    )
    assert second["ok"] is True and second["counts"] == expected
    assert second["detail"] == (
        f"restored and started; pg_amcheck passed; tables and rows match drill {first['id']}; "
        "check query true"
    )
    assert _leftovers(bed.client) == ([], [])
    assert fake.kmock.objects[DEPLOYMENTS, NS, "db"]["spec"]["replicas"] == 1  # scaled back

    # A cold copy whose archive holds a corrupted heap page (the claim's file was, when it
    # was copied; its SHA-256 is the archive's own): pg_amcheck fails the drill.
    _corrupt_middle_of(data / relpath, page=3)
    bad = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    assert bad["status"] == "complete" and bad["meta"]["pg_subdir"] == subdir
    failed = await run(cmd, "drill", bad["id"], exit_code=7)
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: drill ") and "pg_amcheck found corruption" in line, line
    last = (await run_json(cmd, "show", bad["id"]))["last_drill"]
    assert last["ok"] is False and last["detail"] == "restored and started"
    assert 'heap table "pc_db.public.pedidos", block 3' in last["error"], last["error"]
    assert _leftovers(bed.client) == ([], [])

    # The good copy's archive changed on disk: refused before anything is restored.
    path = Path(snap["path"])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert hashlib.sha256(raw).hexdigest() != snap["sha256"]
    failed = await run(cmd, "drill", snap["id"], exit_code=7)
    assert "SHA-256" in failed.stderr, failed.stderr
    with sqlite3.connect(tmp_path / "manifests.db") as store:
        [(ok, detail)] = store.execute(
            "SELECT ok, detail FROM drills WHERE snapshot_id = ? ORDER BY started_at DESC LIMIT 1",
            (snap["id"],),
        ).fetchall()
    assert (ok, detail) == (0, "")  # failed before anything was restored
    assert _leftovers(bed.client) == ([], [])


async def test_a_cold_copy_owned_by_a_user_the_image_does_not_name_is_drilled(
    cmd, fake: Fake, controllers, bed: TestBed, claim: Path
):
    """A workload run as a uid of its own (runAsUser 1000, as a restricted namespace has it)
    wrote its data directory as that uid, which the image's /etc/passwd does not name: the
    superuser is still read from it (postgres --single looks its own user up)."""
    pg = bed.postgres(user="app")
    postgres_container(fake.kmock)["env"] = [{"name": "POSTGRES_USER", "value": "app"}]
    fill(pg)
    expected = actual_counts(pg)
    data = claim_from(bed, pg, claim, "pgdata")
    subprocess.run(["chown", "-R", "1000:1000", str(data)], check=True)

    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    drilled = await run(cmd, "drill", snap["id"], "--json")
    assert "could not read the restored cluster's superuser" not in drilled.stderr
    import json

    result = json.loads(drilled.stdout)
    assert result["ok"] is True and result["counts"] == expected, result
    assert _leftovers(bed.client) == ([], [])
