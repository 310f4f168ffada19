"""Cold copies of a claim: a snapshot, and a restore that mirrors it.

A snapshot scales the workload down (recorded on it), waits until no pod holds the claim,
starts a read-only helper pod on the data's node, streams ``tar`` out of it through the same
recording, zstd and SHA-256 pipeline as the engine lanes, checks with ``find`` that nothing
was left out, and scales the workload back, whatever happened. When the claim's data is a
directory on this machine (``node.host_directory``), the host lane reads it instead of a
helper pod: the Docker host lane's own code, the same scaling around it.

A restore does the same with a read-write helper: it first writes a safety copy of what the
claim holds, then replaces it (each member checked against the snapshot's record before it is
sent), reads it all back and compares every file; if anything fails after the claim was
emptied, the safety copy is put back (and read back) before the workload is scaled up again.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from snapvol.errors import IncompatibleError, OperationFailed, describe, failed
from snapvol.kube import helper_pod, scale
from snapvol.kube.claims import ClaimTarget
from snapvol.kube.client import Kube
from snapvol.kube.lane import PodLane
from snapvol.output import Reporter
from snapvol.pg.cluster import major_of
from snapvol.pipeline import archive
from snapvol.pipeline.members import Member
from snapvol.pipeline.tarscan import TarFormatError
from snapvol.volume.host_lane import HostLane
from snapvol.volume.lane import Lane
from snapvol.volume.restore import write_checked

RESTORE_PREFIX = "restore-"
"""Starts a restore's operation id: an interrupted restore's mark tells ``recover`` that the
claim may be half-written."""


def is_restore(mark: scale.Mark) -> bool:
    return mark.operation.startswith(RESTORE_PREFIX)


def new_operation() -> str:
    """An operation id: names the helper pods and the workload's mark."""
    return uuid.uuid4().hex[:12]


@dataclass
class ColdCopy:
    result: archive.ArchiveResult
    members: list[Member]
    sockets: list[str]  # left out: no tar holds a socket
    pg_version: str | None = None  # the major version of a PostgreSQL data directory in it
    pg_subdir: str = ""  # where that directory is in the claim ("": its root)


def pg_data_dir(members: list[Member]) -> str | None:
    """Where the claim holds a PostgreSQL data directory: "" (its root) or the one directory
    below it whose ``PG_VERSION`` says so (images set PGDATA to a subdirectory of the mount
    because a mount's root holds lost+found); None: no data directory."""
    found = [m.path for m in members if m.type == "file" and m.path.endswith("PG_VERSION")]
    for path in sorted(found, key=lambda p: p.count("/")):
        if path == "PG_VERSION" or path.count("/") == 1:
            return path.removesuffix("PG_VERSION").rstrip("/")
    return None


