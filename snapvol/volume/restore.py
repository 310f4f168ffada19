"""In-place restores of a container's named volume from a volume snapshot.

Everything is checked before anything is touched (the archive's SHA-256, every recorded member's
path, the PostgreSQL major version, that no other running container uses the volume); then the
container is stopped, a safety snapshot of the current volume is taken, the volume is emptied and
the archive streamed back in through the same lane a snapshot reads from, each member checked
against the store before it is written. The volume is then read back and every file compared,
content included. Any failure after the volume was touched puts the safety snapshot back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.engine import Engine
from snapvol.adapters.store import Snapshot
from snapvol.errors import (
    IncompatibleError,
    IntegrityError,
    OperationFailed,
    SnapvolError,
    UsageError,
    describe,
    failed,
)
from snapvol.options import DEFAULT_LEVEL
from snapvol.output import Reporter
from snapvol.pg import cluster
from snapvol.pipeline import archive
from snapvol.pipeline.members import Member, MemberCheck, relinked, same_file
from snapvol.volume import archiving, kubeplay
from snapvol.volume.lane import Lane
from snapvol.volume.target import (
    VolumeTarget,
    check_sole_user,
    resolve_volume_target,
    retry_args,
    stopped_container,
)
from snapvol.workspace import Workspace


@dataclass
class VolumeRestorePlan:
    snapshot: Snapshot
    target: VolumeTarget
    members: list[Member]
    current_bytes: int | None
    current_files: int | None
    target_pg_major: str | None
    warnings: list[str] = field(default_factory=list)


def plan_volume_restore(
    ws: Workspace,
    snapshot: Snapshot,
    container_ref: str | None,
    *,
    reader: str = "auto",
    helper_image: str | None = None,
    local_archive: bool = True,
    pod_claim: kubeplay.PodClaim | None = None,
) -> VolumeRestorePlan:
    """Everything checked before anything is touched: archive integrity, safety, versions.

    ``container_ref``: the container to restore into (None: the snapshot's own, and its
    volume); ``reader`` and ``helper_image`` as for ``resolve_volume_target``. Without
    ``local_archive`` (a staged restore streams the snapshot from a repository and checks it
    there, ``snapvol.volume.staged``) every check but the local archive's is made.
    ``pod_claim``: a claim of a pod `podman kube play` runs (``kubeplay.find``), instead of
    ``container_ref``'s volume."""
    if snapshot.kind != "volume":
        raise UsageError(f"snapshot {snapshot.id} is a {snapshot.kind} snapshot, not a volume one")
    engine = ws.engine
    if pod_claim is not None:
        target = kubeplay.target(engine, pod_claim, reader, helper_image)
    else:
        target = resolve_volume_target(
            engine,
            container_ref or snapshot.container,
            snapshot.volume if container_ref is None else None,
            reader,
            helper_image,
        )
    check_sole_user(engine, target, restore=True)
    if local_archive:
        lifecycle.check_archive(snapshot, ws.reporter)
    else:
        lifecycle.check_restorable(snapshot)
    members = ws.store.members(snapshot.id)
    refusal = lifecycle.restore_refusal(
        members,
        holds_postgres=bool(snapshot.meta.get("is_postgres")),
        pg_version=snapshot.pg_version,
    )
    if refusal is not None:
        raise IntegrityError(
            f"snapshot {snapshot.id} cannot be restored: {refusal}; nothing was changed"
        )
    warning = target.lane.refuse_unwritable(members)
    if warning is not None:
        ws.reporter.warn(warning)
    target_major = (
        cluster.target_major(engine, target.container, target.server, target.volume)
        if target.server is not None and target.is_postgres
        else None
    )
    if snapshot.pg_version and target.is_postgres:
        if target_major is None:
            raise IncompatibleError(
                f"cannot tell which PostgreSQL major version {target.container.name} runs"
            )
        if target_major != cluster.major_of(snapshot.pg_version):
            raise IncompatibleError(
                f"snapshot {snapshot.id} holds PostgreSQL {snapshot.pg_version} data but "
                f"{target.container.name} runs PostgreSQL {target_major}; "
                "use a logical snapshot to move between versions"
            )
    elif snapshot.pg_version and target.runs_postgres:
        raise IncompatibleError(
            f"snapshot {snapshot.id} holds PostgreSQL data but volume {target.volume} does not "
            f"hold {target.container.name}'s data directory"
        )
    elif snapshot.pg_version:
        raise IncompatibleError(
            f"snapshot {snapshot.id} holds PostgreSQL data but {target.container.name} "
            "does not run PostgreSQL"
        )
    current_bytes, current_files = target.lane.usage()
    plan = VolumeRestorePlan(snapshot, target, members, current_bytes, current_files, target_major)
    if target.volume != snapshot.volume:
        plan.warnings.append(
            f"restoring into volume {target.volume}, not the snapshot's source {snapshot.volume}"
        )
    taken_of = snapshot.container_id or ""
    if taken_of and target.container.id != taken_of and target.container.name == snapshot.container:
        plan.warnings.append(
            f"container {target.container.name} is {target.container.id[:12]}, not the one the "
            f"snapshot was taken of ({taken_of[:12]}): it was created again, or this is another "
            "engine's (DOCKER_HOST)"
        )
    return plan


