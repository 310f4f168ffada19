"""Cold volume snapshots of a container's named volume (restores: ``snapvol.volume.restore``).

Data path: a tar of the volume, from one of two lanes (``VolumeTarget`` picks): read straight from
the volume's directory when this host can reach it (``snapvol.volume.hosttar``), or else
Docker's archive endpoint on a helper container that mounts the volume and is never started
(about 8x faster than a container's stdout). The tar flows through zstd and SHA-256 to disk in
one pass while every file is recorded and hashed. A restore streams the archive back in through
the same lane, checking each member against the store before it is written, then reads the
volume back and compares every file, content included.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.adapters.store import Snapshot, Store
from snapvol.background import Background
from snapvol.errors import (
    IntegrityError,
    OperationFailed,
    SnapvolError,
    UsageError,
    VolumeInUseError,
    describe,
)
from snapvol.output import Reporter
from snapvol.pg import cluster
from snapvol.pipeline import archive
from snapvol.pipeline.members import CAPABILITY, Member, normalize
from snapvol.pipeline.tarscan import ScannedStream, TarFormatError
from snapvol.volume import hostpath, hosttar
from snapvol.volume.guard import Downtime, stopped
from snapvol.volume.watchdog import WatchdogConfig

HELPER_MOUNT = "/snapvol/data"
# A tar stream of a volume that records its members as it passes (both lanes' sources).
Recording = hosttar.DirTar | ScannedStream
SUFFIX = ".tar.zst"


@dataclass(frozen=True)
class VolumeTarget:
    container: ContainerInfo
    volume: str
    mount: str  # where the container mounts the volume
    is_postgres: bool  # the volume holds the server's data directory (not just any volume of it)
    pg_subdir: str  # the data directory relative to the volume's root ("." when it is the root)
    host_dir: Path | None = None  # the volume's directory, when the host lane can read it
    server: cluster.Server | None = None  # the PostgreSQL server found in the container

    @property
    def runs_postgres(self) -> bool:
        """Whether the container is a PostgreSQL server (stopped and started as one), whichever
        of its volumes is worked on."""
        return self.server is not None

    @property
    def reader(self) -> str:
        return "host" if self.host_dir is not None else "endpoint"

    @contextlib.contextmanager
    def source(self, engine: Engine, image: str) -> Iterator[Recording]:
        """A tar stream of the volume that records (and hashes) every member as it passes: read
        straight from the host's directory, or through a helper container."""
        if self.host_dir is not None:
            yield hosttar.DirTar(self.host_dir)
            return
        with engine.helper(image, self.volume, HELPER_MOUNT, read_only=True) as helper_id:
            yield ScannedStream(engine.archive_out(helper_id, HELPER_MOUNT))

    def carried(self, member: Member) -> Member:
        """What of ``member`` this lane's read-back can see, to compare like with like.

        The host lane sees everything. Docker's archive endpoint reports only the
        ``security.capability`` attribute and times in whole seconds, and its extraction sets
        times before 1970 and after 2262 (beyond 64-bit nanoseconds) to 1970: those are not
        compared (see the README's lane table).
        """
        if self.host_dir is not None:
            return member
        seconds = member.mtime_ns // 10**9
        return replace(
            member,
            mtime_ns=seconds * 10**9 if 0 < seconds * 10**9 < 2**63 else -1,
            xattrs=tuple(kv for kv in member.xattrs if kv[0] == CAPABILITY),
        )

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
            found = hosttar.scan(self.host_dir, known=known)
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
            return hosttar.extract(host_dir, tar, check)
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
    server = cluster.detect(engine, info)
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
        pgdata = server.data_dir if server is not None else None
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
    # The volume holds PostgreSQL data only when the server's data directory lies inside it: a
    # PostgreSQL container's other volumes (backups, configuration) are plain volumes.
    subdir, holds_data = ".", False
    if server is not None:
        rel = posixpath.relpath(server.data_dir, mount.destination)
        if rel != ".." and not rel.startswith("../"):
            subdir, holds_data = rel, True
    assert mount.name is not None
    vol = engine.volume(mount.name)
    if hostpath.is_tmpfs(vol):
        raise UsageError(
            f"volume {vol.name} is a tmpfs (driver option type=tmpfs): its files exist only while "
            "a container uses it, and stopping the container, as a cold snapshot or a restore "
            "must, erases them; snapvol cannot snapshot or restore it"
        )
    host_dir = hostpath.volume_dir(vol, reader)
    return VolumeTarget(info, mount.name, mount.destination, holds_data, subdir, host_dir, server)


