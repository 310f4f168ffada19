"""The retention policy on synthetic histories: restic buckets, safety snapshots, verified."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot
from snapvol.errors import LockedError, UsageError
from snapvol.retention import UNLIMITED, Decision, Policy, apply, named

_counter = iter(range(1, 1_000_000))


def snap(
    when: str | datetime,
    container: str = "db",
    kind: str = "volume",
    status: str = COMPLETE,
    safety_for: str | None = None,
    verify_ok: bool | None = None,
    **kw: object,
) -> Snapshot:
    """A record taken at ``when`` (UTC, "YYYY-MM-DD HH:MM")."""
    n = next(_counter)
    created = when if isinstance(when, datetime) else datetime.fromisoformat(when)
    source = {"volume": "data"} if kind == "volume" else {"database": "app"}
    meta = {"safety_for": safety_for} if safety_for else {}
    return Snapshot(
        id=f"{n:012x}",
        name=kw.pop("name", f"s{n}"),  # type: ignore[arg-type]
        kind=kind,
        container=container,
        status=status,
        created_at=created.replace(tzinfo=UTC),
        meta_json=json.dumps(meta),
        verify_ok=verify_ok,
        **{**source, **kw},
    )


def kept(decisions: list[Decision]) -> list[str]:
    return [d.snapshot.name for d in decisions if d.keep]


def removed(decisions: list[Decision]) -> list[str]:
    return [d.snapshot.name for d in decisions if not d.keep]


def reasons(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.snapshot.name: d.reasons for d in decisions}


def daily(days: int, start: str = "2026-11-01 03:00", per_day: int = 1) -> list[Snapshot]:
    """``per_day`` snapshots a day (two hours apart) for ``days`` days, named d<day>.<k>."""
    first = datetime.fromisoformat(start)
    return [
        snap(first + timedelta(days=d, hours=2 * k), name=f"d{d + 1}.{k + 1}")
        for d in range(days)
        for k in range(per_day)
    ]


# --- keep-last (and what `--keep N` always meant) --------------------------------------------


def test_keep_last_keeps_the_newest_of_each_source_in_any_order() -> None:
    snaps = daily(5)
    shuffled = [snaps[0], snaps[4], snaps[2], snaps[3], snaps[1]]
    decisions = apply(shuffled, Policy(last=2), tz=UTC)
    assert [d.snapshot.name for d in decisions] == ["d5.1", "d4.1", "d3.1", "d2.1", "d1.1"]
    assert kept(decisions) == ["d5.1", "d4.1"]
    assert reasons(decisions)["d5.1"] == ("last snapshot",)
    assert reasons(decisions)["d3.1"] == ("matches no keep rule",)
    assert removed(apply(snaps, Policy(last=5), tz=UTC)) == []
    assert removed(apply(snaps, Policy(last=UNLIMITED), tz=UTC)) == []


def test_sources_are_counted_apart() -> None:
    snaps = [
        snap("2026-11-01 01:00", name="v1"),
        snap("2026-11-01 02:00", name="v2"),
        snap("2026-11-01 03:00", kind="logical", name="l1"),
        snap("2026-11-01 04:00", kind="logical", name="l2"),
        snap("2026-11-01 05:00", container="other", name="o1"),
        snap("2026-11-01 06:00", volume="second", name="w1"),
        snap("2026-11-01 07:00", kind="logical", database="other_db", name="x1"),
    ]
    assert sorted(removed(apply(snaps, Policy(last=1), tz=UTC))) == ["l1", "v1"]


def test_failed_records_go_and_running_snapshots_stay_and_neither_counts() -> None:
    snaps = [
        snap("2026-11-01 01:00", name="old"),
        snap("2026-11-01 02:00", status=FAILED, name="failed"),
        snap("2026-11-01 03:00", status=IN_PROGRESS, name="running"),
        snap("2026-11-01 04:00", name="new"),
    ]
    decisions = apply(snaps, Policy(last=1), tz=UTC)
    assert kept(decisions) == ["new", "running"]
    assert removed(decisions) == ["failed", "old"]
    assert reasons(decisions)["failed"] == ("failed",)
    assert reasons(decisions)["running"] == ("in progress",)
    # With only a failed and a running one, the running one is not taken for "the last".
    only = apply([snaps[1], snaps[2], snaps[0]], Policy(last=1), tz=UTC)
    assert kept(only) == ["running", "old"] and removed(only) == ["failed"]


# --- restic's time buckets ---------------------------------------------------------------------


def test_keep_daily_keeps_the_newest_of_each_of_the_last_days() -> None:
    snaps = daily(6, per_day=3)  # 03:00, 05:00, 07:00 each day
    decisions = apply(snaps, Policy(daily=3), tz=UTC)
    assert kept(decisions) == ["d6.3", "d5.3", "d4.3"]
    assert {reasons(decisions)[n] for n in kept(decisions)} == {("daily snapshot",)}
    assert len(removed(decisions)) == 15


def test_counts_left_keep_the_oldest_snapshot_as_restic_does() -> None:
    snaps = daily(3, per_day=2)
    decisions = apply(snaps, Policy(daily=7), tz=UTC)
    # Three days fill three of seven counts; the oldest snapshot is kept too, and says why.
    assert kept(decisions) == ["d3.2", "d2.2", "d1.2", "d1.1"]
    assert reasons(decisions)["d1.1"] == ("oldest daily snapshot",)
    assert reasons(decisions)["d1.2"] == ("daily snapshot",)
    # Counts used up: the oldest goes like any other.
    assert "d1.1" in removed(apply(snaps, Policy(daily=3), tz=UTC))


def test_keep_hourly() -> None:
    first = datetime(2026, 11, 1, 10, 5)
    snaps = [snap(first + timedelta(minutes=20 * k), name=f"m{k}") for k in range(9)]
    # 10:05 10:25 10:45 | 11:05 11:25 11:45 | 12:05 12:25 12:45
    assert kept(apply(snaps, Policy(hourly=2), tz=UTC)) == ["m8", "m5"]


def test_keep_weekly_uses_iso_weeks_monday_to_sunday() -> None:
    snaps = [
        snap("2026-11-01 12:00", name="sun1"),  # Sunday: ISO week 44
        snap("2026-11-02 12:00", name="mon"),  # Monday: week 45
        snap("2026-11-07 12:00", name="sat"),
        snap("2026-11-08 12:00", name="sun2"),  # Sunday: still week 45
        snap("2026-11-09 12:00", name="mon2"),  # week 46
    ]
    decisions = apply(snaps, Policy(weekly=2), tz=UTC)
    assert kept(decisions) == ["mon2", "sun2"]
    assert removed(decisions) == ["sat", "mon", "sun1"]


def test_iso_weeks_across_a_new_year() -> None:
    snaps = [
        snap("2026-12-28 12:00", name="mon53"),  # 2026 has an ISO week 53: Dec 28 .. Jan 3
        snap("2027-01-03 12:00", name="sun53"),
        snap("2027-01-04 12:00", name="mon1"),  # 2027-W01
    ]
    assert kept(apply(snaps, Policy(weekly=2), tz=UTC)) == ["mon1", "sun53"]


def test_keep_monthly_and_yearly() -> None:
    snaps = [
        snap("2024-06-15 00:00", name="2024-06"),
        snap("2025-01-31 00:00", name="2025-01"),
        snap("2025-12-01 00:00", name="2025-12a"),
        snap("2025-12-31 23:00", name="2025-12b"),
        snap("2026-01-01 01:00", name="2026-01a"),
        snap("2026-01-20 01:00", name="2026-01b"),
        snap("2026-02-10 01:00", name="2026-02"),
    ]
    assert kept(apply(snaps, Policy(monthly=3), tz=UTC)) == ["2026-02", "2026-01b", "2025-12b"]
    yearly = apply(snaps, Policy(yearly=5), tz=UTC)
    assert kept(yearly) == ["2026-02", "2025-12b", "2024-06"]
    assert reasons(yearly)["2024-06"] == ("yearly snapshot",)  # a new year, not "oldest"


def test_rules_combine_and_each_reason_is_listed() -> None:
    snaps = daily(10, per_day=2)  # Sunday Nov 1 .. Tuesday Nov 10 2026, 03:00 and 05:00
    decisions = apply(snaps, Policy(last=3, daily=4, weekly=3, monthly=1), tz=UTC)
    why = reasons(decisions)
    assert why["d10.2"] == (
        "last snapshot",
        "daily snapshot",
        "weekly snapshot",
        "monthly snapshot",
    )
    assert why["d10.1"] == ("last snapshot",)
    assert why["d9.2"] == ("last snapshot", "daily snapshot")
    # Sunday Nov 8 ends ISO week 45; Sunday Nov 1 ends week 44.
    assert why["d8.2"] == ("daily snapshot", "weekly snapshot")
    assert why["d8.1"] == ("matches no keep rule",)
    assert why["d7.2"] == ("daily snapshot",)
    assert why["d1.2"] == ("weekly snapshot",)
    assert kept(decisions) == ["d10.2", "d10.1", "d9.2", "d8.2", "d7.2", "d1.2"]


def test_buckets_are_read_in_the_zone_given() -> None:
    # 23:30 UTC on Nov 1 and 00:30 UTC on Nov 2: two days in UTC, one day in UTC-5.
    snaps = [snap("2026-11-01 23:30", name="late"), snap("2026-11-02 00:30", name="later")]
    assert kept(apply(snaps, Policy(daily=1), tz=UTC)) == ["later"]
    assert kept(apply(snaps, Policy(daily=2), tz=UTC)) == ["later", "late"]
    new_york = timezone(timedelta(hours=-5))
    decisions = apply(snaps, Policy(daily=2), tz=new_york)
    # One day there: the older is kept only as the oldest while counts are left.
    assert reasons(decisions) == {"later": ("daily snapshot",), "late": ("oldest daily snapshot",)}
    assert kept(apply(snaps, Policy(last=1, daily=1), tz=new_york)) == ["later"]


# --- safety snapshots --------------------------------------------------------------------------


def test_a_safety_snapshot_never_costs_the_user_their_snapshot() -> None:
    """The issue: after a restore, `prune --keep 1` kept the safety snapshot, not the user's."""
    mine = snap("2026-11-01 10:00", name="mine")
    safety = snap("2026-11-01 11:00", safety_for=mine.id, name="safety")
    decisions = apply([mine, safety], Policy(last=1), tz=UTC)
    assert kept(decisions) == ["safety", "mine"] and removed(decisions) == []
    assert reasons(decisions) == {"safety": ("safety snapshot",), "mine": ("last snapshot",)}