class HeaderCheck:
    """Checks each member against the store before any of it is written: nothing unrecorded,
    nothing twice, nothing outside the volume. Contents are checked by the read-back."""

    def __init__(self, expected: dict[str, Member]) -> None:
        self.expected = expected
        self.seen: set[str] = set()
        self.safe = MemberCheck()

    def __call__(self, member: Member) -> None:
        reason = self.safe(member)
        if reason is not None:
            raise IntegrityError(
                f"archive member {member.path!r} would land outside the volume ({reason})"
            )
        want = self.expected.get(member.path)
        if want is None or member.path in self.seen or not same_file(member, want, content=False):
            raise IntegrityError(f"archive member {member.path!r} does not match the store")
        self.seen.add(member.path)

    def finish(self, archive_name: str) -> None:
        missing = set(self.expected) - self.seen
        if missing:
            raise IntegrityError(
                f"archive {archive_name} lacks {len(missing)} recorded files "
                f"(e.g. {sorted(missing)[0]!r})"
            )


def put_back_safety(
    engine: Engine,
    container_id: str,
    volume_name: str,
    image: str,
    safety: Snapshot,
    members: list[Member],
) -> None:
    """Put safety snapshot ``safety`` (complete, with its recorded ``members``) back into
    ``volume_name`` of the (stopped) container, and check what landed: the rescue of a restore
    snapvol did not live to finish. ``image``: the helper image that restore used."""
    target = resolve_volume_target(engine, container_id, volume_name, helper_image=image)
    _write_back(target, safety, members, Reporter())


def _write_back(
    target: VolumeTarget, snapshot: Snapshot, members: list[Member], reporter: Reporter
) -> None:
    """Replace the volume's contents with ``snapshot`` (already verified): empty the volume,
    stream the archive into it, then read it back and compare every file."""
    path = Path(snapshot.path)
    write_checked(
        target.lane,
        lambda advance: archive.decompressed_chunks(path, advance),
        members,
        snapshot.raw_bytes,
        path.name,
        reporter,
    )


def write_checked(
    lane: Lane,
    chunks: Callable[[Callable[[int], None]], Iterable[bytes]],
    members: list[Member],
    raw_bytes: int | None,
    source: str,
    reporter: Reporter,
) -> None:
    """Replace what ``lane`` writes with the tar stream ``chunks(advance)`` (named ``source``),
    each member checked against ``members`` before it is written, then read it all back and
    compare every file."""
    expected = {m.path: m for m in members}
    check = HeaderCheck(expected)
    with reporter.transfer("restoring", raw_bytes) as advance:
        # The stream is read on its own thread (decompression, or restic and the repository
        # checks); members are checked in order.
        tar = archive.prefetch(chunks(advance))
        read_back = lane.replace(tar, check)
    check.finish(source)
    reporter.step("reading the volume back to check every file")
    with reporter.transfer("checking", raw_bytes) as advance:
        landed = relinked({m.path: m for m in lane.landed(advance, read_back)}, expected)
    for key, want in expected.items():
        got = landed.get(key)
        if key == ".":
            continue  # the volume's root keeps its own owner and mode
        if got is None or not same_file(lane.carried(got), lane.carried(want)):
            raise IntegrityError(f"after extraction {key!r} does not match the snapshot")
    extra = set(landed) - set(expected)
    if extra:
        raise IntegrityError(
            f"after extraction the volume holds unexpected files (e.g. {sorted(extra)[0]!r})"
        )


@dataclass
class VolumeRestoreResult:
    snapshot: Snapshot
    safety: Snapshot | None
    downtime_s: float
    duration_s: float