def _read_pg_version(lane: Lane, subdir: str) -> str:
    """The data directory's PG_VERSION: read here when the lane's files are (never through a
    link), else with ``cat`` in the helper pod."""
    relative = f"{subdir}/PG_VERSION".lstrip("/")
    here = lane.host_path(relative)
    if here is not None:
        try:
            fd = os.open(here, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                return os.read(fd, 4096).decode("utf-8", "replace")
            finally:
                os.close(fd)
        except OSError as err:
            raise OperationFailed(f"reading {here} failed: {err.strerror or err}") from err
    assert isinstance(lane, PodLane)
    path = f"{helper_pod.HELPER_MOUNT}/{relative}"
    return lane.run(["cat", path], "reading the claim's PG_VERSION")


def _pg_version(lane: Lane, subdir: str) -> str:
    text = _read_pg_version(lane, subdir)
    major = major_of(text.strip())
    if major is None:
        raise OperationFailed(
            f"the claim's {subdir + '/' if subdir else ''}PG_VERSION does not hold a version "
            f"({text.strip()[:40]!r})"
        )
    return major


def _archive(lane: Lane, dest: Path, level: int, progress: archive.Progress | None) -> ColdCopy:
    census = lane.census()
    with lane.source() as source:
        try:
            result = archive.write_compressed(source, dest, level=level, progress=progress)
        except TarFormatError as err:
            raise OperationFailed(f"the claim's tar stream was malformed: {err}") from err
    sockets = census.left_out(source)
    subdir = pg_data_dir(source.members)
    if subdir is None:
        return ColdCopy(result, source.members, sockets)
    return ColdCopy(result, source.members, sockets, _pg_version(lane, subdir), subdir)


@contextlib.contextmanager
def _lane(
    kube: Kube,
    target: ClaimTarget,
    operation: str,
    directory: Path | None,
    *,
    read_only: bool,
    timeout: float,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Lane]:
    """The claim's lane while the workload is down: the host lane on ``directory`` (the
    claim's data here), else a helper pod on the data's node (as the workload's user where
    Pod Security forbids root), deleted after."""
    if directory is not None:
        yield HostLane(directory, fallback=None)
        return
    spec = helper_pod.admitted(kube, target, operation, read_only=read_only, warn=warn)
    owner = target.run_as if helper_pod.as_owner(spec) else None
    with helper_pod.running(kube, spec, timeout=timeout, created=True) as pod:
        yield PodLane(kube, pod, target.workload.namespace, target.claim, owner)


def snapshot_claim(
    kube: Kube,
    target: ClaimTarget,
    dest: Path,
    *,
    level: int = 3,
    operation: str | None = None,
    timeout: float = 300,
    progress: archive.Progress | None = None,
    warn: Callable[[str], None] | None = None,
    directory: Path | None = None,
) -> ColdCopy:
    """Archive ``target``'s claim, cold, to ``dest`` (``.tar.zst``); ``directory``: the
    claim's data on this machine (``node.host_directory``), read here instead of by a
    helper pod."""
    operation = operation or new_operation()
    with (
        scale.scaled_down(kube, target, operation, timeout=timeout, warn=warn),
        _lane(
            kube, target, operation, directory, read_only=True, timeout=timeout, warn=warn
        ) as lane,
    ):
        return _archive(lane, dest, level, progress)


@dataclass
class Restored:
    safety: ColdCopy
    rolled_back: bool


def restore_claim(
    kube: Kube,
    target: ClaimTarget,
    archive_path: Path,
    members: list[Member],
    safety_dest: Path,
    *,
    operation: str | None = None,
    timeout: float = 300,
    reporter: Reporter | None = None,
    warn: Callable[[str], None] | None = None,
    pg_version: str | None = None,
    on_safety: Callable[[ColdCopy], None] | None = None,
    adopt: scale.Mark | None = None,
    directory: Path | None = None,
) -> Restored:
    """Replace ``target``'s claim with the archive at ``archive_path`` (already verified
    against its record ``members``); a safety copy of what it held goes to ``safety_dest``
    first and is put back if the restore fails once the claim was emptied.

    ``on_safety`` is handed the safety copy before anything is written (a failure there
    changes nothing); ``pg_version``, the archive's PostgreSQL major version: a claim holding
    PostgreSQL data of another major version is refused then, unchanged. ``adopt``: an
    interrupted restore's mark, taken over (``scale.scaled_down``). The operation's id starts
    with ``restore-``: a restore's mark says it was one. ``directory``: the claim's data on
    this machine, written here instead of by a helper pod (the safety copy read here too)."""
    operation = operation or RESTORE_PREFIX + new_operation()
    reporter = reporter or Reporter()
    with (
        scale.scaled_down(kube, target, operation, timeout=timeout, warn=warn, adopt=adopt),
        _lane(
            kube, target, operation, directory, read_only=False, timeout=timeout, warn=warn
        ) as lane,
    ):
        safety = _archive(lane, safety_dest, 3, None)
        if pg_version and safety.pg_version and major_of(pg_version) != safety.pg_version:
            raise IncompatibleError(
                f"claim {target.claim} holds PostgreSQL {safety.pg_version} data but the snapshot "
                f"holds PostgreSQL {pg_version}'s; nothing was changed (a logical snapshot "
                "moves data between versions)"
            )
        if on_safety is not None:
            on_safety(safety)
        note = lane.refuse_unwritable(members)
        if isinstance(lane, PodLane):
            lane.refuse_unreplaceable(safety.members)
        if note and warn is not None:
            warn(note)
        try:
            write_checked(
                lane,
                lambda advance: archive.decompressed_chunks(archive_path, advance),
                members,
                None,
                archive_path.name,
                reporter,
            )
            return Restored(safety, rolled_back=False)
        except BaseException as err:
            try:
                write_checked(
                    lane,
                    lambda advance: archive.decompressed_chunks(safety_dest, advance),
                    safety.members,
                    safety.result.raw_bytes,
                    safety_dest.name,
                    reporter,
                )
            except BaseException as back:  # an interruption too: the claim is half-written
                down = scale.KeepDown(
                    f"restoring claim {target.claim} failed ({describe(err)}) and putting back "
                    f"its safety copy failed too ({describe(back)}); the claim may be "
                    f"half-written, so {target.workload.describe()} is left scaled down (its "
                    f"annotation {scale.ANNOTATION} kept); the safety copy is {safety_dest}"
                )
                if isinstance(back, KeyboardInterrupt):
                    down.exit_code = 130
                raise down from err
            raise failed(
                f"restoring claim {target.claim} failed ({describe(err)}); what it held "
                "before was put back and checked",
                err,
            ) from err