def test_safety_snapshots_keep_the_newest_per_source_by_their_own_count() -> None:
    user = [snap(f"2026-11-0{d} 09:00", name=f"u{d}") for d in range(1, 5)]
    safeties = [
        snap(f"2026-11-0{d} 12:00", safety_for=user[d - 1].id, name=f"safe{d}") for d in (1, 2, 3)
    ]
    logical_safety = snap("2026-11-01 13:00", kind="logical", safety_for="x", name="logical-safe")
    other = snap("2026-11-01 13:00", container="other", safety_for="y", name="other-safe")
    decisions = apply([*user, *safeties, logical_safety, other], Policy(last=2), tz=UTC)
    assert removed(decisions) == ["safe2", "u2", "safe1", "u1"]
    assert reasons(decisions)["safe2"] == ("older safety snapshot",)
    assert {"safe3", "logical-safe", "other-safe"} <= set(kept(decisions))
    # A larger --keep-safety keeps more; "unlimited" keeps them all.
    more = apply([*user, *safeties], Policy(last=2, safety=2), tz=UTC)
    assert removed(more) == ["u2", "safe1", "u1"]
    assert removed(apply(safeties, Policy(last=1, safety=UNLIMITED), tz=UTC)) == []


def test_safety_snapshots_do_not_count_as_verified_or_for_buckets() -> None:
    old = snap("2026-11-01 09:00", verify_ok=True, name="old-good")
    safety = snap("2026-11-02 09:00", safety_for=old.id, verify_ok=True, name="safety")
    new = snap("2026-11-03 09:00", name="new")
    decisions = apply([old, safety, new], Policy(daily=1), tz=UTC)
    assert reasons(decisions) == {
        "new": ("daily snapshot",),
        "safety": ("safety snapshot",),
        "old-good": ("newest verified",),
    }