def take_safety_snapshot(
    ws: Workspace,
    target: VolumeTarget,
    *,
    level: int,
    restoring: Snapshot,
    still_stopped: Callable[[], None],
) -> Snapshot:
    """Archive the current volume (the container is already stopped) as a complete snapshot."""
    ws.reporter.step("taking a safety snapshot of the current volume")
    started = time.monotonic()
    name = f"{target.container.name}-safety-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        with archiving.recorded(ws, target, name, level, safety_for=restoring.id) as safety:
            done = archiving.archive_volume(
                ws.engine,
                target,
                Path(safety.path),
                level=level,
                reporter=ws.reporter,
                label="safety snapshot",
                still_stopped=still_stopped,
            )
            return archiving.record_complete(ws.store, safety, done, None, started)
    except SnapvolError as err:
        raise type(err)(
            f"the safety snapshot failed, so the volume was not changed: {err.message}",
            retry_with=err.retry_with,
        ) from err


def restore_volume(
    ws: Workspace,
    plan: VolumeRestorePlan,
    *,
    safety_snapshot: bool = True,
    level: int = DEFAULT_LEVEL,
) -> VolumeRestoreResult:
    """Stop, take a safety snapshot, replace the volume's contents, verify, start.

    If anything fails once the volume was touched, the safety snapshot is put back before the
    container starts again, and the error says so. Without a safety snapshot a failed restore
    leaves the container stopped rather than start it on half-written data.
    """
    started = time.monotonic()
    target = plan.target
    reporter = ws.reporter
    check_sole_user(ws.engine, target, restore=True)  # again: time has passed since the plan
    safety: Snapshot | None = None
    snap = plan.snapshot
    with stopped_container(ws.engine, target, reporter, ws.watchdog, ws.stop_timeout) as down:
        if safety_snapshot:
            safety = take_safety_snapshot(
                ws, target, level=level, restoring=snap, still_stopped=down.check_still_stopped
            )
        down.rewriting(
            volume=target.volume, image=target.image, safety=safety.id if safety else None
        )
        try:
            reporter.step(f"restoring {snap.name} into volume {target.volume}")
            _write_back(target, snap, plan.members, reporter)
        except BaseException as err:
            why = describe(err)
            taken = down.started_by_someone_else()
            if taken is not None:  # rolling back would rewrite the volume under them again
                raise failed(
                    f"restore failed ({why}) and {_left_to_them(taken, snap, safety)}",
                    err,
                    run=("restore", snap.id, *retry_args(target)),
                ) from err
            if safety is None:
                down.keep_stopped = True
                raise failed(
                    f"restore failed after the volume was emptied ({why}) and no safety snapshot "
                    "was taken; the container was left stopped",
                    err,
                ) from err
            reporter.warn(f"restore failed ({why}); putting back safety snapshot {safety.id}")
            try:
                _write_back(target, safety, ws.store.members(safety.id), reporter)
            except BaseException as err2:
                down.keep_stopped = True
                raise failed(  # 130 when interrupted, as the Kubernetes path's KeepDown
                    f"restore failed ({why}) and putting back safety snapshot {safety.id} also "
                    f"failed ({describe(err2)}); the container was left stopped. To put it back",
                    err2,
                    run=("restore", safety.id, *retry_args(target)),
                ) from err2
            down.intact()
            raise failed(
                f"restore failed ({why}); the volume was rolled back to safety snapshot "
                f"{safety.id}",
                err,
            ) from err
        taken = down.started_by_someone_else()
        if taken is not None:
            raise OperationFailed(
                _left_to_them(taken, snap, safety),
                run=("restore", snap.id, *retry_args(target)),
            )
        down.intact()
    return VolumeRestoreResult(snap, safety, down.seconds, time.monotonic() - started)


def _left_to_them(taken: str, snap: Snapshot, safety: Snapshot | None) -> str:
    """What to say when someone else started the container while its volume was rewritten."""
    before = f" (safety snapshot {safety.id} holds the data from before)" if safety else ""
    return (
        f"{taken}, while its volume was being rewritten: it may have run on half-written data "
        f"and was left as it is{before}. Once it is stopped, to restore again"
    )


def write_snapshot(
    target: VolumeTarget, snapshot: Snapshot, members: list[Member], reporter: Reporter
) -> None:
    """Write volume snapshot ``snapshot`` (checked: ``lifecycle.check_archive`` and
    ``lifecycle.restore_refusal``) into ``target``'s volume, whose container is not running,
    through the restore's own path: each member checked before it is written, every file read
    back and compared. For volumes that are snapvol's own (a restore drill's)."""
    warning = target.lane.refuse_unwritable(members)
    if warning is not None:
        reporter.warn(warning)
    _write_back(target, snapshot, members, reporter)
