"""Archiving a stopped container's volume and recording it: what a snapshot and a restore's
safety snapshot share.

The tar comes from the target's lane and flows through zstd and SHA-256 to disk in one pass
while every file is recorded and hashed; a PostgreSQL volume's cluster state is read beside it.
A snapshot is recorded complete only if a restore would take it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.engine import Engine
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import IntegrityError, OperationFailed, describe
from snapvol.output import Reporter
from snapvol.pg import cluster
from snapvol.pipeline import archive
from snapvol.pipeline.members import Member
from snapvol.pipeline.tarscan import TarFormatError
from snapvol.volume import kube
from snapvol.volume.target import VolumeTarget
from snapvol.workspace import Workspace

SUFFIX = ".tar.zst"


@dataclass
class Archived:
    result: archive.ArchiveResult
    members: list[Member]
    cluster: cluster.ClusterState | None
    sockets: list[str] = field(default_factory=list)  # left out: no tar holds a socket


def archive_volume(
    engine: Engine,
    target: VolumeTarget,
    dest: Path,
    *,
    level: int,
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
                cluster.read_cluster_state(engine, target.image, target.volume, target.pg_subdir)
            )
        except BaseException as err:  # reported after the archive is written
            errors.append(err)

    side = threading.Thread(target=read_cluster, daemon=True) if target.is_postgres else None
    if side is not None:
        side.start()  # pg_controldata runs in parallel with the stream: no extra downtime
    census = target.lane.census()  # beside the stream: does it miss anything?

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

    with target.lane.source() as source, reporter.transfer(label, None) as advance:
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
    sockets = census.left_out(source)
    if sockets:
        reporter.warn(
            f"skipped {len(sockets)} Unix socket(s), which no archive holds "
            f"(e.g. {sockets[0]!r}); noted in the snapshot's record"
        )
    return Archived(result, source.members, state, sockets)


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


def record_complete(
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
        meta=meta,
    )


def recorded(
    ws: Workspace, target: VolumeTarget, name: str | None, level: int, **meta: object
) -> AbstractContextManager[Snapshot]:
    """The life of a volume snapshot of ``target`` in the store (``lifecycle.recorded``);
    ``name`` and ``level`` as ``SnapshotOptions`` checked them, or made by snapvol."""
    snap = lifecycle.begin(
        ws.store,
        ws.backup_dir,
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
            **kube.recorded_meta(target),
            **meta,
        },
    )
    return lifecycle.recorded(ws.store, snap)
