"""Where snapvol keeps per-machine runtime state (locks, watchdog logs), and process liveness."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from snapvol.errors import OperationFailed


def run_dir() -> Path:
    """``$SNAPVOL_RUN_DIR``, else ``$XDG_RUNTIME_DIR/snapvol``, else ``/tmp/snapvol-<uid>``.

    Locks must be shared by every snapvol process on the machine whatever its --db, so this is
    not under the backup directory. Created 0700 and refused if someone else owns it.
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
