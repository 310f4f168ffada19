"""Is a new snapshot plausible? One with no data, or one much smaller than the one before it of
the same source (an empty volume after one that held files included), is flagged: it may be
complete and still not the data (a volume mounted empty, a pg_dump of the wrong database, a table
truncated by mistake). A flagged snapshot stays complete and restorable, is said and alerted, and
is never counted as a good one by retention."""

from __future__ import annotations

import json

from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.output import human_bytes
from snapvol.retention import SUSPECT, is_safety, source_of

DEFAULT_MAX_SHRINK = 0.5
"""The fraction by which a snapshot may be smaller than the one before it unflagged."""


def suspicion(snap: Snapshot, previous: Snapshot | None, max_shrink: float) -> str | None:
    """Why ``snap`` looks wrong next to ``previous`` (the one before it of its source), if it
    does: no data at all, or a drop. A first snapshot of an empty volume, or an empty one after
    an empty one, is no drop. Sizes are the uncompressed data's."""
    size = snap.raw_bytes or 0
    if size == 0:
        return "it holds no data"
    if previous is None or not previous.raw_bytes:
        return None
    if snap.kind == "volume" and (snap.file_count or 0) <= 1 < (previous.file_count or 0):
        held = (previous.file_count or 1) - 1
        return f"the volume was empty, and held {held} entries in {previous.id} before it"
    if size < (1 - max_shrink) * previous.raw_bytes:
        return (
            f"it holds {human_bytes(size)}, {100 * (1 - size / previous.raw_bytes):.0f}% less "
            f"than {previous.id} before it ({human_bytes(previous.raw_bytes)})"
        )
    return None


def previous_of(store: Store, snap: Snapshot) -> Snapshot | None:
    """The newest complete snapshot of ``snap``'s source taken before it (safety ones aside)."""
    source = source_of(snap)
    for other in store.snapshots(status=COMPLETE, container=snap.container, kind=snap.kind):
        if (
            other.id != snap.id
            and other.created_at <= snap.created_at
            and source_of(other) == source
            and not is_safety(other)
        ):
            return other
    return None


def flag(store: Store, snap: Snapshot, max_shrink: float = DEFAULT_MAX_SHRINK) -> Snapshot:
    """Record in ``snap`` why it is suspect, if it is; returns the snapshot as recorded."""
    reason = suspicion(snap, previous_of(store, snap), max_shrink)
    if reason is None:
        return snap
    return store.update(snap.id, meta_json=_with(snap, reason))


def _with(snap: Snapshot, reason: str) -> str:
    return json.dumps({**snap.meta, SUSPECT: reason})