def test_a_failed_safety_snapshot_goes() -> None:
    failed = snap("2026-11-01 09:00", status=FAILED, safety_for="x", name="broken-safety")
    decisions = apply([failed, snap("2026-11-01 08:00", name="u")], Policy(last=1), tz=UTC)
    assert removed(decisions) == ["broken-safety"]


# --- verified ----------------------------------------------------------------------------------


def test_the_newest_snapshot_that_last_verified_good_is_always_kept() -> None:
    snaps = [
        snap("2026-11-01 09:00", verify_ok=True, name="good-old"),
        snap("2026-11-02 09:00", verify_ok=True, name="good"),
        snap("2026-11-03 09:00", verify_ok=False, name="bad"),
        snap("2026-11-04 09:00", name="unverified"),
    ]
    decisions = apply(snaps, Policy(last=1), tz=UTC)
    assert kept(decisions) == ["unverified", "good"]
    assert reasons(decisions)["good"] == ("newest verified",)
    assert removed(decisions) == ["bad", "good-old"]
    # When the newest is also the newest verified, both reasons are given.
    both = apply(snaps[:2], Policy(last=1), tz=UTC)
    assert reasons(both)["good"] == ("last snapshot", "newest verified")
    assert removed(both) == ["good-old"]


def test_verified_is_per_source() -> None:
    snaps = [
        snap("2026-11-01 09:00", verify_ok=True, name="a-good"),
        snap("2026-11-02 09:00", name="a-new"),
        snap("2026-11-03 09:00", container="b", verify_ok=True, name="b-good"),
    ]
    assert removed(apply(snaps, Policy(last=1), tz=UTC)) == []


