"""Where snapvol keeps its private runtime files (watchdog logs), and process liveness.

Locks are not kept here: this place depends on the environment, and a lock must be seen by every
snapvol process on the machine (see snapvol.locking).
"""

from __future__ import annotations

import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

from snapvol.errors import OperationFailed


def python_module(module: str) -> list[str]:
    """The command line that runs ``module`` of this snapvol, in this interpreter, whatever the
    working directory holds: ``-P`` keeps a ``snapvol/`` folder there (a clone's parent, a
    cron job's home) from being imported in its place."""
    return [sys.executable, "-P", "-m", module]


def run_dir() -> Path:
    """``$SNAPVOL_RUN_DIR``, else ``$XDG_RUNTIME_DIR/snapvol``, else ``/tmp/snapvol-<uid>``.

    Private to this user and environment, so it holds only what no other process needs to see
    (watchdog logs), never the locks. Created 0700 and refused if someone else owns it.
    """
    configured = os.environ.get("SNAPVOL_RUN_DIR")
    if configured:
        path = Path(configured)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "snapvol"
    else:
        path = Path("/tmp") / f"snapvol-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OperationFailed(f"runtime directory {path} is not a directory owned by this user")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def started_after(pid: int, when: datetime) -> bool:
    """Whether process ``pid`` started after ``when`` (so it is not the process that was running
    then, but one that reused its pid). False when it cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as boot_file:
            boot = next(int(line.split()[1]) for line in boot_file if line.startswith(b"btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, IndexError, ValueError, StopIteration):
        return False
    # btime is whole seconds: allow 2 s before deciding the pid was reused.
    moment = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    return started > moment.timestamp() + 2
