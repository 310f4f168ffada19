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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.engine import Engine
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import (
    IncompatibleError,
    IntegrityError,
    OperationFailed,
    SnapvolError,
    UsageError,
    describe,
)
from snapvol.output import Reporter
from snapvol.pg import cluster
from snapvol.pipeline import archive
from snapvol.pipeline.members import CAPABILITY, Member, MemberCheck, same_file
from snapvol.volume import snapshot as volume
from snapvol.volume.snapshot import VolumeTarget
from snapvol.volume.watchdog import WatchdogConfig


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
    engine: Engine,
    store: Store,
    snapshot: Snapshot,
    container_ref: str | None,
    *,
    helper_image_override: str | None,
    reporter: Reporter,
    reader: str = "auto",
) -> VolumeRestorePlan:
    """Everything checked before anything is touched: archive integrity, safety, versions."""
    if snapshot.kind != "volume":
        raise UsageError(f"snapshot {snapshot.id} is a {snapshot.kind} snapshot, not a volume one")
    target = volume.resolve_target(
        engine,
        container_ref or snapshot.container,
        snapshot.volume if container_ref is None else None,
        reader,
    )
    volume.check_sole_user(engine, target, restore=True)
    lifecycle.check_archive(snapshot, reporter)
    members = store.members(snapshot.id)
    refusal = lifecycle.restore_refusal(
        members,
        holds_postgres=bool(snapshot.meta.get("is_postgres")),
        pg_version=snapshot.pg_version,
    )
    if refusal is not None:
        raise IntegrityError(
            f"snapshot {snapshot.id} cannot be restored: {refusal}; nothing was changed"
        )
    if target.host_dir is None:
        _check_endpoint_can_carry(members, reporter)
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
    image = volume.helper_image(target, helper_image_override)
    current_bytes, current_files = target.usage(engine, image)
    plan = VolumeRestorePlan(snapshot, target, members, current_bytes, current_files, target_major)
    if target.volume != snapshot.volume:
        plan.warnings.append(
            f"restoring into volume {target.volume}, not the snapshot's source {snapshot.volume}"
        )
    return plan


def _check_endpoint_can_carry(members: list[Member], reporter: Reporter) -> None:
    """Docker's archive endpoint drops an extended attribute whose value is empty (in pax an
    empty value means "unset") and reads back only ``security.capability``: refuse the first,
    say so for the rest."""
    empty = [m for m in members if any(not value for _, value in m.xattrs)]
    if empty:
        raise UsageError(
            f"{empty[0].path!r} has an extended attribute with an empty value, which Docker's "
            "archive endpoint would drop; restore with --reader host (as root); nothing was "
            "changed"
        )
    unchecked = sum(1 for m in members if any(k != CAPABILITY for k, _ in m.xattrs))
    if unchecked:
        reporter.warn(
            f"{unchecked} file(s) have extended attributes (ACLs, user.*) that the archive "
            "endpoint restores but cannot read back to check; --reader host checks them"
        )


class _HeaderCheck:
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


def put_back(
    engine: Engine,
    image: str,
    target: VolumeTarget,
    snapshot: Snapshot,
    members: list[Member],
    reporter: Reporter,
) -> None:
    """Replace the volume's contents with ``snapshot`` (already verified) and check what landed."""
    _extract(engine, image, target, Path(snapshot.path), members, reporter, snapshot.raw_bytes)


def _extract(
    engine: Engine,
    image: str,
    target: VolumeTarget,
    path: Path,
    members: list[Member],
    reporter: Reporter,
    raw_bytes: int | None,
) -> None:
    """Empty the volume, stream the archive into it, then read it back and compare every file."""
    expected = {m.path: m for m in members}
    check = _HeaderCheck(expected)
    with reporter.transfer("restoring", raw_bytes) as advance:
        # Decompression runs ahead on its own thread; members are checked in order.
        tar = archive.prefetch(archive.decompressed_chunks(path, advance))
        read_back = target.replace(engine, image, tar, check)
    check.finish(path.name)
    reporter.step("reading the volume back to check every file")
    with reporter.transfer("checking", raw_bytes) as advance:
        landed = {m.path: m for m in target.landed(engine, image, advance, read_back)}
    for key, want in expected.items():
        got = landed.get(key)
        if key == ".":
            continue  # the volume's root keeps its own owner and mode
        if got is None or not same_file(target.carried(got), target.carried(want)):
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


