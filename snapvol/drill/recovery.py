"""What a killed drill left: its throwaway container and volume, and its unfinished record.

Every command that reaches the engine removes the first (``recover_drills``), every command
that opens the store closes the second (``recover_drill_records``), once the snapvol process
that made them is gone from this host. Another host's drills are left alone.
"""

from __future__ import annotations

import contextlib
import os
import socket

from snapvol.adapters.engine import OWNER_LABEL, Engine
from snapvol.adapters.store import Store
from snapvol.drill.sandbox import DRILL_LABEL, HOST_LABEL
from snapvol.errors import SnapvolError
from snapvol.output import Reporter
from snapvol.runtime import pid_alive


def _gone(pid: int | None, host: str | None) -> bool:
    """Whether the snapvol process ``pid`` of ``host`` is known to be gone."""
    if host != socket.gethostname() or pid == os.getpid():
        return False  # another machine's drill (we cannot tell), or ours
    return pid is None or not pid_alive(pid)


def _orphaned(attrs: dict[str, str]) -> bool:
    """Whether the snapvol process that made a drill's container or volume is gone."""
    owner = attrs.get(OWNER_LABEL, "")
    return owner.isdigit() and _gone(int(owner), attrs.get(HOST_LABEL))


def recover_drills(engine: Engine, reporter: Reporter) -> int:
    """Remove the containers and volumes of drills whose snapvol process is gone; how many
    drills' leftovers were removed."""
    try:
        containers = engine.labelled_containers(DRILL_LABEL)
        volumes = engine.labelled_volumes(DRILL_LABEL)
    except SnapvolError:
        return 0
    removed: set[str] = set()
    for found in containers:
        tags = found.get("Labels") or {}
        if _orphaned(tags):
            with contextlib.suppress(SnapvolError):
                engine.remove(found["Id"])
                removed.add(tags[DRILL_LABEL])
    for volume in volumes:
        if _orphaned(volume.labels):
            with contextlib.suppress(SnapvolError):
                engine.remove_volume(volume.name)
                removed.add(volume.labels[DRILL_LABEL])
    if removed:
        reporter.warn(
            f"removed the container and volume of {len(removed)} drill(s) left by an "
            "interrupted run"
        )
    return len(removed)


def recover_drill_records(store: Store, reporter: Reporter) -> int:
    """Record drills whose process is gone as failed (interrupted); how many."""
    found = [d for d in store.drills(running=True) if _gone(d.pid, d.host)]
    for drill in found:
        store.finish_drill(
            drill.id,
            ok=False,
            error=f"interrupted: snapvol (pid {drill.pid}) ended before the drill finished",
        )
        reporter.warn(f"drill {drill.id} of snapshot {drill.snapshot_id} was interrupted")
    return len(found)
