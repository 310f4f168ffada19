"""Cleaning up after interrupted runs: every command starts by finding what a dead run left.

A snapshot recorded as in progress whose container lock nobody holds and whose process is gone
is marked failed and its partial file removed; stray ``.partial`` files and helper containers
whose owner is gone are removed too. Each finding is one line on stderr.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from snapvol import lifecycle, locking
from snapvol.archive import PARTIAL_SUFFIX
from snapvol.engine import OWNER_LABEL, Engine
from snapvol.errors import SnapvolError
from snapvol.output import Reporter
from snapvol.runtime import pid_alive, started_after
from snapvol.store import IN_PROGRESS, Snapshot, Store


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
    # partial file, so every partial file seen here has its row in what is read next.
    # Absolute, like the paths the store records (--backup-dir may be relative).
    found = backup_dir.resolve().glob(f"*{PARTIAL_SUFFIX}") if backup_dir.is_dir() else []
    strays = set(found)
    recovered = []
    for snap in store.snapshots(status=IN_PROGRESS):
        partial = Path(snap.path + PARTIAL_SUFFIX)
        strays.discard(partial)
        if _still_running(snap):
            continue
        lifecycle.fail(
            store, snap, f"interrupted: snapvol (pid {snap.pid}) ended before it finished"
        )
        reporter.warn(
            f"snapshot {snap.id} ({snap.name}) was interrupted; marked failed and removed its "
            "partial file"
        )
        recovered.append(snap)
    for stray in sorted(strays):
        stray.unlink(missing_ok=True)
        reporter.warn(f"removed {stray.name}, left by an interrupted run")
    return recovered


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
