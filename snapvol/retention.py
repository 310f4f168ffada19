"""Retention: which snapshots a policy keeps, which it lets go, and why. Pure: no I/O.

Snapshots are judged per source (a container's volume or database, per kind), in three groups:

- the user's complete snapshots: restic's ``forget`` rules (``--keep-last``, ``--keep-hourly`` ...
  ``--keep-yearly``), and, whatever those say, the newest one whose last ``snapvol verify``
  succeeded (reason "newest verified"), so the last known-good backup never goes, and the
  newest one whose last ``snapvol drill`` passed (reason "newest drilled"): the last backup
  proven to restore never goes either;
- suspect snapshots (flagged empty or much smaller than the one before, meta ``suspect``):
  kept, and never counted as one of the good snapshots the rules keep (reason "suspect");
- safety snapshots (a restore's automatic copy of what it replaced, meta ``safety_for``): their
  own rule, the newest ``safety`` of them (at least the newest, the undo of the last restore),
  never counted against the user's snapshots;
- records of failed snapshots always go; snapshots in progress always stay.

Time buckets are restic's: newest first, a snapshot is kept when it is the newest of its hour,
day, ISO week, month or year still counted, and the oldest snapshot is kept too while a rule has
counts left (reason "oldest daily snapshot" and so on, as restic says since its PR #5039).
Like restic, buckets are read in local time (``tz=None``); pass a zone to choose.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, tzinfo

from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot, as_utc
from snapvol.errors import LockedError, UsageError

UNLIMITED = -1  # a count that keeps every bucket (restic's "unlimited")

Bucket = Callable[[datetime, int], object]

# The time rules in restic's order: (Policy field, bucket of a snapshot, reason to keep).
_RULES: tuple[tuple[str, Bucket, str], ...] = (
    ("last", lambda _when, nr: nr, "last snapshot"),
    ("hourly", lambda when, _nr: (when.year, when.month, when.day, when.hour), "hourly snapshot"),
    ("daily", lambda when, _nr: (when.year, when.month, when.day), "daily snapshot"),
    ("weekly", lambda when, _nr: when.isocalendar()[:2], "weekly snapshot"),
    ("monthly", lambda when, _nr: (when.year, when.month), "monthly snapshot"),
    ("yearly", lambda when, _nr: when.year, "yearly snapshot"),
)

NEWEST_VERIFIED = "newest verified"
SUSPECT_REASON = "suspect: not counted (much smaller or empty; `snapvol rm` it once checked)"
NEWEST_DRILLED = "newest drilled"
SAFETY = "safety snapshot"
IN_PROGRESS_REASON = "in progress"
FAILED_REASON = "failed"
UNMATCHED = "matches no keep rule"
OLDER_SAFETY = "older safety snapshot"


@dataclass(frozen=True)
class Policy:
    """How many snapshots of each source to keep: restic's counts, and the safety snapshots'.

    A count is a number of buckets (0: rule off; ``UNLIMITED``: every bucket).
    """

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    safety: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < UNLIMITED:
                raise UsageError(f"--keep-{f.name} must be a count, or 'unlimited'")
        if self.safety == 0:
            raise UsageError(
                "--keep-safety must be at least 1: the newest safety snapshot is the undo of "
                "the last restore (delete it with `snapvol rm` if you mean to)"
            )
        if self.empty():
            raise UsageError(
                "say what to keep: --keep-last N, --keep-hourly N, --keep-daily N, "
                "--keep-weekly N, --keep-monthly N or --keep-yearly N (N > 0 or 'unlimited')"
            )

    def empty(self) -> bool:
        """True when no time rule is on (``safety`` alone is not a policy)."""
        return all(getattr(self, name) == 0 for name, _bucket, _reason in _RULES)

    def describe(self) -> str:
        """The policy in words, e.g. "keep per source: the last 3, 7 daily; ..."."""
        counts = [
            f"the last {n}" if name == "last" else f"{n} {name}"
            for name, _bucket, _reason in _RULES
            if (n := "all" if getattr(self, name) == UNLIMITED else getattr(self, name))
        ]
        safety = "all" if self.safety == UNLIMITED else f"the newest {self.safety}"
        return (
            f"keep per source: {', '.join(counts)}; the newest verified; the newest drilled; "
            f"{safety} safety "
            "snapshot(s); those in progress. Failed records go."
        )


@dataclass(frozen=True)
class Source:
    """What a snapshot is of: a container's volume or database, per kind."""

    container: str
    kind: str
    item: str  # the volume or database ("" when the record has neither)

    def __str__(self) -> str:
        return f"{self.container} {self.kind} {self.item}".rstrip()


def source_of(snap: Snapshot) -> Source:
    return Source(snap.container, snap.kind, snap.volume or snap.database or "")


SUSPECT = "suspect"  # the key in a snapshot's meta: why it was flagged (see plausibility)


