"""Kubernetes snapshots in the manifest store: recorded like a container's volume snapshots.

A cold copy of a claim (``cold``) is a volume snapshot like any other: kind ``volume``, an
archive with its SHA-256, every member with its own, recorded complete only when a restore would
take it (``archiving.record_complete``, the check engine snapshots pass). What differs is its
source, kept in the record: ``container`` is ``k8s:<namespace>/<kind>/<workload>``, ``volume``
the claim, and ``meta["kubernetes"]`` the context, API server, namespace, workload, claim, node
and image, so that a restore goes back there without being told; ``meta["reader"]`` the lane
that read it (``pod``: a helper pod; ``host``: snapvol on the claim's node, ``node``), as an
engine snapshot's names its own.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from snapvol import lifecycle
from snapvol.adapters.store import COMPLETE, Snapshot, Store, as_utc
from snapvol.errors import IntegrityError, UsageError
from snapvol.kube import cold, node, scale
from snapvol.kube.claims import ClaimTarget, Workload
from snapvol.kube.client import Kube
from snapvol.options import DEFAULT_LEVEL, SnapshotOptions
from snapvol.output import Reporter
from snapvol.pg.cluster import ClusterState
from snapvol.pipeline.members import Member
from snapvol.volume import archiving

SOURCE = "kubernetes"  # meta["source"]
META = "kubernetes"  # meta[META]: where it was taken


@dataclass(frozen=True)
class WorkloadSource:
    """A workload's claim as ``lifecycle.begin`` records a source (``lifecycle.Source``)."""

    id: str  # the claim's key: its operation lock, and what `rm` locks
    name: str  # k8s:<namespace>/<kind>/<name>
    image: str
    image_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def source_name(namespace: str, kind: str, name: str) -> str:
    return f"k8s:{namespace}/{kind}/{name}"


def claim_key(server: str, namespace: str, claim: str) -> str:
    """The one key of a claim, whichever workload names it: its operation lock's."""
    return f"k8s:{server}/{namespace}/{claim}"


def source_of(kube: Kube, target: ClaimTarget) -> WorkloadSource:
    workload = target.workload
    return WorkloadSource(
        id=claim_key(kube.server, workload.namespace, target.claim),
        name=source_name(workload.namespace, workload.kind, workload.name),
        image=target.image,
    )


def where(kube: Kube, target: ClaimTarget) -> dict[str, Any]:
    """What the record keeps of the source (``meta["kubernetes"]``): no credentials."""
    workload = target.workload
    return {
        "context": kube.context,
        "server": kube.server,
        "namespace": workload.namespace,
        "workload_kind": workload.kind,
        "workload": workload.name,
        "claim": target.claim,
        "ordinal": target.ordinal,
        "pv": target.pv,
        "node": target.node,
        "container": target.container,
        "mount_path": target.mount_path,
        "image": target.image,
    }


def left_safety(store: Store, workload: Workload, mark: scale.Mark) -> Snapshot | None:
    """The safety snapshot an interrupted restore of ``workload`` (its ``mark``) took, if it
    got that far: what the claim held before it was touched."""
    try:
        since = datetime.fromisoformat(mark.at.replace("Z", "+00:00")) - timedelta(minutes=1)
    except ValueError:
        return None
    source = source_name(workload.namespace, workload.kind, workload.name)
    for snap in store.snapshots(container=source, status=COMPLETE):
        meta = snap.meta
        if (
            meta.get("safety_for")
            and not meta.get("took_over")
            and as_utc(snap.created_at) >= since
        ):
            return snap
    return None


def recorded_where(snap: Snapshot) -> dict[str, Any] | None:
    """Where a Kubernetes snapshot was taken (its ``where``); None for any other."""
    meta = snap.meta
    found = meta.get(META)
    return found if meta.get("source") == SOURCE and isinstance(found, dict) else None


def _begin(
    store: Store,
    backup_dir: Path,
    kube: Kube,
    target: ClaimTarget,
    name: str | None,
    level: int,
    **meta: object,
) -> Snapshot:
    return lifecycle.begin(
        store,
        backup_dir,
        source_of(kube, target),
        kind="volume",
        name=name,
        volume=target.claim,
        suffix=archiving.SUFFIX,
        meta={"source": SOURCE, META: where(kube, target), "level": level, **meta},
    )


def _complete(
    store: Store, snap: Snapshot, copy: cold.ColdCopy, downtime: float | None, started: float
) -> Snapshot:
    """Record ``copy`` complete (``archiving.record_complete``: refused, so failed, when a
    restore would refuse it)."""
    state = ClusterState(major_version=copy.pg_version) if copy.pg_version else None
    if copy.pg_version:  # found in the claim: the record says so, as an engine's does
        meta = {**snap.meta, "is_postgres": True, "pg_subdir": copy.pg_subdir}
        snap = Snapshot.model_validate({**snap.model_dump(), "meta_json": json.dumps(meta)})
    done = archiving.Archived(copy.result, copy.members, state, copy.sockets)
    return archiving.record_complete(store, snap, done, downtime, started)


