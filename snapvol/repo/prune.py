"""Retention in a repository: which copies a keep policy lets go, and forgetting them.

`snapvol prune` applies its policy twice, with the same rules: to the local snapshots (as it
always did) and to the snapshots that have a complete copy in the repository. The repository's
history is judged on its own, as ``restic forget`` judges a repository: a copy whose local
snapshot was deleted (``snapvol rm``, an earlier prune) still counts there, with the record its
manifest holds, and goes only when the policy removes it from the repository's history.
A removed copy's two restic snapshots (data and manifest) are forgotten with ``--prune``, and its
record leaves the store. Only copies this store made or imported are judged: other snapshots in
the repository are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from snapvol import retention
from snapvol.adapters.restic import Restic
from snapvol.adapters.store import COMPLETE, IN_PROGRESS, Copy, Snapshot, Store
from snapvol.errors import IntegrityError, RepositoryUnreachableError, SnapvolError
from snapvol.output import Reporter
from snapvol.repo.copy import Listing, Target, listing, orphans
from snapvol.repo.fetch import read_manifest


@dataclass(frozen=True)
class CopyDecision:
    """A snapshot's copies in the repository, and their fate under the policy."""

    decision: retention.Decision
    copies: tuple[Copy, ...]
    local: bool  # whether the snapshot is still in the local store
    restic_snapshots: tuple[str, ...]  # the full ids of every copy's data and manifest

    @property
    def keep(self) -> bool:
        return self.decision.keep


def _record_from_manifest(restic: Restic, copy: Copy, manifest_id: str) -> Snapshot:
    """The snapshot's record as the copy's manifest (restic snapshot ``manifest_id``, its full
    id) holds it (the local one is gone)."""
    what = f"{manifest_id[:8]} of copy {copy.id}"
    found = read_manifest(restic, manifest_id, what).snapshot
    if found.id != copy.snapshot_id:
        raise IntegrityError(
            f"the manifest of copy {copy.id} describes snapshot {found.id}, not {copy.snapshot_id}"
        )
    return found


@dataclass
class Plan:
    """What prune does in the repository: each copied snapshot's fate, the restic snapshots
    interrupted copies or forgets left behind (``orphans``, forgotten too: data without a
    manifest, and the half of one of this store's copies whose other half is gone), and the
    copies left alone because their manifest could not be read (snapshot id, why)."""

    decisions: list[CopyDecision] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, SnapvolError]] = field(default_factory=list)


def plan(
    store: Store,
    target: Target,
    policy: retention.Policy,
    tz: tzinfo | None = None,
    reporter: Reporter | None = None,
) -> Plan:
    """Every snapshot with a complete copy in ``target``, with its fate under ``policy``
    (newest first). Copies whose restic snapshots are no longer in the repository (forgotten
    with restic itself) are left out: there is nothing to keep or forget. A copy whose
    manifest cannot be read is left out too, with a warning: it is neither kept nor forgotten
    by this run, and the others are judged without it."""
    present: Listing = listing(target)
    by_snapshot: dict[str, list[Copy]] = {}
    for c in store.copies(repository_id=target.repository_id, status=COMPLETE):
        if present.holds(c):
            by_snapshot.setdefault(c.snapshot_id, []).append(c)
    result = Plan()
    records: list[Snapshot] = []
    local: set[str] = set()
    for snapshot_id, copies in by_snapshot.items():
        record = store.get(snapshot_id)
        if record is not None and record.status == COMPLETE:
            local.add(snapshot_id)
        else:
            try:
                manifest_id = present.parts(copies[0])[1]
                assert manifest_id is not None  # present.holds(copies[0])
                record = _record_from_manifest(target.restic, copies[0], manifest_id)
            except RepositoryUnreachableError:
                raise
            except SnapvolError as err:
                if reporter is not None:
                    reporter.warn(
                        f"the copy of snapshot {snapshot_id} in {target.display} is skipped "
                        f"(neither kept nor forgotten): its manifest cannot be read: {err.message}"
                    )
                result.unreadable.append((snapshot_id, err))
                continue
            record.status = COMPLETE  # it is complete in the repository, whatever it is here
        records.append(record)
    result.decisions = [
        CopyDecision(
            d,
            tuple(by_snapshot[d.snapshot.id]),
            d.snapshot.id in local,
            tuple(i for c in by_snapshot[d.snapshot.id] for i in present.parts(c) if i),
        )
        for d in retention.apply(records, policy, tz)
    ]
    # Only snapshots this store tried to copy here, and none it is copying now: another
    # machine's copy, between its data and its manifest, is not ours to judge.
    tried = {c.snapshot_id: c.status for c in store.copies(repository_id=target.repository_id)}
    busy = {
        c.snapshot_id for c in store.copies(repository_id=target.repository_id, status=IN_PROGRESS)
    }
    result.orphans = [
        sid
        for i in sorted(present.snapshot_ids())
        if i in tried and i not in busy
        for sid in orphans(store, target, present, i)
    ]
    # Half a copy (a forget that lost the server between its two snapshots, or one by hand):
    # a manifest without its data would be found by a restore and fail it.
    for c in store.copies(repository_id=target.repository_id, status=COMPLETE):
        parts = present.parts(c)
        if not all(parts):
            result.orphans += [i for i in parts if i and i not in result.orphans]
    return result


def forget(
    store: Store, target: Target, decisions: Sequence[CopyDecision], leftovers: Sequence[str] = ()
) -> list[CopyDecision]:
    """Forget (``restic forget --prune``) the copies the policy removes and the ``leftovers``
    (orphan data snapshots), in one restic run, then drop the copies' records. Returns the
    decisions that removed copies."""
    removed = [d for d in decisions if not d.keep]
    doomed = [sid for d in removed for sid in d.restic_snapshots] + list(leftovers)
    if not doomed:
        return removed
    target.restic.forget(doomed, prune=True)
    for d in removed:
        for c in d.copies:
            store.delete_copy(c.id)
    return removed