def _safety_snapshot(
    engine: Engine,
    store: Store,
    backup_dir: Path,
    target: VolumeTarget,
    *,
    image: str,
    level: int,
    restoring: Snapshot,
    reporter: Reporter,
    still_stopped: Callable[[], None],
) -> Snapshot:
    """Archive the current volume (the container is already stopped) as a complete snapshot."""
    reporter.step("taking a safety snapshot of the current volume")
    started = time.monotonic()
    name = f"{target.container.name}-safety-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    safety = volume.begin(store, backup_dir, target, name, level, safety_for=restoring.id)
    try:
        done = volume.archive_volume(
            engine,
            target,
            Path(safety.path),
            level=level,
            image=image,
            reporter=reporter,
            label="safety snapshot",
            still_stopped=still_stopped,
        )
        return volume.complete(store, safety, done, None, started)
    except BaseException as err:
        lifecycle.fail(store, safety, err)
        if isinstance(err, SnapvolError):
            raise type(err)(
                f"the safety snapshot failed, so the volume was not changed: {err.message}"
            ) from err
        raise


def restore_volume(
    engine: Engine,
    store: Store,
    backup_dir: Path,
    plan: VolumeRestorePlan,
    *,
    safety_snapshot: bool,
    helper_image_override: str | None,
    reporter: Reporter,
    level: int = 3,
    watchdog: WatchdogConfig | None = None,
) -> VolumeRestoreResult:
    """Stop, take a safety snapshot, replace the volume's contents, verify, start.

    If anything fails once the volume was touched, the safety snapshot is put back before the
    container starts again, and the error says so. Without a safety snapshot a failed restore
    leaves the container stopped rather than start it on half-written data.
    """
    started = time.monotonic()
    target = plan.target
    volume.check_sole_user(engine, target, restore=True)  # again: time has passed since the plan
    image = volume.helper_image(target, helper_image_override)
    safety: Snapshot | None = None
    snap = plan.snapshot
    with volume.stopped_container(engine, target, reporter, watchdog) as down:
        if safety_snapshot:
            safety = _safety_snapshot(
                engine,
                store,
                backup_dir,
                target,
                image=image,
                level=level,
                restoring=snap,
                reporter=reporter,
                still_stopped=down.check_still_stopped,
            )
        down.phase("dirty", safety=safety.id if safety else None, volume=target.volume, image=image)
        try:
            reporter.step(f"restoring {snap.name} into volume {target.volume}")
            put_back(engine, image, target, snap, plan.members, reporter)
        except BaseException as err:
            why = describe(err)
            taken = down.started_by_someone_else()
            if taken is not None:  # rolling back would rewrite the volume under them again
                raise OperationFailed(
                    f"restore failed ({why}) and {_left_to_them(taken, snap, safety)}"
                ) from err
            if safety is None:
                down.keep_stopped = True
                raise OperationFailed(
                    f"restore failed after the volume was emptied ({why}) and no safety snapshot "
                    "was taken; the container was left stopped"
                ) from err
            reporter.warn(f"restore failed ({why}); putting back safety snapshot {safety.id}")
            try:
                put_back(engine, image, target, safety, store.members(safety.id), reporter)
            except BaseException as err2:
                down.keep_stopped = True
                raise OperationFailed(
                    f"restore failed ({why}) and putting back safety snapshot {safety.id} also "
                    f"failed ({describe(err2)}); the container was left stopped: run "
                    f"`snapvol restore {safety.id}`"
                ) from err2
            down.phase("stopped")
            raise OperationFailed(
                f"restore failed ({why}); the volume was rolled back to safety snapshot {safety.id}"
            ) from err
        taken = down.started_by_someone_else()
        if taken is not None:
            raise OperationFailed(_left_to_them(taken, snap, safety))
        down.phase("stopped")
    return VolumeRestoreResult(snap, safety, down.seconds, time.monotonic() - started)


def _left_to_them(taken: str, snap: Snapshot, safety: Snapshot | None) -> str:
    """What to say when someone else started the container while its volume was rewritten."""
    before = f" (safety snapshot {safety.id} holds the data from before)" if safety else ""
    return (
        f"{taken}, while its volume was being rewritten: it may have run on half-written data "
        f"and was left as it is; stop it and run `snapvol restore {snap.id}` again{before}"
    )


__all__ = [
    "VolumeRestorePlan",
    "VolumeRestoreResult",
    "plan_volume_restore",
    "put_back",
    "restore_volume",
]
