"""Real-engine test bed: uniquely named PostgreSQL containers and volumes that are always removed.

Containers get no network unless a test asks for TCP; then the port is published on 127.0.0.1 only.
Nothing here ever touches ``pc_db`` or ``postgres_data``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

PROTECTED_NAMES = {"pc_db", "postgres_data"}
TEST_LABEL = "org.snapvol.test"


def pg_image(client: docker.DockerClient) -> str:
    """The PostgreSQL 15 image the tests run: $SNAPVOL_PG_IMAGE, or one that is already here."""
    candidates = [os.environ.get("SNAPVOL_PG_IMAGE", ""), "postgres:15", "snapvol/postgres:15"]
    for name in filter(None, candidates):
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    raise RuntimeError(
        "no PostgreSQL 15 image: run `bash scripts/ensure-pg-image.sh` (make test does)"
    )


@dataclass
class PgContainer:
    """A PostgreSQL container made for one test."""

    container: Container
    volume: str
    password: str
    database: str = "pc_db"
    user: str = "postgres"
    port: int | None = None
    exec_user: str = ""  # the OS user psql and pg_dump run as here ("": the container's own)
    exec_env: dict[str, str] | None = None  # and their environment (PGHOST...)

    @property
    def name(self) -> str:
        return str(self.container.name)

    def reload(self) -> PgContainer:
        self.container.reload()
        return self

    @property
    def status(self) -> str:
        self.container.reload()
        return str(self.container.status)

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run SQL through psql in the container (local socket) and return its unaligned output."""
        code, out = self.container.exec_run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                self.user,
                "-d",
                database or self.database,
                "-c",
                sql,
            ],
            demux=True,
            user=self.exec_user,
            environment=self.exec_env,
        )
        stdout, stderr = out
        if code != 0:
            raise AssertionError(f"psql failed ({code}): {(stderr or b'').decode()}")
        return (stdout or b"").decode().strip()

    def dump(self, database: str | None = None) -> str:
        """A plain pg_dump of the database: the ground truth tests compare before and after."""
        code, out = self.container.exec_run(
            [
                "pg_dump",
                "-U",
                self.user,
                "-d",
                database or self.database,
                "--no-sync",
                "--restrict-key=snapvoltest",
            ],
            demux=True,
            user=self.exec_user,
            environment=self.exec_env,
        )
        stdout, stderr = out
        if code != 0:
            raise AssertionError(f"pg_dump failed ({code}): {(stderr or b'').decode()}")
        return (stdout or b"").decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_pg_ready(
            self.container, self.user, self.database, timeout, self.exec_user, self.exec_env
        )


