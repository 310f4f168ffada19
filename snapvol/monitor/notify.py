"""Notifications through Apprise (https://github.com/caronc/apprise): one message per run that
failed (and, when asked, per run that succeeded), to every URL configured.

The URLs hold tokens and passwords: they come from the environment (``SNAPVOL_NOTIFY``) or an
Apprise configuration file readable by its owner only, never from process arguments, and neither
they nor Apprise's own log lines (which name them) are ever printed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from snapvol.errors import UsageError


def urls_from_env(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """``SNAPVOL_NOTIFY``: Apprise URLs separated by spaces or newlines."""
    env = os.environ if environ is None else environ
    return env.get("SNAPVOL_NOTIFY", "").split()


def check_config(path: Path) -> None:
    """The configuration holds secrets: it must be a file only its owner can read."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise UsageError(f"notification configuration {path}: {err.strerror or err}") from err
    if not stat.S_ISREG(mode) or mode & 0o077:
        raise UsageError(
            f"notification configuration {path} must be a file only its owner can read "
            f"(chmod 600 {path})"
        )


def send(urls: Sequence[str], config: Path | None, title: str, body: str, kind: str) -> int:
    """Send the message (``kind``: failure, warning or success) to every target; returns how
    many targets it did not reach."""
    import logging

    import apprise

    quiet = logging.getLogger("apprise")
    quiet.handlers[:] = [logging.NullHandler()]
    quiet.propagate = False
    targets = apprise.Apprise()
    for url in urls:
        targets.add(url)
    if config is not None:
        check_config(config)
        loaded = apprise.AppriseConfig()
        loaded.add(str(config))
        targets.add(loaded)
    total = len(targets)
    if total == 0:
        return len(urls) + (1 if config is not None else 0)  # none could be read
    notify_type = {
        "failure": apprise.NotifyType.FAILURE,
        "warning": apprise.NotifyType.WARNING,
    }.get(kind, apprise.NotifyType.SUCCESS)
    missed = 0
    for target in targets:
        if not target.notify(body=body, title=title, notify_type=notify_type):
            missed += 1
    return missed