def snapshot(
    store: Store,
    backup_dir: Path,
    kube: Kube,
    target: ClaimTarget,
    options: SnapshotOptions,
    reporter: Reporter,
    *,
    timeout: float = 300,
    directory: Path | None = None,
) -> Snapshot:
    """A cold snapshot of ``target``'s claim, recorded: in progress before any byte is written,
    complete once archived and checked, failed (its archive removed) however else it ends.
    ``directory``: the claim's data on this machine (``node.host_directory``), read here."""
    started = time.monotonic()
    reader = node.reader(directory)
    with lifecycle.recorded(
        store,
        _begin(store, backup_dir, kube, target, options.name, options.level, reader=reader),
    ) as snap:
        reporter.step(
            f"scaling {target.workload.describe()} down to read claim {target.claim}"
            + (f" in {directory} here" if directory is not None else "")
        )
        with reporter.transfer("snapshot", None) as advance:
            down = time.monotonic()
            copy = cold.snapshot_claim(
                kube,
                target,
                Path(snap.path),
                level=options.level,
                timeout=timeout,
                progress=advance,
                warn=reporter.warn,
                directory=directory,
            )
            downtime = time.monotonic() - down
        _warn_sockets(copy, reporter)
        return _complete(store, snap, copy, downtime, started)


def _warn_sockets(copy: cold.ColdCopy, reporter: Reporter) -> None:
    if copy.sockets:
        reporter.warn(
            f"skipped {len(copy.sockets)} Unix socket(s), which no archive holds "
            f"(e.g. {copy.sockets[0]!r}); noted in the snapshot's record"
        )


@dataclass
class KubeRestoreResult:
    snapshot: Snapshot
    safety: Snapshot
    duration_s: float


def check(snap: Snapshot, store: Store, reporter: Reporter) -> list[Member]:
    """What a restore checks before anything is touched: a volume snapshot, complete, its
    archive's SHA-256, its recorded members. Returns them."""
    if snap.kind != "volume":
        raise UsageError(f"snapshot {snap.id} is a {snap.kind} snapshot, not a volume one")
    lifecycle.check_archive(snap, reporter)
    members = store.members(snap.id)
    refusal = lifecycle.restore_refusal(
        members, holds_postgres=bool(snap.meta.get("is_postgres")), pg_version=snap.pg_version
    )
    if refusal is not None:
        raise IntegrityError(
            f"snapshot {snap.id} cannot be restored: {refusal}; nothing was changed"
        )
    return members


def restore(
    store: Store,
    backup_dir: Path,
    kube: Kube,
    target: ClaimTarget,
    snap: Snapshot,
    members: list[Member],
    reporter: Reporter,
    *,
    timeout: float = 300,
    adopt: scale.Mark | None = None,
    directory: Path | None = None,
) -> KubeRestoreResult:
    """Put ``snap`` (checked: ``check``) back into ``target``'s claim. The safety copy of what
    the claim held is recorded as a snapshot of its own, complete before the claim is touched:
    the way back, and what a failed restore was rolled back to. ``directory``: the claim's
    data on this machine (``node.host_directory``), written (and the safety copy read) here."""
    started = time.monotonic()
    base = f"{target.workload.name}-{target.claim}-safety-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    name, n = base, 1
    while store.name_exists(name):  # two restores within a second
        n += 1
        name = f"{base}-{n}"
    # A restore that takes over an interrupted one's mark copies a claim that may be
    # half-written: its safety snapshot says so, and is never offered as the way back.
    taken_over = {"took_over": adopt.operation} if adopt is not None else {}
    safety = _begin(
        store,
        backup_dir,
        kube,
        target,
        name,
        DEFAULT_LEVEL,
        safety_for=snap.id,
        reader=node.reader(directory),
        **taken_over,
    )
    completed: list[Snapshot] = []

    def safety_taken(copy: cold.ColdCopy) -> None:
        _warn_sockets(copy, reporter)
        completed.append(_complete(store, safety, copy, None, started))
        reporter.step(f"restoring {snap.name} into claim {target.claim}")

    reporter.step(f"scaling {target.workload.describe()} down; a safety snapshot first")
    try:
        cold.restore_claim(
            kube,
            target,
            Path(snap.path),
            members,
            Path(safety.path),
            timeout=timeout,
            reporter=reporter,
            warn=reporter.warn,
            pg_version=snap.pg_version,
            on_safety=safety_taken,
            adopt=adopt,
            directory=directory,
        )
    except scale.KeepDown as err:  # the claim may be half-written: the way back, named
        if not completed:
            lifecycle.fail(store, safety, err)
        # A taken-over claim's own safety copy holds it half-written: the way back is the
        # interrupted restore's safety snapshot, if it got that far.
        back = left_safety(store, target.workload, adopt) if adopt is not None else None
        if adopt is None and completed:
            back = completed[0]
        how = (
            ". To put back what it held"
            if back is not None
            else ". Restore a snapshot into it to bring it back"
        )
        down = scale.KeepDown(err.message + how, run=("restore", back.id) if back else ())
        down.exit_code = err.exit_code
        raise down from err
    except BaseException as err:
        if not completed:  # the safety copy was not taken (or not recorded): nothing changed
            lifecycle.fail(store, safety, err)
        raise
    return KubeRestoreResult(snap, completed[0], time.monotonic() - started)