def wait_pg_ready(
    container: Container,
    user: str,
    database: str,
    timeout: float = 60.0,
    exec_user: str = "",
    exec_env: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "running":
            code, _ = container.exec_run(
                ["psql", "-X", "-q", "-U", user, "-d", database, "-c", "select 1"],
                user=exec_user,
                environment=exec_env,
            )
            if code == 0:
                return
        elif container.status in ("exited", "dead"):
            logs = container.logs(tail=30).decode(errors="replace")
            raise AssertionError(f"container {container.name} exited:\n{logs}")
        time.sleep(0.3)
    raise AssertionError(f"PostgreSQL in {container.name} not ready after {timeout} s")


@dataclass
class TestBed:
    """Creates containers and volumes with unique names and removes every one of them."""

    __test__ = False  # not a test class, despite its name

    client: docker.DockerClient
    image: str
    containers: list[Container] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def unique(self, prefix: str = "snapvol-test") -> str:
        return f"{prefix}-{secrets.token_hex(4)}"

    def volume(self, name: str | None = None) -> str:
        name = name or self.unique("snapvol-test-vol")
        assert name not in PROTECTED_NAMES
        self.client.volumes.create(name, labels={TEST_LABEL: "1"})
        self.volumes.append(name)
        return name

    def postgres(
        self,
        *,
        tcp: bool = False,
        database: str = "pc_db",
        password: str | None = None,
        volume: str | None = None,
        wait: bool = True,
        user: str = "postgres",
    ) -> PgContainer:
        """A running PostgreSQL 15 with its own named volume at the data directory; ``user``:
        its superuser (POSTGRES_USER)."""
        name = self.unique()
        vol = volume or self.volume()
        password = password or f"pw-{secrets.token_hex(8)}"
        kwargs: dict[str, Any] = {}
        if tcp:
            kwargs["ports"] = {"5432/tcp": ("127.0.0.1", None)}
        else:
            kwargs["network_mode"] = "none"
        env = {"POSTGRES_PASSWORD": password, "POSTGRES_DB": database}
        if user != "postgres":
            env["POSTGRES_USER"] = user
        container = self.client.containers.run(
            self.image,
            name=name,
            detach=True,
            environment=env,
            volumes={vol: {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
            labels={TEST_LABEL: "1"},
            stop_signal="SIGINT",
            **kwargs,
        )
        self.containers.append(container)
        pg = PgContainer(
            container=container, volume=vol, password=password, database=database, user=user
        )
        if wait:
            pg.wait_ready()
        if tcp:
            container.reload()
            pg.port = int(container.ports["5432/tcp"][0]["HostPort"])
        return pg

    def plain(
        self, mount: str = "/srv/data", volume: str | None = None, *, stubborn: bool = False
    ) -> tuple[Container, str]:
        """A running non-PostgreSQL container (a shell that sleeps) with a named volume;
        ``stubborn``: one that ignores the stop signal (only a kill ends it)."""
        vol = volume or self.volume()
        return self.sleeper({vol: {"bind": mount, "mode": "rw"}}, stubborn=stubborn), vol

    def sleeper(self, volumes: dict[str, dict[str, str]], *, stubborn: bool = False) -> Container:
        """A running container that only sleeps (and stops at once, unless ``stubborn``) with
        ``volumes`` mounted."""
        trap = "trap '' TERM INT" if stubborn else "trap 'exit 0' TERM INT"
        container = self.client.containers.run(
            self.image,
            ["sh", "-c", f"{trap}; while :; do sleep 1; done"],
            entrypoint=[],
            name=self.unique(),
            detach=True,
            network_mode="none",
            volumes=volumes,
            labels={TEST_LABEL: "1"},
        )
        self.containers.append(container)
        return container

    def cleanup(self) -> None:
        for container in self.containers:
            assert container.name not in PROTECTED_NAMES
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: anonymous volumes only
        # Helper containers snapvol left behind for these volumes would keep them in use.
        helpers = self.client.containers.list(
            all=True, filters={"label": "org.snapvol.helper"}, ignore_removed=True
        )
        for container in helpers:
            mounts = {m.get("Name") for m in container.attrs.get("Mounts", [])}
            if mounts & set(self.volumes):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
        for vol in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(vol).remove(force=True)


def host_ps_args() -> str:
    """Every process's arguments on this machine (containers' processes included)."""
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def databases(pg: PgContainer) -> set[str]:
    """The names of every database of ``pg``'s server."""
    return set(pg.psql("SELECT datname FROM pg_database", database="postgres").split())


def fail_a_snapshot(cmd: Callable[..., Any], container: str) -> Any:
    """A volume snapshot of ``container`` that fails (its helper image does not exist), leaving
    a failed record: through the endpoint lane, which needs the helper."""
    return cmd(
        "snapshot",
        "--volume",
        "--container",
        container,
        "--helper-image",
        "no/such:img",
        "--reader",
        "endpoint",
        exit_code=3,
    )


def testbed(client: docker.DockerClient) -> Iterator[TestBed]:
    """Yield a TestBed and remove everything it made."""
    bed = TestBed(client=client, image=pg_image(client))
    try:
        yield bed
    finally:
        bed.cleanup()


testbed.__test__ = False  # type: ignore[attr-defined]
