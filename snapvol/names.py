"""Snapshot ids and names: short typeable ids, validated human names, archive file names."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from snapvol.errors import UsageError

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
ID_LENGTH = 8
MIN_ID_PREFIX = 4
"""The shortest id prefix accepted: `restore 9` must never mean "whichever id starts with 9"."""


def new_id() -> str:
    """A short random id (8 hex digits): typeable; prefixes of MIN_ID_PREFIX or more work too."""
    return secrets.token_hex(ID_LENGTH // 2)


def validate_name(name: str) -> str:
    """Names are letters, digits, '.', '_' and '-', at most 128, no leading dot or separator."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid snapshot name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.')"
        )
    return name


def default_name(container: str, kind: str, when: datetime) -> str:
    """``pc_db-logical-20261128-093000``: the container, the kind and a UTC timestamp."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", container).lstrip(".") or "snapshot"
    return f"{safe}-{kind}-{when:%Y%m%d-%H%M%S}"


def archive_filename(name: str, snapshot_id: str, suffix: str) -> str:
    """The archive's file name: the snapshot's name and id, so it is unique and recognisable."""
    return f"{name}.{snapshot_id}{suffix}"
