"""Cold volume snapshots and in-place restores of a container's named volume.

Data path: a tar of the volume, from one of two lanes (``VolumeTarget`` picks): read straight from
the volume's directory when this host can reach it (``snapvol.dirtar``), or else Docker's archive
endpoint on a helper container that mounts the volume and is never started (about 8x faster than a
container's stdout). The tar flows through zstd and SHA-256 to disk in one pass while every file
is recorded and hashed. A restore streams the archive back in through the same lane, checking
each member against the store before it is written, then reads the volume back and compares
every file, content included.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from snapvol import archive, dirtar, hostpath, lifecycle, postgres
from snapvol.engine import ContainerInfo, Engine
from snapvol.errors import (
    IncompatibleError,
    IntegrityError,
    OperationFailed,
    SnapvolError,
    UsageError,
    VolumeInUseError,
    describe,
)
from snapvol.guard import Downtime, stopped
from snapvol.output import Reporter
from snapvol.store import Snapshot, Store
from snapvol.tarscan import Member, ScannedStream, TarFormatError, same_file, unsafe_reason
from snapvol.watchdog import WatchdogConfig

HELPER_MOUNT = "/snapvol/data"
# A tar stream of a volume that records its members as it passes (both lanes' sources).
Recording = dirtar.DirTar | ScannedStream
SUFFIX = ".tar.zst"


@dataclass(frozen=True)
class VolumeTarget:
    container: ContainerInfo
    volume: str
    mount: str  # where the container mounts the volume
    is_postgres: bool
    pg_subdir: str  # the data directory relative to the volume's root ("." when it is the root)
    host_dir: Path | None = None  # the volume's directory, when the host lane can read it

    @property
    def reader(self) -> str:
        return "host" if self.host_dir is not None else "endpoint"

    @contextlib.contextmanager
    def source(self, engine: Engine, image: str) -> Iterator[Recording]:
        """A tar stream of the volume that records (and hashes) every member as it passes: read
        straight from the host's directory, or through a helper container."""
        if self.host_dir is not None:
            yield dirtar.DirTar(self.host_dir)
            return
        with engine.helper(image, self.volume, HELPER_MOUNT, read_only=True) as helper_id:
            yield ScannedStream(engine.archive_out(helper_id, HELPER_MOUNT))

    def landed(
        self,
        engine: Engine,
        image: str,
        advance: Callable[[int], None],
        known: Mapping[str, str] | None = None,
    ) -> list[Member]:
        """Every member in the volume now, files hashed: what a snapshot of it would record.
        ``known``: digests ``replace`` already read back from disk."""
        if self.host_dir is not None:
            found = dirtar.scan(self.host_dir, known=known)
            advance(sum(m.size for m in found.values()))
            return list(found.values())
        with self.source(engine, image) as source:
            for chunk in archive.prefetch(source):
                advance(len(chunk))
        return source.members

    def usage(self, engine: Engine, image: str) -> tuple[int | None, int | None]:
        """Bytes on disk and entries in the volume now (None when they cannot be measured)."""
        if self.host_dir is not None:
            return hostpath.usage(self.host_dir)
        script = f"du -s -B1 {HELPER_MOUNT} | cut -f1; find {HELPER_MOUNT} -mindepth 1 | wc -l"
        try:
            code, out = engine.run_helper(
                image,
                self.volume,
                HELPER_MOUNT,
                ["sh", "-c", script],
                read_only=True,
                timeout=120,
                user="0:0",
            )
            lines = out.split()
            if code == 0 and len(lines) >= 2:
                return int(lines[0]), int(lines[1])
        except (SnapvolError, ValueError):
            pass
        return None, None

    def replace(
        self,
        engine: Engine,
        image: str,
        tar: Iterable[bytes],
        check: Callable[[Member], None],
    ) -> dict[str, str]:
        """Empty the volume and extract ``tar`` into it; ``check`` sees each member before it is
        written. On the host when its directory is writable here, else through a helper.

        Returns the SHA-256 of files already read back from disk (the host lane reads each one
        back as soon as it is written, beside the extraction), for ``landed``.
        """
        host_dir = self.host_dir if self.host_dir and os.access(self.host_dir, os.W_OK) else None
        if host_dir is not None:
            hostpath.empty_dir(host_dir)
            return dirtar.extract(host_dir, tar, check)
        code, out = engine.run_helper(
            image,
            self.volume,
            HELPER_MOUNT,
            ["find", HELPER_MOUNT, "-mindepth", "1", "-delete"],
            read_only=False,
            user="0:0",
        )
        if code != 0:
            raise OperationFailed(f"emptying volume {self.volume} failed: {out.strip()[:200]}")
        checked = ScannedStream(tar, check=check, hash_files=False)
        with engine.helper(image, self.volume, HELPER_MOUNT, read_only=False) as helper_id:
            try:
                engine.archive_in(helper_id, HELPER_MOUNT, checked)
            except TarFormatError as err:
                raise IntegrityError(f"the archive's tar stream is malformed: {err}") from err
        return {}


