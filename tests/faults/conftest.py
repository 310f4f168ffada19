from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.docker_helpers import TestBed, testbed


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:  # a missing engine is a failure, not a skip
        pytest.fail(f"fault tests need a Docker engine (run `make test`): {err}")
    yield client
    client.close()


@pytest.fixture
def bed(docker_client: docker.DockerClient) -> Iterator[TestBed]:
    yield from testbed(docker_client)
