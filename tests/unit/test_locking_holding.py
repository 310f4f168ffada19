"""``locking.holding``: the one way a command holds container locks (all or none, each once).
Real flocks on real files in the real lock directory."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from snapvol import locking
from snapvol.errors import LockedError


@pytest.fixture
def ids() -> Iterator[list[str]]:
    """Three fresh container ids; their lock files are removed afterwards."""
    made = [secrets.token_hex(32) for _ in range(3)]
    yield made
    for container_id in made:
        locking.lock_path(container_id).unlink(missing_ok=True)


def test_every_lock_is_held_inside_and_released_after(ids: list[str]) -> None:
    with locking.holding([(i, f"c{n}") for n, i in enumerate(ids)], "rm") as held:
        assert len(held) == 3
        assert all(locking.is_held(i) for i in ids)
    assert not any(locking.is_held(i) for i in ids)


def test_a_container_named_twice_is_locked_once(ids: list[str]) -> None:
    twice = [(ids[0], "db"), (ids[0], "db"), (ids[1], "web")]
    with locking.holding(twice, "rm") as held:  # a second flock of our own would be refused
        assert [lock.path for lock in held] == [locking.lock_path(i) for i in ids[:2]]


def test_one_refused_lock_releases_those_already_taken(ids: list[str]) -> None:
    other = locking.acquire(ids[1], "web", "restore dos")
    try:
        with (
            pytest.raises(LockedError, match="`snapvol restore dos`"),
            locking.holding([(ids[0], "db"), (ids[1], "web"), (ids[2], "cache")], "rm"),
        ):
            pytest.fail("the block must not run without every lock")
        assert not locking.is_held(ids[0]) and not locking.is_held(ids[2])
    finally:
        other.release()


def test_locks_are_released_when_the_block_fails(ids: list[str]) -> None:
    with pytest.raises(RuntimeError), locking.holding([(ids[0], "db")], "rm"):
        assert locking.is_held(ids[0])
        raise RuntimeError("boom")
    assert not locking.is_held(ids[0])