def resolve_target(
    engine: Engine, container_ref: str, volume_name: str | None, reader: str = "auto"
) -> VolumeTarget:
    """The container and the named volume to work on, with a clear error when it is ambiguous."""
    info = engine.container(container_ref)
    is_pg = postgres.is_postgres(info)
    volumes = info.named_volumes
    if volume_name is not None:
        matches = [m for m in info.volumes if m.name == volume_name]
        if not matches:
            engine.volume(volume_name)  # NotFoundError if it does not exist at all
            raise UsageError(f"container {info.name} does not mount volume {volume_name!r}")
        mount = matches[0]
    else:
        if not volumes:
            raise UsageError(f"container {info.name} mounts no named volume")
        pgdata = postgres.data_dir(info) if is_pg else None
        at_data = [
            m
            for m in volumes
            if pgdata is not None
            and (pgdata == m.destination or pgdata.startswith(m.destination.rstrip("/") + "/"))
        ]
        if at_data:
            mount = max(at_data, key=lambda m: len(m.destination))
        elif len(volumes) == 1:
            mount = volumes[0]
        else:
            names = ", ".join(f"{m.name} (at {m.destination})" for m in volumes)
            raise UsageError(
                f"container {info.name} mounts several volumes; "
                f"pick one with --volume-name: {names}"
            )
    subdir = "."
    if is_pg:
        rel = posixpath.relpath(postgres.data_dir(info), mount.destination)
        subdir = rel if not rel.startswith("..") else "."
    assert mount.name is not None
    host_dir = hostpath.volume_dir(engine.volume(mount.name), reader)
    return VolumeTarget(info, mount.name, mount.destination, is_pg, subdir, host_dir)


def _stopped(
    engine: Engine, target: VolumeTarget, reporter: Reporter, watchdog: WatchdogConfig | None
) -> AbstractContextManager[Downtime]:
    """The target's container stopped for the body, and restarted (and guarded) after it."""
    pid_file = None
    if target.is_postgres and target.host_dir is not None:
        pid_file = target.host_dir / target.pg_subdir / "postmaster.pid"
    return stopped(
        engine,
        target.container,
        is_postgres=target.is_postgres,
        reporter=reporter,
        watchdog=watchdog,
        pid_file=pid_file,
    )


def check_sole_user(engine: Engine, target: VolumeTarget, *, restore: bool) -> None:
    """Refuse when another running container uses the volume: a snapshot is cold only when no
    one else can write to it, and a restore must not change files under anyone's feet."""
    others = [
        user
        for user in engine.volume_users(target.volume)
        if user.id != target.container.id and (restore or user.read_write)
    ]
    if others:
        names = ", ".join(sorted(user.name for user in others))
        why = (
            "a restore must not change files under a running service"
            if restore
            else "a cold snapshot needs every writer stopped"
        )
        raise VolumeInUseError(
            f"volume {target.volume} is also mounted by running container(s) {names}; "
            f"stop them first ({why})"
        )