def stopped_container(
    engine: Engine, target: VolumeTarget, reporter: Reporter, watchdog: WatchdogConfig | None
) -> AbstractContextManager[Downtime]:
    """The target's container stopped for the body, and restarted (and guarded) after it."""
    pid_file = None  # readiness read from the volume only when the cluster is on it
    if target.is_postgres and target.host_dir is not None:
        pid_file = target.host_dir / target.pg_subdir / "postmaster.pid"
    return stopped(
        engine,
        target.container,
        is_postgres=target.runs_postgres,
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
    cluster: cluster.ClusterState | None
    sockets: list[str] = field(default_factory=list)  # left out: no tar holds a socket


_CENSUS = (
    f"cd {HELPER_MOUNT} && find . -mindepth 1 ! -type s -print0 | tr -cd '\\000' | wc -c"
    " && find . -mindepth 1 -type s -print0"
)


def endpoint_census(engine: Engine, image: str, volume_name: str) -> tuple[int, list[str]]:
    """How many entries (sockets aside) the volume holds, and its sockets, counted by ``find``
    in a helper: Docker's archive endpoint silently leaves out what it cannot stat (paths
    longer than PATH_MAX) and sockets, so its archive is checked against this count."""
    try:
        code, out = engine.run_helper(
            image,
            volume_name,
            HELPER_MOUNT,
            ["sh", "-c", _CENSUS],
            read_only=True,
            timeout=600,
            user="0:0",
        )
        count, _, rest = out.partition("\n")
        if code != 0:
            raise ValueError(out.strip()[-200:])
        return int(count), [normalize(p) for p in rest.split("\0") if p]
    except (SnapvolError, ValueError) as err:
        raise OperationFailed(
            f"could not count the entries of volume {volume_name} with find in a helper "
            f"container ({err}), so a complete archive cannot be told from a short one; "
            "use --reader host, or --helper-image with an image that has sh and find"
        ) from err


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
    still_stopped: Callable[[], None] | None = None,
) -> Archived:
    """Archive the (stopped) container's volume to ``dest``; record every member on the way.

    Once the whole volume has been read (and the cluster state with it), ``still_stopped`` checks
    that no one started the container meanwhile (it raises if someone did, and the archive is
    refused), then ``release`` lets the container start again while the archive is finished.
    A PostgreSQL volume whose major version and cluster state could not be read is refused too:
    a restore could not check it.
    """
    states: list[cluster.ClusterState] = []
    errors: list[BaseException] = []
    refused: list[BaseException] = []
    read = threading.Event()

    def read_cluster() -> None:
        try:
            states.append(
                cluster.read_cluster_state(engine, image, target.volume, target.pg_subdir)
            )
        except BaseException as err:  # reported after the archive is written
            errors.append(err)

    side = threading.Thread(target=read_cluster, daemon=True) if target.is_postgres else None
    if side is not None:
        side.start()  # pg_controldata runs in parallel with the stream: no extra downtime
    counter = None  # on the endpoint lane, the volume's entries are counted beside the stream
    if target.host_dir is None:
        counter = Background(lambda: endpoint_census(engine, image, target.volume))

    def volume_read() -> None:  # on the reading thread, beside the end of the compression
        try:
            if side is not None:
                side.join(timeout=60)
            if still_stopped is not None:
                still_stopped()
            if release is not None:
                release()
        except BaseException as err:  # raised once the archive is written
            refused.append(err)
        finally:
            read.set()

    with target.source(engine, image) as source, reporter.transfer(label, None) as advance:
        try:
            result = archive.write_compressed(
                source, dest, level=level, progress=advance, on_source_end=volume_read
            )
        except TarFormatError as err:
            raise OperationFailed(f"the volume's tar stream was malformed: {err}") from err
    read.wait()  # the source ended, so volume_read runs (or ran) on the reading thread
    if refused:
        raise refused[0]
    state = None
    if side is not None:
        side.join(timeout=60)
        state = states[0] if states else None
        problem = _cluster_problem(state, errors, still_running=side.is_alive())
        if problem is not None:
            raise OperationFailed(
                f"{problem}: a snapshot of PostgreSQL data without its major version and cluster "
                "state cannot be checked when it is restored, so it was not recorded complete"
            )
    members = source.members
    if counter is not None:
        expected, sockets = counter.result()
        found = sum(1 for m in members if m.path != ".")
        if found != expected:
            raise OperationFailed(
                f"Docker's archive endpoint gave {found} of the volume's {expected} entries "
                "(it silently leaves out paths longer than PATH_MAX, 4096 bytes); "
                "nothing was recorded: use --reader host"
            )
    else:
        assert isinstance(source, hosttar.DirTar)
        sockets = source.skipped
    if sockets:
        reporter.warn(
            f"skipped {len(sockets)} Unix socket(s), which no archive holds "
            f"(e.g. {sockets[0]!r}); noted in the snapshot's record"
        )
    return Archived(result, members, state, sockets)


