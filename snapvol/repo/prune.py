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
from dataclasses import dataclass
from datetime import tzinfo

from snapvol import retention
from snapvol.adapters.restic import Restic
from snapvol.adapters.store import COMPLETE, Copy, Snapshot, Store
from snapvol.errors import IntegrityError
from snapvol.repo import manifest
from snapvol.repo.copy import Target


@dataclass(frozen=True)
class CopyDecision:
    """A snapshot's copies in the repository, and their fate under the policy."""

    decision: retention.Decision
    copies: tuple[Copy, ...]
    local: bool  # whether the snapshot is still in the local store

    @property
    def keep(self) -> bool:
        return self.decision.keep

    @property
    def restic_snapshots(self) -> list[str]:
        """The data and manifest restic snapshots of every copy."""
        return [sid for c in self.copies for sid in (c.data_snapshot, c.manifest_snapshot) if sid]


def _record_from_manifest(restic: Restic, copy: Copy) -> Snapshot:
    """The snapshot's record as the copy's manifest holds it (the local one is gone)."""
    assert copy.manifest_snapshot is not None
    files = [n for n in restic.ls(copy.manifest_snapshot) if n.type == "file"]
    if len(files) != 1 or not files[0].path.endswith(manifest.MANIFEST_SUFFIX):
        raise IntegrityError(
            f"restic snapshot {copy.manifest_snapshot[:8]} of copy {copy.id} is not a snapvol "
            "manifest; nothing was deleted"
        )
    with restic.dump(copy.manifest_snapshot, files[0].path.lstrip("/")) as stream:
        found = manifest.decode(b"".join(stream)).snapshot
    if found.id != copy.snapshot_id:
        raise IntegrityError(
            f"the manifest of copy {copy.id} describes snapshot {found.id}, not "
            f"{copy.snapshot_id}; nothing was deleted"
        )
    return found


def plan(
    store: Store, target: Target, policy: retention.Policy, tz: tzinfo | None = None
) -> list[CopyDecision]:
    """Every snapshot with a complete copy in ``target``, with its fate under ``policy``
    (newest first). Copies whose restic snapshots are no longer in the repository (forgotten
    with restic itself) are left out: there is nothing to keep or forget."""
    present = {s.id for s in target.restic.snapshots(tags=[manifest.TAG])}
    by_snapshot: dict[str, list[Copy]] = {}
    for c in store.copies(repository_id=target.repository_id, status=COMPLETE):
        if c.manifest_snapshot in present and c.data_snapshot in present:
            by_snapshot.setdefault(c.snapshot_id, []).append(c)
    records: list[Snapshot] = []
    local: set[str] = set()
    for snapshot_id, copies in by_snapshot.items():
        record = store.get(snapshot_id)
        if record is not None and record.status == COMPLETE:
            local.add(snapshot_id)
        else:
            record = _record_from_manifest(target.restic, copies[0])
            record.status = COMPLETE  # it is complete in the repository, whatever it is here
        records.append(record)
    return [
        CopyDecision(d, tuple(by_snapshot[d.snapshot.id]), d.snapshot.id in local)
        for d in retention.apply(records, policy, tz)
    ]


def forget(store: Store, target: Target, decisions: Sequence[CopyDecision]) -> list[CopyDecision]:
    """Forget (``restic forget --prune``) the copies the policy removes, in one restic run,
    then drop their records. Returns what was removed."""
    removed = [d for d in decisions if not d.keep]
    target.restic.forget([sid for d in removed for sid in d.restic_snapshots], prune=True)
    for d in removed:
        for c in d.copies:
            store.delete_copy(c.id)
    return removed