# --- the policy itself, and rm -----------------------------------------------------------------


def test_a_policy_needs_a_time_rule_and_at_least_one_safety_snapshot() -> None:
    with pytest.raises(UsageError, match="say what to keep"):
        Policy()
    with pytest.raises(UsageError, match="say what to keep"):
        Policy(last=0, safety=3)
    with pytest.raises(UsageError, match="keep-safety must be at least 1"):
        Policy(last=1, safety=0)
    with pytest.raises(UsageError, match="keep-daily"):
        Policy(daily=-2)
    assert "the last 1;" in Policy(last=1).describe()
    assert "all daily" in Policy(daily=UNLIMITED).describe()


def test_equal_times_are_ordered_by_id_whatever_the_input_order() -> None:
    twins = [snap("2026-11-01 09:00", name="first"), snap("2026-11-01 09:00", name="second")]
    assert kept(apply(twins, Policy(last=1), tz=UTC)) == ["second"]
    assert kept(apply(twins[::-1], Policy(last=1), tz=UTC)) == ["second"]


def test_rm_removes_what_is_named_once_and_refuses_a_running_one() -> None:
    a, b = snap("2026-11-01 09:00", name="a"), snap("2026-11-01 10:00", name="b")
    decisions = named([("a", a), ("b", b), (a.id, a)])
    assert [(d.snapshot.name, d.action, d.reasons) for d in decisions] == [
        ("a", "remove", ("named: a",)),
        ("b", "remove", ("named: b",)),
    ]
    running = snap("2026-11-01 11:00", status=IN_PROGRESS, name="running")
    with pytest.raises(LockedError, match="nothing was deleted"):
        named([("a", a), ("running", running)])


def test_a_suspect_snapshot_is_kept_but_never_counted_as_a_good_one() -> None:
    good = snap("2026-01-01 10:00", name="good")
    older = snap("2025-12-31 10:00", name="older")
    bad = snap("2026-01-02 10:00", name="bad")
    bad.meta_json = json.dumps({"suspect": "it holds 1 KB, 99% less than good before it"})
    decisions = {d.snapshot.name: d for d in apply([older, good, bad], Policy(last=1), tz=UTC)}
    assert decisions["good"].keep and decisions["good"].reasons == ("last snapshot",)
    assert not decisions["older"].keep
    assert decisions["bad"].keep and decisions["bad"].reasons[0].startswith("suspect")


# --- drilled -----------------------------------------------------------------------------------


def test_the_newest_snapshot_whose_last_drill_passed_is_always_kept() -> None:
    old = snap("2026-11-01 09:00", name="drilled-old")
    good = snap("2026-11-02 09:00", name="drilled")
    failed = snap("2026-11-03 09:00", name="drill-failed")
    new = snap("2026-11-04 09:00", name="new")
    other = snap("2026-11-02 10:00", container="other", name="other-drilled")
    drilled = {old.id, good.id, other.id}
    decisions = apply([old, good, failed, new, other], Policy(last=1), tz=UTC, drilled=drilled)
    assert reasons(decisions) == {
        "new": ("last snapshot",),
        "drill-failed": ("matches no keep rule",),
        "other-drilled": ("last snapshot", "newest drilled"),
        "drilled": ("newest drilled",),
        "drilled-old": ("matches no keep rule",),
    }
    # Without drills the same policy keeps only the last of each source.
    assert removed(apply([old, good, failed, new], Policy(last=1), tz=UTC)) == [
        "drill-failed",
        "drilled",
        "drilled-old",
    ]