def _cluster_problem(
    state: cluster.ClusterState | None, errors: list[BaseException], *, still_running: bool
) -> str | None:
    """Why what was read of the stopped cluster is not enough to record (None: it is)."""
    if errors:
        return f"reading the PostgreSQL cluster's state failed ({describe(errors[0])})"
    if still_running or state is None:
        return "pg_controldata did not answer within 60 s"
    if state.major_version is None:
        return "the cluster's PG_VERSION could not be read"
    if state.cluster_state is None:
        return "pg_controldata could not read the cluster's control file"
    return None


def complete(
    store: Store,
    snap: Snapshot,
    done: Archived,
    downtime: float | None,
    started: float,
) -> Snapshot:
    """Record the snapshot complete, unless a restore would refuse it (then it fails)."""
    meta = snap.meta
    if done.cluster is not None:
        meta["postgres"] = done.cluster.as_meta()
    if done.sockets:
        meta["skipped_sockets"] = {
            "count": len(done.sockets),
            "paths": [
                os.fsencode(p).decode("utf-8", "backslashreplace") for p in done.sockets[:20]
            ],
        }
    pg_version = done.cluster.major_version if done.cluster else None
    refusal = lifecycle.restore_refusal(
        done.members, holds_postgres=bool(meta.get("is_postgres")), pg_version=pg_version
    )
    if refusal is not None:
        raise IntegrityError(
            f"a restore would refuse this snapshot: {refusal}; it was not recorded complete"
        )
    return store.complete(
        snap.id,
        done.members,
        sha256=done.result.sha256,
        size_bytes=done.result.size_bytes,
        raw_bytes=done.result.raw_bytes,
        file_count=len(done.members),
        duration_s=round(time.monotonic() - started, 3),
        downtime_s=None if downtime is None else round(downtime, 3),
        pg_version=pg_version,
        meta_json=json.dumps(meta),
    )


def begin(
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
            "is_postgres": target.is_postgres,
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
    snap = begin(store, backup_dir, target, name, level)
    try:
        image = helper_image(target, helper_image_override)
        with stopped_container(engine, target, reporter, watchdog) as down:
            done = archive_volume(
                engine,
                target,
                Path(snap.path),
                level=level,
                image=image,
                reporter=reporter,
                release=down.release,
                still_stopped=down.check_still_stopped,
            )
        return complete(store, snap, done, down.seconds if down.was_running else 0.0, started)
    except BaseException as err:
        lifecycle.fail(store, snap, err)
        raise
