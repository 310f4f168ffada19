"""What a command works with, opened once by the CLI and handed to the core.

The CLI's session opens the store and the engine, takes the container's lock when the command
changes one, and builds one ``Workspace``; core functions take it instead of the same five
loose parameters (borg's ``with_repository`` hands its commands their resources the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from snapvol.adapters.engine import Engine
from snapvol.adapters.store import Store
from snapvol.output import Reporter
from snapvol.volume.watchdog import WatchdogConfig


@dataclass(frozen=True)
class Workspace:
    engine: Engine
    store: Store
    # Where archives are written (the local backup directory).
    backup_dir: Path
    reporter: Reporter
    # Set while the session holds a container's lock: what a watchdog needs to guard it.
    watchdog: WatchdogConfig | None = None
    # The seconds a container being stopped gets to shut down cleanly (None: the default).
    stop_timeout: int | None = None
