"""Small builders the unit tests share: a tar member record, a directory tree as a value."""

from __future__ import annotations

import os
from pathlib import Path

from snapvol.pipeline.members import Member


def member(path: str, type: str = "file", **fields: object) -> Member:
    """A member record with neutral metadata; ``fields`` override any of it."""
    base: dict[str, object] = {"size": 0, "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0}
    return Member(path=path, type=type, **{**base, **fields})  # type: ignore[arg-type]


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file contents, link targets, directories."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_bytes()
    return found
