"""Which snapshots a retention of N per source lets go (pure logic on store records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from snapvol.errors import UsageError
from snapvol.lifecycle import prunable
from snapvol.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def snap(
    n: int, container: str = "db", kind: str = "volume", status: str = COMPLETE, **kw
) -> Snapshot:
    source = {"volume": "data"} if kind == "volume" else {"database": "pc_db"}
    return Snapshot(
        id=f"{n:08x}",
        name=f"s{n}",
        kind=kind,
        container=container,
        status=status,
        created_at=T0 + timedelta(hours=n),
        **{**source, **kw},
    )


def ids(snaps: list[Snapshot]) -> list[str]:
    return [s.name for s in snaps]


def test_keeps_the_newest_of_each_source_in_any_order() -> None:
    snaps = [snap(1), snap(5), snap(3), snap(4), snap(2)]
    assert ids(prunable(snaps, keep=2)) == ["s3", "s2", "s1"]
    assert ids(prunable(snaps, keep=5)) == []


def test_sources_are_counted_apart() -> None:
    snaps = [
        snap(1),
        snap(2),
        snap(3, kind="logical"),
        snap(4, kind="logical"),
        snap(5, container="other"),
        snap(6, volume="second"),
    ]
    assert ids(prunable(snaps, keep=1)) == ["s3", "s1"]


def test_failed_records_go_and_running_snapshots_stay() -> None:
    snaps = [snap(1), snap(2, status=FAILED), snap(3, status=IN_PROGRESS), snap(4)]
    assert ids(prunable(snaps, keep=1)) == ["s2", "s1"]
    # Neither a failed nor a running snapshot counts towards what is kept.
    assert ids(prunable([snap(1), snap(2, status=FAILED), snap(3, status=IN_PROGRESS)], 1)) == [
        "s2"
    ]


def test_keep_must_be_at_least_one() -> None:
    with pytest.raises(UsageError):
        prunable([snap(1)], keep=0)
