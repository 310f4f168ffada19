"""One operation per container at a time, across every snapvol process on the machine.

The lock is an flock(2) on a file named after the container's id: the kernel drops it when the
holder dies, so a crashed run never blocks the next one. The file also says who holds it, so a
refused caller can name the running operation.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from snapvol.errors import LockedError
from snapvol.runtime import run_dir


@dataclass
class ContainerLock:
    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock (unless a watchdog still shares it)
            self.fd = -1


def lock_path(container_id: str) -> Path:
    locks = run_dir() / "locks"
    locks.mkdir(exist_ok=True, mode=0o700)
    return locks / f"{container_id}.lock"


def acquire(container_id: str, container_name: str, operation: str) -> ContainerLock:
    """Take the container's lock now, or raise LockedError naming the operation that holds it."""
    path = lock_path(container_id)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe_holder(fd)
        os.close(fd)
        raise LockedError(
            f"another snapvol operation is running on {container_name}: {holder}; "
            "try again when it ends"
        ) from None
    info = {
        "pid": os.getpid(),
        "operation": operation,
        "container": container_name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return ContainerLock(path, fd)


def is_held(container_id: str) -> bool:
    """Whether some process holds the container's lock right now."""
    path = lock_path(container_id)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _describe_holder(fd: int) -> str:
    for _ in range(5):  # the holder may be writing its description right now
        raw = os.pread(fd, 4096, 0)
        try:
            info = json.loads(raw)
            return f"`snapvol {info['operation']}` (pid {info['pid']}, since {info['started']})"
        except (ValueError, KeyError):
            time.sleep(0.02)
    return "an operation that is starting"