def helper_image(target: VolumeTarget, override: str | None) -> str:
    """The image helper containers run: the target's own image, so nothing is ever pulled."""
    return override or target.container.image_id


@dataclass
class Archived:
    result: archive.ArchiveResult
    members: list[Member]
    cluster: postgres.ClusterState | None


def archive_volume(
    engine: Engine,
    target: VolumeTarget,
    dest: Path,
    *,
    level: int,
    image: str,
    reporter: Reporter,
    label: str = "snapshot",
    release: Callable[[], None] | None = None,
) -> Archived:
    """Archive the (stopped) container's volume to ``dest``; record every member on the way.

    ``release`` is called once the whole volume has been read (and the cluster state with it),
    while the archive is still being finished: the container may start again then.
    """
    cluster: list[postgres.ClusterState] = []
    errors: list[BaseException] = []

    def read_cluster() -> None:
        try:
            cluster.append(
                postgres.read_cluster_state(engine, image, target.volume, target.pg_subdir)
            )
        except BaseException as err:  # reported after the archive is written
            errors.append(err)

    side = threading.Thread(target=read_cluster, daemon=True) if target.is_postgres else None
    if side is not None:
        side.start()  # pg_controldata runs in parallel with the stream: no extra downtime

    def volume_read() -> None:
        if side is not None:
            side.join(timeout=60)
        if release is not None:
            release()

    with target.source(engine, image) as source, reporter.transfer(label, None) as advance:
        try:
            result = archive.write_compressed(
                source, dest, level=level, progress=advance, on_source_end=volume_read
            )
        except TarFormatError as err:
            raise OperationFailed(f"the volume's tar stream was malformed: {err}") from err
    if side is not None:
        side.join(timeout=60)
        if errors:
            reporter.warn(f"could not read the cluster state: {errors[0]}")
    return Archived(result, source.members, cluster[0] if cluster else None)


def _complete(
    store: Store,
    snap: Snapshot,
    done: Archived,
    downtime: float | None,
    started: float,
) -> Snapshot:
    meta = snap.meta
    if done.cluster is not None:
        meta["postgres"] = done.cluster.as_meta()
    return store.complete(
        snap.id,
        done.members,
        sha256=done.result.sha256,
        size_bytes=done.result.size_bytes,
        raw_bytes=done.result.raw_bytes,
        file_count=len(done.members),
        duration_s=round(time.monotonic() - started, 3),
        downtime_s=None if downtime is None else round(downtime, 3),
        pg_version=done.cluster.major_version if done.cluster else None,
        meta_json=json.dumps(meta),
    )


def _begin(
    store: Store,
    backup_dir: Path,
    target: VolumeTarget,
    name: str | None,
    level: int,
    **meta: object,
) -> Snapshot:
    """Record a volume snapshot of ``target`` as in progress."""
    return lifecycle.begin(
        store,
        backup_dir,
        target.container,
        kind="volume",
        name=name,
        volume=target.volume,
        suffix=SUFFIX,
        meta={
            "mount": target.mount,
            "pg_subdir": target.pg_subdir,
            "level": level,
            "reader": target.reader,
            **meta,
        },
    )


def snapshot_volume(
    engine: Engine,
    store: Store,
    backup_dir: Path,
    target: VolumeTarget,
    *,
    name: str | None = None,
    level: int = 3,
    helper_image_override: str | None = None,
    reporter: Reporter,
    watchdog: WatchdogConfig | None = None,
) -> Snapshot:
    """Take a cold snapshot: stop, archive, start again, record. Returns the completed snapshot."""
    if not 1 <= level <= 19:
        raise UsageError("--level must be between 1 and 19")
    check_sole_user(engine, target, restore=False)
    started = time.monotonic()
    snap = _begin(store, backup_dir, target, name, level)
    try:
        image = helper_image(target, helper_image_override)
        with _stopped(engine, target, reporter, watchdog) as down:
            done = archive_volume(
                engine,
                target,
                Path(snap.path),
                level=level,
                image=image,
                reporter=reporter,
                release=down.release,
            )
        return _complete(store, snap, done, down.seconds if down.was_running else 0.0, started)
    except BaseException as err:
        lifecycle.fail(store, snap, err)
        raise


