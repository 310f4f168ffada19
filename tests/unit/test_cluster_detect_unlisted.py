"""A running container whose processes cannot be listed (``docker top`` fails or lists nothing)
is judged by what is on its volumes, like a stopped one: a cluster there makes it PostgreSQL.

The engine is a small fake; the helper's probe is the real script, run by this host's sh on real
directories standing in for the volumes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.engine import ContainerInfo, Mount
from snapvol.errors import DockerError
from snapvol.pg import cluster

HOME = "/srv/company/pg"


class UnlistedEngine:
    """An engine whose ``top`` fails (or lists ``processes``); helpers probe ``volumes``."""

    def __init__(self, volumes: dict[str, Path], processes: list[str] | None = None) -> None:
        self.volumes = volumes
        self.processes = processes
        self.helpers: list[str] = []

    def top(self, container_id: str) -> list[str]:
        if self.processes is None:
            raise DockerError("listing the container's processes failed: 500 Server Error")
        return self.processes

    def exec_run(self, *args: Any, **kwargs: Any) -> tuple[int, bytes, bytes]:
        raise AssertionError("the container's own shell is not what decides here")

    def run_helper(
        self, image: str, volume: str, mount: str, argv: Sequence[str], **kwargs: Any
    ) -> tuple[int, str]:
        self.helpers.append(volume)
        where = str(self.volumes[volume])
        done = subprocess.run(
            [where if arg == mount else arg for arg in argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout.replace(where, mount)


def company(status: str = "running") -> ContainerInfo:
    mounts = (
        Mount("volume", "backups", "/var/lib/docker/volumes/backups/_data", "/backups", True),
        Mount("volume", "pgvol", "/var/lib/docker/volumes/pgvol/_data", HOME, True),
    )
    return ContainerInfo(
        id="c0ffee",
        name="company",
        image="company/pg",
        image_id="sha256:abc",
        status=status,
        mounts=mounts,
        labels={},
        cmd=("serve",),
        entrypoint=("/opt/company/run.sh",),
        health=None,
        _env={"PGDATA": ""},
    )


def volumes(tmp_path: Path, *, cluster: bool = True) -> dict[str, Path]:
    backups, pg = tmp_path / "backups", tmp_path / "pgvol"
    (backups / "nightly").mkdir(parents=True)
    (backups / "nightly" / "PG_VERSION").write_text("15\n")  # no pg_control: not a cluster
    (pg / "cluster").mkdir(parents=True)
    if cluster:
        data = pg / "cluster"
        (data / "global").mkdir()
        (data / "global" / "pg_control").write_bytes(b"\0" * 64)
        (data / "PG_VERSION").write_text("15\n")
        (data / "postmaster.pid").write_text(
            "\n".join(["7", f"{HOME}/cluster", "1700000000", "5433", "/tmp", "", "", "ready"])
        )
    return {"backups": backups, "pgvol": pg}


@pytest.mark.parametrize("processes", [None, []], ids=["top-fails", "top-lists-nothing"])
def test_a_cluster_on_a_volume_makes_an_unlisted_container_postgresql(
    tmp_path: Path, processes: list[str] | None
) -> None:
    engine = UnlistedEngine(volumes(tmp_path), processes)
    server = cluster.detect(engine, company())  # type: ignore[arg-type]
    assert server is not None
    assert server.data_dir == f"{HOME}/cluster" and server.version == "15"
    assert server.cluster is not None and server.cluster.path == f"{HOME}/cluster"
    # its postmaster.pid in a running container: served, at that socket and port
    assert server.running and (server.cluster.socket_dir, server.cluster.port) == ("/tmp", "5433")
    assert cluster.target_major(engine, company(), server, "pgvol") == "15"  # type: ignore[arg-type]


def test_an_unlisted_container_without_a_cluster_is_not_postgresql(tmp_path: Path) -> None:
    engine = UnlistedEngine(volumes(tmp_path, cluster=False))
    assert cluster.detect(engine, company()) is None  # type: ignore[arg-type]
    assert sorted(engine.helpers) == ["backups", "pgvol"]  # every volume was looked at


def test_a_listed_container_without_a_server_is_not_probed(tmp_path: Path) -> None:
    """Processes that were listed stay the truth: a cluster a shell sits beside is not served."""
    engine = UnlistedEngine(volumes(tmp_path), ["sh -c while :; do sleep 1; done", "sleep 1"])
    assert cluster.detect(engine, company()) is None  # type: ignore[arg-type]
    assert engine.helpers == []


def test_a_stopped_container_is_still_judged_by_its_volumes(tmp_path: Path) -> None:
    engine = UnlistedEngine(volumes(tmp_path), ["never asked"])
    server = cluster.detect(engine, company("exited"))  # type: ignore[arg-type]
    assert server is not None and server.data_dir == f"{HOME}/cluster"
    assert not server.running  # a stopped container serves nothing, whatever its pid file says


def test_an_engine_that_answers_top_with_no_body_is_an_error_not_a_traceback() -> None:
    """Rootless Podman 4.3 answers ``GET /containers/{id}/top`` with 200 and an empty body: the
    SDK's JSON decode error becomes a SnapvolError, which ``detect`` takes as "unlisted"."""
    import http.server
    import threading

    import docker

    from snapvol.adapters.engine import Engine
    from snapvol.errors import SnapvolError

    class EmptyTop(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), EmptyTop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = docker.DockerClient(
            base_url=f"tcp://127.0.0.1:{server.server_port}", version="1.41"
        )
        with pytest.raises(SnapvolError, match="did not list the container's processes"):
            Engine(client).top("c0ffee")
    finally:
        server.shutdown()
