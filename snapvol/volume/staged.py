"""A volume restore from a restic repository in one pass, staged beside the volume.

On the host lane, when the volume's directory can be swapped with a sibling
(``snapvol.volume.staging.usable_beside``), the snapshot is streamed out of the repository
(``snapvol.repo.fetch.opened``: the raw SHA-256, the size and every member checked against
the store's record of the copy or its manifest) into a new directory beside the volume's while
the container keeps running; each member is checked before it is written, and the copy is read
back and compared file by file, as a local restore does. Only then is the container stopped,
a safety snapshot taken (if asked), and the copy exchanged with the volume's directory in one
atomic rename: the volume is at every moment either its old contents or the new, whole. The
container is started, then the previous contents (now at the staging name) are removed.

A kill at any point leaves the volume whole, so the rescue only starts the container again
(the watchdog's phase stays ``Stopped``); the staging directory left behind is removed by the
next command (``staging.remove_leftovers``). No local archive is kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from snapvol.errors import DiskFullError, IntegrityError, OperationFailed
from snapvol.options import DEFAULT_LEVEL
from snapvol.output import Reporter
from snapvol.pipeline.members import Member
from snapvol.repo.manifest import DataRef
from snapvol.volume import staging
from snapvol.volume.host_lane import HostLane
from snapvol.volume.restore import (
    VolumeRestorePlan,
    VolumeRestoreResult,
    take_safety_snapshot,
    write_checked,
)
from snapvol.volume.target import VolumeTarget, check_sole_user, retry_args, stopped_container
from snapvol.workspace import Workspace


def staged_directory(target: VolumeTarget) -> Path | None:
    """The volume's directory when a staged restore can replace it (the host lane writes it
    here, and a copy beside it can be swapped in); None: the two-pass restore it is."""
    lane = target.lane
    if not isinstance(lane, HostLane) or not lane.writes_here():
        return None
    return lane.directory if staging.usable_beside(lane.directory) else None


def restore_staged(
    ws: Workspace,
    plan: VolumeRestorePlan,
    source: tuple[DataRef, Iterable[bytes]],
    *,
    safety_snapshot: bool = True,
    level: int = DEFAULT_LEVEL,
) -> VolumeRestoreResult:
    """Stage the snapshot's checked stream ``source`` (``fetch.opened``: where it comes from,
    what it must be, and its bytes) while the container runs; then stop it, take a safety
    snapshot, swap the staged copy in, start it. Any failure before the swap removes
    the copy and leaves the volume (and, if it ran, the running container) as it was."""
    started = time.monotonic()
    target, snap, reporter = plan.target, plan.snapshot, ws.reporter
    directory = staged_directory(target)
    if directory is None:
        raise OperationFailed(
            f"volume {target.volume} can no longer be restored in one pass here; nothing was "
            "changed"
        )
    lane = target.lane
    assert isinstance(lane, HostLane)
    staging.remove_strays(directory.parent, reporter)
    staged = staging.Staging.create(directory.parent)
    remover: threading.Thread | None = None
    try:
        staging.keep_host_label(directory, staged.path)
        reporter.step(f"restoring {snap.name} beside volume {target.volume}, the service running")
        data, chunks = source
        _fill(
            HostLane(staged.path, fallback=lane.fallback),
            data,
            chunks,
            plan.members,
            f"the repository's copy of snapshot {snap.id}",
            target.volume,
            reporter,
        )
        check_sole_user(ws.engine, target, restore=True)  # again: time has passed
        with stopped_container(ws.engine, target, reporter, ws.watchdog) as down:
            safety = None
            if safety_snapshot:
                safety = take_safety_snapshot(
                    ws, target, level=level, restoring=snap, still_stopped=down.check_still_stopped
                )
            taken = down.started_by_someone_else()
            if taken is not None:
                raise OperationFailed(
                    f"{taken}; its volume was not changed. Once it is stopped, to restore again",
                    run=("restore", snap.id, *retry_args(target)),
                )
            reporter.step(f"swapping the checked copy in as volume {target.volume}")
            try:
                staging.exchange(staged.path, directory)
            except OSError as err:
                raise OperationFailed(
                    f"swapping the restored copy in as volume {target.volume} failed "
                    f"({err.strerror or err}); the volume was not changed"
                ) from err
            down.release()  # the volume is whole: the service may start now
            # The previous contents, now at the staging name, go while the service starts.
            remover = threading.Thread(
                target=_remove, args=(staged, reporter), name="snapvol-remove-previous"
            )
            remover.start()
    finally:
        if remover is None:
            _remove(staged, reporter)  # the copy, or (swapped but not started) the previous
        else:
            remover.join()
    return VolumeRestoreResult(snap, safety, down.seconds, time.monotonic() - started)


def _remove(staged: staging.Staging, reporter: Reporter) -> None:
    reporter.step(f"removing {staged.path}")
    try:
        staged.remove()
    except OSError as err:
        reporter.warn(f"could not remove {staged.path}: {err}; the next command will")


def _fill(
    lane: HostLane,
    data: DataRef,
    chunks: Iterable[bytes],
    members: list[Member],
    copy: str,
    volume: str,
    reporter: Reporter,
) -> None:
    """Extract the checked stream into the staging directory (``lane``), each member checked
    against the store before it is written, and read it back: every file's content is compared
    with the store's record here (the stream's own check of the raw SHA-256 and size ends it)."""
    staging.check_space(lane.directory.parent, data.raw_bytes, len(members), volume)
    try:
        write_checked(
            lane,
            lambda advance: _counted(chunks, advance),
            members,
            data.raw_bytes,
            data.filename,
            reporter,
        )
    except DiskFullError as err:
        raise DiskFullError(
            f"no space left beside volume {volume} for the restored copy; nothing was changed"
        ) from err
    except IntegrityError as err:
        if err.message.startswith(copy):  # the stream's own check: it says so already
            raise
        raise IntegrityError(
            f"{copy} does not match the store's record ({err.message}); it was not used and "
            "nothing was changed"
        ) from err


def _counted(chunks: Iterable[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        advance(len(chunk))
        yield chunk
