"""How `restore REF` finds a snapshot: exact id, name, or a long enough unique id prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import AmbiguousError, NotFoundError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "manifests.db")
    for sid, name in (("90c0d4ab", "primero"), ("90c0aaaa", "segundo"), ("12345678", "7")):
        store.add(Snapshot(id=sid, name=name, kind="volume", container="c", path="/x"))
    return store


@pytest.mark.parametrize(
    ("ref", "found"),
    [
        ("90c0d4ab", "90c0d4ab"),
        ("primero", "90c0d4ab"),
        ("90c0d", "90c0d4ab"),
        ("1234", "12345678"),
        ("7", "12345678"),  # a short name is still a name
    ],
)
def test_finds_by_id_name_or_prefix(store: Store, ref: str, found: str) -> None:
    assert store.resolve(ref).id == found


@pytest.mark.parametrize("ref", ["1", "12", "123", "9"])
def test_a_prefix_shorter_than_four_digits_matches_nothing(store: Store, ref: str) -> None:
    with pytest.raises(NotFoundError, match="4 or more hex digits"):
        store.resolve(ref)


def test_an_ambiguous_prefix_names_the_candidates(store: Store) -> None:
    with pytest.raises(AmbiguousError) as raised:
        store.resolve("90c0")
    assert "90c0aaaa" in raised.value.message and "90c0d4ab" in raised.value.message


@pytest.mark.parametrize("ref", ["9_c0", "90%", "zzzz"])
def test_wildcards_are_not_patterns(store: Store, ref: str) -> None:
    with pytest.raises(NotFoundError):
        store.resolve(ref)
