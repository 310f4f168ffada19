"""Cleaning up after interrupted runs: every command starts by finding what a dead run left.

A snapshot recorded as in progress whose container lock nobody holds and whose process is gone
is marked failed and its partial file removed; a partial file left for a snapshot this store
already knows as failed or complete, and helper containers whose owner is gone, are removed too.
Each finding is one line on stderr.

Only files snapvol wrote are deleted: in the backup directory, named ``<name>.<id><suffix>``
after a record of this store. Any other ``.partial`` file (another program's, or a snapshot that
another store sharing the directory is taking) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from snapvol import lifecycle, locking
from snapvol.adapters.engine import OWNER_LABEL, Engine
from snapvol.adapters.store import IN_PROGRESS, Snapshot, Store
from snapvol.errors import SnapvolError
from snapvol.output import Reporter
from snapvol.pipeline import archive
from snapvol.pipeline.archive import PARTIAL_SUFFIX
from snapvol.pipeline.destination import LocalDirectory, archive_name
from snapvol.runtime import pid_alive, started_after


def _still_running(snap: Snapshot) -> bool:
    """Whether the snapshot's run may still be going: it is judged interrupted only when its
    container's machine-wide lock is free and its process is gone."""
    if snap.pid == os.getpid():
        return True
    if snap.host != socket.gethostname():
        return True  # another machine's run: we cannot tell, so leave it alone
    if locking.is_held(snap.container_id):  # held, or cannot be checked
        return True
    if snap.pid is None or not pid_alive(snap.pid):
        return False
    return not started_after(snap.pid, snap.created_at)  # a reused pid is not the run


def recover_store(store: Store, backup_dir: Path, reporter: Reporter) -> list[Snapshot]:
    """Mark interrupted snapshots failed and remove their files; return them."""
    # Listed before the store is read: a run records its snapshot before it creates the
    # partial file, so every partial file of ours seen here has its row in what is read next.
    destination = LocalDirectory(backup_dir)
    partials = set(destination.partials())
    recovered = []
    for snap in store.snapshots(status=IN_PROGRESS):
        if _still_running(snap):
            continue
        lifecycle.fail(
            store,
            snap,
            f"interrupted: snapvol (pid {snap.pid}) ended before it finished",
            backup_dir,
        )
        reporter.warn(
            f"snapshot {snap.id} ({snap.name}) was interrupted; marked failed and removed its "
            "partial file"
        )
        recovered.append(snap)
    for name in sorted(partials):
        owner = _owner(store, name)
        if owner is None or owner.status == IN_PROGRESS:
            continue  # not ours (no record here), or handled above
        if destination.remove_partial(name):
            reporter.warn(f"removed {name}, left by an interrupted run")
    return recovered


def _owner(store: Store, partial: str) -> Snapshot | None:
    """The record of this store that ``partial`` is the partial file of, if any."""
    stem = partial.removesuffix(PARTIAL_SUFFIX)
    for suffix in archive.ARCHIVE_SUFFIXES:
        if stem.endswith(suffix):
            _name, _dot, snap_id = stem.removesuffix(suffix).rpartition(".")
            snap = store.get(snap_id) if snap_id else None
            if snap is not None and archive_name(snap) == stem:
                return snap
    return None


def recover_staging(reporter: Reporter) -> None:
    """Remove what staged restores killed on this host left beside their volumes: only the
    directories their markers name, once their process is gone (``volume.staging``)."""
    from snapvol.volume import staging  # light, but only needed here

    staging.remove_leftovers(reporter)


def recover_helpers(engine: Engine, reporter: Reporter) -> int:
    """Remove helper containers whose snapvol process is gone."""
    removed = 0
    try:
        helpers = engine.helpers()
    except SnapvolError:
        return 0
    for helper in helpers:
        owner = (helper.get("Labels") or {}).get(OWNER_LABEL, "")
        if owner.isdigit() and pid_alive(int(owner)):
            continue
        with contextlib.suppress(SnapvolError):
            engine.remove(helper["Id"])
            removed += 1
    if removed:
        reporter.warn(f"removed {removed} helper container(s) left by an interrupted run")
    return removed