# --- restore -------------------------------------------------------------------------------------


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
    target = resolve_target(
        engine,
        container_ref or snapshot.container,
        snapshot.volume if container_ref is None else None,
        reader,
    )
    check_sole_user(engine, target, restore=True)
    lifecycle.check_archive(snapshot, reporter)
    members = store.members(snapshot.id)
    if not members:
        raise IntegrityError(
            f"snapshot {snapshot.id} has no recorded files; refusing to restore it"
        )
    for member in members:
        reason = unsafe_reason(member)
        if reason is not None:
            raise IntegrityError(
                f"archive member {member.path!r} would land outside the volume ({reason}); "
                "nothing was changed"
            )
    target_major = postgres.major_of_image(target.container) if target.is_postgres else None
    if snapshot.pg_version and target.is_postgres:
        if target_major is None:
            raise IncompatibleError(
                f"cannot tell which PostgreSQL major version {target.container.name} runs"
            )
        if target_major != snapshot.pg_version.split(".")[0]:
            raise IncompatibleError(
                f"snapshot {snapshot.id} holds PostgreSQL {snapshot.pg_version} data but "
                f"{target.container.name} runs PostgreSQL {target_major}; "
                "use a logical snapshot to move between versions"
            )
    elif snapshot.pg_version and not target.is_postgres:
        raise IncompatibleError(
            f"snapshot {snapshot.id} holds PostgreSQL data but {target.container.name} "
            "does not run PostgreSQL"
        )
    image = helper_image(target, helper_image_override)
    current_bytes, current_files = target.usage(engine, image)
    plan = VolumeRestorePlan(snapshot, target, members, current_bytes, current_files, target_major)
    if target.volume != snapshot.volume:
        plan.warnings.append(
            f"restoring into volume {target.volume}, not the snapshot's source {snapshot.volume}"
        )
    return plan


class _HeaderCheck:
    """Checks each member against the store before any of it is written: nothing unrecorded,
    nothing twice, nothing outside the volume. Contents are checked by the read-back."""

    def __init__(self, expected: dict[str, Member]) -> None:
        self.expected = expected
        self.seen: set[str] = set()

    def __call__(self, member: Member) -> None:
        reason = unsafe_reason(member)
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
        if got is None or not same_file(got, want):
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
) -> Snapshot:
    """Archive the current volume (the container is already stopped) as a complete snapshot."""
    reporter.step("taking a safety snapshot of the current volume")
    started = time.monotonic()
    name = f"{target.container.name}-safety-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    safety = _begin(store, backup_dir, target, name, level, safety_for=restoring.id)
    try:
        done = archive_volume(
            engine,
            target,
            Path(safety.path),
            level=level,
            image=image,
            reporter=reporter,
            label="safety snapshot",
        )
        return _complete(store, safety, done, None, started)
    except BaseException as err:
        lifecycle.fail(store, safety, err)
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
    check_sole_user(engine, target, restore=True)  # again: time has passed since the plan
    image = helper_image(target, helper_image_override)
    safety: Snapshot | None = None
    snap = plan.snapshot
    with _stopped(engine, target, reporter, watchdog) as down:
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
            )
        down.phase("dirty", safety=safety.id if safety else None, volume=target.volume, image=image)
        try:
            reporter.step(f"restoring {snap.name} into volume {target.volume}")
            put_back(engine, image, target, snap, plan.members, reporter)
        except BaseException as err:
            why = describe(err)
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
        down.phase("stopped")
    return VolumeRestoreResult(snap, safety, down.seconds, time.monotonic() - started)


__all__ = [
    "VolumeRestorePlan",
    "VolumeRestoreResult",
    "VolumeTarget",
    "plan_volume_restore",
    "put_back",
    "resolve_target",
    "restore_volume",
    "snapshot_volume",
]
