"""Fixtures every test shares: an isolated environment and a short way to call the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from click.testing import CliRunner, Result

from tests.docker_helpers import TestBed, testbed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder: integration tests need Docker; fault tests need it too."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "faults" in parts:
            item.add_marker(pytest.mark.docker)
        if "faults" in parts:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear SNAPVOL_* variables and point every path snapvol writes at tmp_path."""
    for key in list(os.environ):
        if key.startswith("SNAPVOL_") and key != "SNAPVOL_PG_IMAGE":
            monkeypatch.delenv(key)
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