def is_suspect(snap: Snapshot) -> bool:
    """A snapshot flagged empty or much smaller than the one before it of its source."""
    return bool(snap.meta.get(SUSPECT))


def is_safety(snap: Snapshot) -> bool:
    """A restore's automatic copy of what it replaced (volume or logical)."""
    return "safety_for" in snap.meta


@dataclass(frozen=True)
class Decision:
    """One snapshot's fate and why."""

    snapshot: Snapshot
    keep: bool
    reasons: tuple[str, ...]

    @property
    def action(self) -> str:
        return "keep" if self.keep else "remove"


def newest_first(snaps: Sequence[Snapshot]) -> list[Snapshot]:
    """Newest first; equal times by id, so the order never depends on how the rows came."""
    return sorted(snaps, key=lambda s: (as_utc(s.created_at), s.id), reverse=True)


def _time_reasons(snaps: list[Snapshot], policy: Policy, tz: tzinfo | None) -> list[list[str]]:
    """restic's ApplyPolicy on one source's snapshots (newest first): the reasons for each."""
    left = {name: getattr(policy, name) for name, _bucket, _reason in _RULES}
    seen: dict[str, object] = {}
    reasons: list[list[str]] = []
    for nr, snap in enumerate(snaps):
        when = as_utc(snap.created_at).astimezone(tz)
        matched = []
        for name, bucket, reason in _RULES:
            if left[name] == 0:
                continue
            value = bucket(when, nr)
            new_bucket = name not in seen or value != seen[name]
            # restic keeps the oldest snapshot too while a rule has counts left (the longest
            # history the counts allow), and then says so.
            oldest = nr == len(snaps) - 1
            if new_bucket or oldest:
                seen[name] = value
                if left[name] > 0:
                    left[name] -= 1
                matched.append(reason if new_bucket else f"oldest {reason}")
        reasons.append(matched)
    return reasons


def _judge_source(
    snaps: list[Snapshot], policy: Policy, tz: tzinfo | None, drilled: Collection[str]
) -> list[Decision]:
    decisions = []
    complete = [s for s in snaps if s.status == COMPLETE]
    suspects = [s for s in complete if is_suspect(s) and not is_safety(s)]
    users = [s for s in complete if not is_safety(s) and s not in suspects]
    safeties = [s for s in complete if is_safety(s)]
    verified = next((s for s in users if s.verify_ok), None)
    proven = next((s for s in users if s.id in drilled), None)
    for snap, reasons in zip(users, _time_reasons(users, policy, tz), strict=True):
        if snap is verified:
            reasons.append(NEWEST_VERIFIED)
        if snap is proven:
            reasons.append(NEWEST_DRILLED)
        decisions.append(Decision(snap, bool(reasons), tuple(reasons) or (UNMATCHED,)))
    for snap in suspects:  # never one of the policy's good snapshots; left for a person
        decisions.append(Decision(snap, True, (SUSPECT_REASON,)))
    for nr, snap in enumerate(safeties):
        kept = policy.safety == UNLIMITED or nr < policy.safety
        decisions.append(Decision(snap, kept, (SAFETY if kept else OLDER_SAFETY,)))
    for snap in snaps:
        if snap.status == FAILED:
            decisions.append(Decision(snap, False, (FAILED_REASON,)))
        elif snap.status != COMPLETE:
            status = IN_PROGRESS_REASON if snap.status == IN_PROGRESS else snap.status
            decisions.append(Decision(snap, True, (status,)))
    return decisions


def apply(
    snaps: Sequence[Snapshot],
    policy: Policy,
    tz: tzinfo | None = None,
    drilled: Collection[str] = (),
) -> list[Decision]:
    """Every snapshot with its fate under ``policy``, newest first.

    ``tz`` is the zone the hour/day/week/month/year buckets are read in; None: local time.
    ``drilled``: the ids of the snapshots whose last restore drill passed.
    """
    by_source: dict[Source, list[Snapshot]] = {}
    ordered = newest_first(snaps)
    for snap in ordered:
        by_source.setdefault(source_of(snap), []).append(snap)
    judged = {
        d.snapshot.id: d
        for group in by_source.values()
        for d in _judge_source(group, policy, tz, drilled)
    }
    return [judged[s.id] for s in ordered]


def named(snaps: Sequence[tuple[str, Snapshot]]) -> list[Decision]:
    """What ``rm REF...`` does with each (ref, snapshot): removes it. A snapshot in progress
    makes ``rm`` refuse them all (as ``lifecycle.remove`` does), so it raises."""
    decisions: dict[str, Decision] = {}
    for ref, snap in snaps:
        if snap.status == IN_PROGRESS:
            raise LockedError(
                f"snapshot {snap.id} ({snap.name}) is being taken (pid {snap.pid}); "
                "nothing was deleted"
            )
        decisions.setdefault(snap.id, Decision(snap, False, (f"named: {ref}",)))
    return list(decisions.values())
