"""The downtime guard (``snapvol.volume.guard``) against a real engine: the container is stopped
for the block and started after it however the block ends; ``release`` starts it early and once;
``keep_stopped`` leaves it down; a start by someone else is detected and left to them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from docker.models.containers import Container

from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.errors import OperationFailed
from snapvol.output import Reporter
from snapvol.volume import guard
from tests.docker_helpers import TestBed


class Said(Reporter):
    """A reporter that keeps its steps."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, message: str) -> None:
        self.steps.append(message)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    connected = Engine.connect()
    yield connected
    connected.close()


@pytest.fixture
def sleeper(bed: TestBed) -> Container:
    """A running container that stops at once on SIGTERM."""
    return bed.sleeper({})


def status(container: Container) -> str:
    container.reload()
    return str(container.status)


def started_at(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def info(engine: Engine, container: Container) -> ContainerInfo:
    return engine.container(str(container.id))


def test_stopped_for_the_block_and_started_after(engine: Engine, sleeper: Container) -> None:
    before = started_at(sleeper)
    said = Said()
    with guard.stopped(engine, info(engine, sleeper), is_postgres=False, reporter=said) as down:
        assert status(sleeper) == "exited"
        assert down.was_running and not down.keep_stopped
        assert down.started_by_someone_else() is None
        down.check_still_stopped()
    assert status(sleeper) == "running" and started_at(sleeper) != before
    assert not down.taken_over
    assert said.steps == [
        f"stopping {sleeper.name} (clean shutdown, up to 30 s)",
        f"starting {sleeper.name}",
    ]


def test_an_error_in_the_block_still_starts_the_container(
    engine: Engine, sleeper: Container
) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        guard.stopped(engine, info(engine, sleeper), is_postgres=False, reporter=Said()),
    ):
        assert status(sleeper) == "exited"
        raise RuntimeError("boom")
    assert status(sleeper) == "running"


def test_release_starts_it_at_once_and_only_once(engine: Engine, sleeper: Container) -> None:
    with guard.stopped(engine, info(engine, sleeper), is_postgres=False, reporter=Said()) as down:
        assert status(sleeper) == "exited"
        down.release()
        engine.wait_status(str(sleeper.id), ["running"], timeout=60)
        released = started_at(sleeper)
        down.release()  # a second call does nothing
        assert started_at(sleeper) == released
    assert status(sleeper) == "running" and started_at(sleeper) == released


def test_keep_stopped_leaves_it_stopped(engine: Engine, sleeper: Container) -> None:
    said = Said()
    with guard.stopped(engine, info(engine, sleeper), is_postgres=False, reporter=said) as down:
        down.keep_stopped = True
        down.release()
    assert status(sleeper) == "exited"
    assert said.steps == [f"stopping {sleeper.name} (clean shutdown, up to 30 s)"]


def test_a_stopped_container_stays_stopped(engine: Engine, sleeper: Container) -> None:
    sleeper.stop(timeout=10)
    said = Said()
    with guard.stopped(engine, info(engine, sleeper), is_postgres=False, reporter=said) as down:
        assert not down.was_running
        down.release()
        assert status(sleeper) == "exited"
        assert down.started_by_someone_else() is None
    assert status(sleeper) == "exited"
    assert said.steps == [f"container {sleeper.name} is not running; it stays stopped"]


@pytest.mark.parametrize("was_running", [True, False])
@pytest.mark.parametrize("then", ["running", "stopped again"])
def test_a_start_by_someone_else_is_detected_and_left_to_them(
    engine: Engine, sleeper: Container, was_running: bool, then: str
) -> None:
    if not was_running:
        sleeper.stop(timeout=10)
    said = Said()
    with (
        pytest.raises(OperationFailed) as caught,
        guard.stopped(engine, info(engine, sleeper), is_postgres=False, reporter=said) as down,
    ):
        sleeper.start()  # someone else
        if then == "stopped again":
            sleeper.stop(timeout=10)
        theirs = started_at(sleeper)
        text = down.started_by_someone_else()
        assert text is not None and text.startswith(
            f"container {sleeper.name} was started by someone else (at {theirs}, now "
        )
        assert down.taken_over
        down.check_still_stopped()
    assert "is not a cold copy" in caught.value.message
    # Left as they left it: neither started again by snapvol nor stopped.
    assert started_at(sleeper) == theirs
    assert status(sleeper) == ("running" if then == "running" else "exited")
    assert said.steps[-1] == f"{sleeper.name} was started by someone else; leaving it as it is"


def test_postgres_accepts_connections_when_the_block_ends(engine: Engine, bed: TestBed) -> None:
    pg = bed.postgres()
    said = Said()
    with guard.stopped(engine, info(engine, pg.container), is_postgres=True, reporter=said):
        assert pg.status == "exited"
    assert pg.psql("SELECT 41 + 1") == "42"  # no wait: the guard waited until it was ready
    assert said.steps[0].startswith(f"stopping {pg.name} (clean shutdown, up to ")
