"""The throwaway server a drill restores into: a labelled volume and container, always removed.

Both carry the drill's id, the snapvol process's pid and this host's name, so that a drill killed
before it could clean up is found by the next command's recovery (``recover_drills``) and removed
once its process is gone. Nothing here ever looks at the snapshot's own container or volume.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from snapvol.adapters.engine import OWNER_LABEL, Engine
from snapvol.errors import OperationFailed, SnapvolError

DRILL_LABEL = "org.snapvol.drill"  # the drill's id
HOST_LABEL = "org.snapvol.drill-host"  # the host whose snapvol process made it


@dataclass(frozen=True)
class Sandbox:
    name: str  # the container's and the volume's
    volume: str
    container_id: str
    mount: str  # where the container mounts the volume


def labels(drill_id: str) -> dict[str, str]:
    return {
        DRILL_LABEL: drill_id,
        OWNER_LABEL: str(os.getpid()),
        HOST_LABEL: socket.gethostname(),
    }


@contextlib.contextmanager
def sandbox(
    engine: Engine,
    drill_id: str,
    image: str,
    *,
    mount: str,
    env: dict[str, str],
    user: str,
) -> Iterator[Sandbox]:
    """A new volume at ``mount`` of a new container of ``image`` (created, not started; no
    network), both removed when the body ends, however it ends."""
    name = f"snapvol-drill-{drill_id}"
    tags = labels(drill_id)
    container_id: str | None = None
    try:
        engine.create_volume(name, tags)  # first: a kill between the two leaves a labelled volume
        container_id = engine.create_server(
            image, name=name, volume=name, mount=mount, env=env, user=user, labels=tags
        )
        yield Sandbox(name, name, container_id, mount)
    finally:
        remove(engine, container_id or name, name)


def remove(engine: Engine, container: str, volume: str) -> None:
    """Remove a drill's container (with any anonymous volume) and then its volume."""
    with contextlib.suppress(SnapvolError):
        engine.remove(container)
    with contextlib.suppress(SnapvolError):
        engine.remove_volume(volume)


def wait_started(engine: Engine, container_id: str, ready: list[str], timeout: float) -> None:
    """Wait until ``ready`` (a command run in the container) exits 0; fail at once with the
    server's last words if the container stops."""
    deadline = time.monotonic() + timeout
    while True:
        state = engine.state(container_id)
        if not state.running:
            raise OperationFailed(
                f"the drill's server stopped ({state.status}): "
                f"{engine.logs_tail(container_id) or 'no output'}"
            )
        code, _, _ = engine.exec_run(container_id, ready)
        if code == 0:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the drill's server did not accept connections within {timeout:.0f} s"
            )
        time.sleep(0.25)
