"""What to watch a run with: the metrics file and the notifications, as configured. Light on
purpose: every command reads it at its start (no store, no Apprise imported)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from snapvol.monitor import notify

REPORTED = frozenset({"snapshot", "copy", "restore", "verify", "prune", "rm", "drill"})
"""The commands whose runs count: those that make, check, move or delete snapshots."""


@dataclass(frozen=True)
class Monitoring:
    metrics_file: Path | None = None
    notify_config: Path | None = None
    notify_success: bool = False

    def wanted(self, command: str | None) -> bool:
        return command in REPORTED and (
            self.metrics_file is not None
            or self.notify_config is not None
            or bool(notify.urls_from_env())
        )
