"""After a command that works on snapshots: the metrics file written again, and a notification
sent when the run failed (or, when asked, succeeded). Neither ever changes the command's own
outcome: a problem here is one warning line."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path

from snapvol.adapters.store import Store
from snapvol.errors import SnapvolError
from snapvol.monitor import metrics, notify
from snapvol.monitor.settings import Monitoring
from snapvol.output import Reporter


def after_run(
    monitoring: Monitoring,
    db: Path,
    command: str,
    ok: bool,
    why: str,
    reporter: Reporter,
    alerts: Sequence[str] = (),
) -> None:
    """Write the metrics and notify, as ``monitoring`` asks; warn (once each) on a failure.
    ``alerts``: what the run found wrong though it succeeded, notified as a warning."""
    if monitoring.metrics_file is not None:
        try:
            _write_metrics(monitoring.metrics_file, db, metrics.Run(command, ok, time.time()))
        except (OSError, SnapvolError) as err:
            reporter.warn(f"the metrics file {monitoring.metrics_file} was not written: {err}")
    urls = notify.urls_from_env()
    alerted = ok and bool(alerts)
    if (urls or monitoring.notify_config is not None) and (
        not ok or alerted or monitoring.notify_success
    ):
        host = socket.gethostname()
        outcome = "FAILED" if not ok else "needs a look" if alerted else "succeeded"
        title = f"snapvol {command} {outcome} on {host}"
        body = why if not ok else "\n".join(alerts) if alerted else "done"
        kind = "failure" if not ok else "warning" if alerted else "success"
        try:
            missed = notify.send(urls, monitoring.notify_config, title, body, kind)
        except SnapvolError as err:
            reporter.warn(f"no notification was sent: {err.message}")
            return
        if missed:
            reporter.warn(f"{missed} notification target(s) could not be reached")


def _write_metrics(path: Path, db: Path, run: metrics.Run) -> None:
    store = Store.open(db, create=False) if db.exists() else None
    try:
        metrics.update(path, store, run)
    finally:
        if store is not None:
            store.close()
