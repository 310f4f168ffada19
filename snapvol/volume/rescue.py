"""The detached rescue process: puts a container back if snapvol dies while holding it.

Started as ``python -m snapvol.volume.rescue`` by the guard's client (``snapvol.volume.watchdog``)
before a container is stopped, it follows the phases snapvol writes on a pipe
(``snapvol.volume.phases``). If the pipe closes without ``Done`` (snapvol was killed, even with
SIGKILL, or crashed) it recovers: it rolls the volume back to the safety snapshot when a restore
was rewriting it, and starts the container if it was running. It shares snapvol's container lock,
so no other snapvol run can touch the container until it has finished.

Nothing imports this module; it imports the volume code only when there is something to recover.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from snapvol.volume import phases
from snapvol.volume.phases import Done, Phase, Stopped

if TYPE_CHECKING:
    from snapvol.adapters.engine import ContainerInfo, Engine

ATTEMPTS = 5
RETRY_DELAY_S = 2.0


@dataclass(frozen=True)
class RollBack:
    """Put safety snapshot ``safety`` back into ``volume`` through helper ``image``."""

    safety: str
    volume: str
    image: str


@dataclass(frozen=True)
class Rescue:
    """What to do once the pipe has closed, decided from the last phase alone."""

    roll_back: RollBack | None = None  # first, when a restore was rewriting the volume
    start: bool = False  # then start the container: snapvol had stopped it
    # The volume being rewritten when there is nothing to put back: the container stays stopped
    # rather than start on half-written data.
    stranded: str | None = None

    @property
    def needed(self) -> bool:
        return self.roll_back is not None or self.start or self.stranded is not None


def decide(last: Phase) -> Rescue:
    """What the last phase snapvol reported asks of the rescue."""
    if isinstance(last, Done):
        return Rescue()
    if isinstance(last, Stopped):
        return Rescue(start=last.was_running)
    if last.safety is None:
        return Rescue(stranded=last.volume)
    return Rescue(RollBack(last.safety, last.volume, last.image), start=last.was_running)


def _log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}", flush=True)


def recover(
    container_id: str, db: Path, is_postgres: bool, rescue: Rescue, pod: str | None = None
) -> int:
    """Carry ``rescue`` out; the exit status (1: the container was left stopped). ``pod``: the
    container's Podman pod, which snapvol stopped whole and is started whole."""
    # Imported here, not at the top: every guarded stop starts this process, and the Docker SDK,
    # SQLModel and the volume code cost about a second of CPU beside the run it guards, which
    # nearly always ends with ``Done``.
    from snapvol.adapters.engine import Engine
    from snapvol.volume.guard import wait_healthy

    engine = Engine.connect()
    info = engine.container(container_id)
    if rescue.stranded is not None:
        _log(
            f"{info.name}: snapvol died while rewriting volume {rescue.stranded} with no "
            "safety snapshot; leaving the container stopped"
        )
        return 1
    if rescue.roll_back is not None and not _roll_back(engine, info, db, rescue.roll_back):
        return 1
    if rescue.start:
        _log(f"{info.name}: snapvol ended while holding the container; starting it")
        if pod is None:
            engine.start(container_id)
        else:
            engine.start_pod(pod)
        wait_healthy(engine, info, is_postgres)
        _log(f"{info.name}: running again")
    return 0


def _roll_back(engine: Engine, info: ContainerInfo, db: Path, roll_back: RollBack) -> bool:
    """Put the safety snapshot back; False when it cannot be used."""
    from snapvol.adapters.store import COMPLETE, Store
    from snapvol.volume.restore import put_back_safety

    safety_id = roll_back.safety
    store = Store.open(db)
    try:
        safety = store.get(safety_id)
        if safety is None or safety.status != COMPLETE:
            _log(f"{info.name}: safety snapshot {safety_id} is not usable; leaving it stopped")
            return False
        _log(f"{info.name}: snapvol died mid-restore; putting back safety snapshot {safety.id}")
        put_back_safety(
            engine, info.id, roll_back.volume, roll_back.image, safety, store.members(safety.id)
        )
        return True
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snapvol-rescue")
    parser.add_argument("--container", required=True)
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--pipe-fd", required=True, type=int)
    # Only held (repeated: a pod's containers each have one): the locks last as long as we do.
    parser.add_argument("--lock-fd", type=int, action="append", default=[])
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--pod")  # the container's Podman pod, stopped (and started) whole
    args = parser.parse_args(argv)
    with os.fdopen(args.pipe_fd, "rb") as pipe:
        rescue = decide(phases.last(pipe))
    if not rescue.needed:
        return 0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return recover(args.container, args.db, args.postgres, rescue, args.pod)
        except Exception as err:  # keep trying: the engine may be briefly busy
            _log(f"recovery attempt {attempt} failed: {type(err).__name__}: {err}")
            time.sleep(RETRY_DELAY_S)
    return 1


if __name__ == "__main__":
    sys.exit(main())
