"""The sidecar of the README: examples/sidecar/compose.yml brought up with docker-compose, the
snapvol image built from this checkout (scripts/ensure-snapvol-image.sh), schedules a few seconds
apart. The sidecar's snapshots must be in the host's store, restore from the host, and be in the
metrics file; `docker-compose stop` ends the sidecar between jobs, the database left running."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.docker_helpers import PgContainer, TestBed

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "examples" / "sidecar" / "compose.yml"


@pytest.fixture(scope="session")
def snapvol_image() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-snapvol-image.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


class Stack:
    """One docker-compose project of the example, with names of its own."""

    def __init__(self, bed: TestBed, image: str, home: Path) -> None:
        self.project = bed.unique()
        self.db_name = f"{self.project}-db"
        self.home = home
        self.config = home / "snapvol.toml"
        self.env = {
            **os.environ,
            "SNAPVOL_IMAGE": image,
            "SNAPVOL_PG_IMAGE": bed.image,
            "DB_CONTAINER": self.db_name,
            "POSTGRES_PASSWORD": f"pw-{secrets.token_hex(8)}",
            "SNAPVOL_HOME": str(home),
            "SNAPVOL_CONFIG": str(self.config),
        }

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(COMPOSE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "snapvol").stdout[-4000:]


@pytest.fixture
def stack(bed: TestBed, snapvol_image: str, tmp_path: Path) -> Iterator[Stack]:
    home = tmp_path / "snapvol"
    home.mkdir()
    made = Stack(bed, snapvol_image, home)
    try:
        yield made
    finally:
        made.compose("down", "-v", "--remove-orphans", "-t", "30")


def _snapshots(stack: Stack, cmd: Any) -> list[dict[str, Any]]:
    if not (stack.home / "manifests.db").exists():
        return []
    return list(cmd.json("ls", "--db", str(stack.home / "manifests.db")))


def _wait_for(what: str, stack: Stack, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} never happened; sidecar:\n{stack.logs()}"
        time.sleep(1)


def test_the_sidecar_takes_scheduled_snapshots_that_restore_from_the_host(
    stack: Stack, bed: TestBed, cmd: Any
) -> None:
    stack.config.write_text(
        f'metrics_file = "{stack.home}/snapvol.prom"\n\n'
        f'[[target]]\ncontainer = "{stack.db_name}"\nkind = "logical"\nschedule = "@every 3s"\n\n'
        f'[[target]]\ncontainer = "{stack.db_name}"\nkind = "volume"\nschedule = "@every 4s"\n'
    )
    # The database first, filled, then the sidecar: every snapshot it takes holds the rows.
    up = stack.compose("up", "-d", "db")
    assert up.returncode == 0, up.stderr
    pg = PgContainer(
        bed.client.containers.get(stack.db_name),
        f"{stack.project}_pgdata",
        stack.env["POSTGRES_PASSWORD"],
    )
    _wait_for("the database starting", stack, lambda: _ready(pg))
    pg.psql("CREATE TABLE kept (n int PRIMARY KEY, t text)")
    pg.psql("INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    before = pg.dump()
    up = stack.compose("up", "-d", "snapvol")
    assert up.returncode == 0, up.stderr

    def both_kinds() -> dict[str, dict[str, Any]]:
        done = {s["kind"]: s for s in _snapshots(stack, cmd) if s["status"] == "complete"}
        return done if {"logical", "volume"} <= set(done) else {}

    taken = _wait_for("a logical and a volume snapshot", stack, both_kinds)
    stopped = stack.compose("stop", "-t", "120", "snapvol")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stack.logs()
    assert pg.reload().status == "running"  # whatever job the stop fell on

    db = str(stack.home / "manifests.db")
    listed = _snapshots(stack, cmd)
    assert [s for s in listed if s["status"] != "complete"] == [], listed
    assert all(s["container"] == stack.db_name for s in listed)
    for snap in taken.values():
        assert snap["path"].startswith(f"{stack.home}/backups/")
        cmd("verify", snap["id"], "--db", db)

    # From the host, with the sidecar's records: the volume snapshot, then the logical one.
    pg.psql("DELETE FROM kept WHERE n > 10")
    cmd("restore", taken["volume"]["id"], "--db", db, "--yes")
    assert pg.reload().dump() == before
    pg.psql("DROP TABLE kept")
    cmd("restore", taken["logical"]["id"], "--db", db, "--yes")
    assert pg.dump() == before

    families = text_string_to_metric_families((stack.home / "snapvol.prom").read_text())
    success = {
        s.labels["kind"]: s.value
        for f in families
        for s in f.samples
        if s.name == "snapvol_last_success_timestamp_seconds"
        and s.labels.get("container") == stack.db_name
    }
    assert set(success) == {"logical", "volume"}, success


def _ready(pg: PgContainer) -> bool:
    try:
        code, _ = pg.container.exec_run(["pg_isready", "-U", "postgres", "-d", "pc_db"])
    except docker.errors.APIError:
        return False
    return code == 0 and _connects(pg)


def _connects(pg: PgContainer) -> bool:
    try:
        pg.psql("SELECT 1")
    except AssertionError:
        return False
    return True
