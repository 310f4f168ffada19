"""Fixtures the integration tests share: one test bed and one PostgreSQL server per module."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests import docker_helpers
from tests.docker_helpers import PgContainer, TestBed


@pytest.fixture(scope="module")
def module_bed(docker_client: docker.DockerClient) -> Iterator[TestBed]:
    yield from docker_helpers.testbed(docker_client)


@pytest.fixture(scope="module")
def pg(module_bed: TestBed) -> PgContainer:
    return module_bed.postgres()
