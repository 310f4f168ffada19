"""A repository opened for copying (or pruning): its id, this machine's lock on it, and the
listing of snapvol's snapshots in it.

Nothing here imports the store: a copy starts its restic processes (``Opening``) before the
store's import and opening, which take as long as restic takes to open the repository.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from snapvol import locking
from snapvol.adapters import restic as restic_api
from snapvol.adapters.restic import Restic
from snapvol.background import Background
from snapvol.repo import TAG


@dataclass(frozen=True)
class Target:
    """A repository opened for copying: restic on it, its id (``restic cat config``, the
    store's key for it) and its display form (no credentials)."""

    restic: Restic
    repository_id: str
    display: str


def open_target(restic: Restic) -> Target:
    """Open the repository (this checks that it exists, answers and takes the password)."""
    return Target(restic, restic.config().id, restic.repo.display)


@contextlib.contextmanager
def locked(target: Target, operation: str) -> Iterator[float]:
    """This machine's lock on ``target`` (whatever the store): one copy or prune at a time, so
    two runs never send the same snapshot and prune never takes a copy's data, written but not
    yet given its manifest, for a leftover. A second run is refused (LockedError) at once.

    Yields when a run last held the lock (the lock file's mtime as we took it: each holder
    writes it when it takes the lock and touches it when it lets go), for ``Opening``.
    """
    lock = locking.acquire(
        f"repository-{target.repository_id}", f"repository {target.display}", operation
    )
    try:
        yield lock.last_written
    finally:
        with contextlib.suppress(OSError):  # another user's file we may only read: not touched
            os.utime(lock.fd)
        lock.release()


_CLOCK_SLACK = 1.0
"""Seconds by which a file's mtime may lag ``time.time()`` (the kernel's coarse clock, or a file
system that keeps whole seconds): a lock let go as late as this before the listing started
counts as let go after it."""


class Opening:
    """``restic cat config`` and the listing of the repository's snapvol snapshots, started side
    by side at once, on threads, while the caller opens the store: each restic process spends
    most of its time opening the repository (key derivation), one core each.

    The listing is made before the repository's lock is held (its key is the id ``cat config``
    reads): ``snapshots`` takes it only if no run held the lock since it started, and lists
    again (under the lock) otherwise, so a copy or prune that ended meanwhile is seen.
    """

    def __init__(self, restic: Restic) -> None:
        self.restic = restic
        self.started = time.time()
        self._listing = Background(lambda: restic.snapshots(tags=[TAG]), name="snapvol-restic-list")
        self._target = Background(lambda: open_target(restic), name="snapvol-restic-config")

    def target(self) -> Target:
        """The repository's id and display (raises restic's error opening it)."""
        return self._target.result()

    def snapshots(self, target: Target, last_held: float) -> list[restic_api.Snapshot]:
        """The repository's snapvol snapshots, for a caller that holds ``locked(target)``,
        which yielded ``last_held``."""
        if last_held < self.started - _CLOCK_SLACK:
            return self._listing.result()
        return target.restic.snapshots(tags=[TAG])  # another run held the lock since
