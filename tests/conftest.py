"""Fixtures every test shares: an isolated environment and a short way to call the CLI."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from click.testing import CliRunner, Result

from tests import servers
from tests.docker_helpers import TestBed, pg_image, testbed
from tests.podman import Podman
from tests.podman import started as podman_started
from tests.servers import RepoServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder: integration tests need Docker; fault tests need it too, and run
    alone (``serial``): they kill processes and time how soon the container runs again."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "faults" in parts:
            item.add_marker(pytest.mark.docker)
        if "faults" in parts:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.serial)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear SNAPVOL_* variables and the terminal size, and point every path snapvol writes at
    tmp_path."""
    for key in list(os.environ):
        if key.startswith("SNAPVOL_") and key != "SNAPVOL_PG_IMAGE":
            monkeypatch.delenv(key)
    for key in ("COLUMNS", "LINES"):  # pytest-xdist's workers set 80x24: output is not a terminal
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SNAPVOL_DB", str(tmp_path / "manifests.db"))
    monkeypatch.setenv("SNAPVOL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("SNAPVOL_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Cmd:
    """Run the snapvol CLI in-process and check its exit code."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, exit_code: int = 0, input: str | None = None) -> Result:
        from snapvol.cli import cli

        result = self.runner.invoke(cli, list(args), input=input, catch_exceptions=True)
        if result.exit_code != exit_code:
            raise AssertionError(
                f"snapvol {' '.join(args)} exited {result.exit_code}, expected {exit_code}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                f"exception: {result.exception!r}"
            )
        return result

    def json(self, *args: str, exit_code: int = 0, input: str | None = None) -> Any:
        return json.loads(self(*args, "--json", exit_code=exit_code, input=input).stdout)


@pytest.fixture
def cmd() -> Callable[..., Result]:
    return Cmd()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:  # a missing engine is a failure, not a skip
        pytest.fail(f"tests that use Docker need an engine (run `make test`): {err}")
    yield client
    client.close()


@pytest.fixture
def bed(docker_client: docker.DockerClient) -> Iterator[TestBed]:
    yield from testbed(docker_client)


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.ServerPool]:
    """The repository servers the tests share: each starts once, when a test first needs it."""
    pool = servers.ServerPool(tmp_path_factory.mktemp("servers"))
    yield pool
    pool.close()


def _serve(backend: str, request: pytest.FixtureRequest, root: Path) -> Iterator[RepoServer]:
    """A fresh, empty repository of `backend` for one test: on the shared server, or on a server
    of the test's own when it is marked `private_server` (it stops, restarts or reconfigures the
    server) and always for a local path (nothing to start)."""
    try:
        if backend == "local" or request.node.get_closest_marker("private_server"):
            with servers.repo_server(backend, root) as server:
                yield server
            return
        pool: servers.ServerPool = request.getfixturevalue("server_pool")
        repo = pool.repository(backend, root)
    except servers.ServerError as err:  # a server that cannot run here fails, never skips
        pytest.fail(f"the {backend} repository server did not start: {err}")
    try:
        yield repo
    finally:
        repo.close()


@pytest.fixture
def restic_local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepoServer]:
    """A restic repository path in tmp_path (`repo` is the path; nothing to start)."""
    yield from _serve("local", request, tmp_path / "repo-local")


@pytest.fixture
def sftp_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepoServer]:
    """A repository on sshd on a free 127.0.0.1 port; `sftp:snapvol-test-sftp:/PATH`."""
    yield from _serve("sftp", request, tmp_path / "repo-sftp")


@pytest.fixture
def s3_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepoServer]:
    """A repository on SeaweedFS on free 127.0.0.1 ports;
    `s3:http://127.0.0.1:PORT/snapvol-test[/PREFIX]`."""
    yield from _serve("s3", request, tmp_path / "repo-s3")


@pytest.fixture
def rest_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepoServer]:
    """A repository on rclone's restic REST server on a free 127.0.0.1 port;
    `rest:http://127.0.0.1:PORT/[NAME/]`."""
    yield from _serve("rest", request, tmp_path / "repo-rest")


@pytest.fixture(params=servers.BACKENDS)
def repo_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepoServer]:
    """Each repository backend in turn (local, sftp, s3, rest), for tests that hold for all."""
    yield from _serve(request.param, request, tmp_path / f"repo-{request.param}")


@pytest.fixture(scope="session")
def podman_service(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Podman]:
    """Podman's Docker-compatible API (rootful), on a socket of the tests' own."""
    if shutil.which("podman") is None:  # a missing engine is a failure, as Docker's is
        pytest.fail(
            "the Podman tests need podman (`bash scripts/ensure-podman.sh`; make test does)"
        )
    yield from podman_started(tmp_path_factory.mktemp("podman"), pg_image(docker_client))


@pytest.fixture
def pbed(podman_service: Podman, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestBed]:
    """A test bed on Podman; snapvol, run by ``cmd``, talks to Podman (DOCKER_HOST)."""
    monkeypatch.setenv("DOCKER_HOST", podman_service.docker_host)
    bed = TestBed(client=podman_service.client, image=podman_service.image)
    try:
        yield bed
    finally:
        bed.cleanup()
