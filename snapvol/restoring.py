"""What a restore starts from, decided before any container is looked up: the snapshot, checked,
and which kind of restore puts it back."""

from __future__ import annotations

from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.store import Snapshot


def restorable(snap: Snapshot, backup_dir: Path) -> Snapshot:
    """The snapshot as a restore reads it (its archive found in ``backup_dir`` first, see
    ``lifecycle.located``), refused now if it cannot be restored: before its container is
    looked up, locked or stopped. The restore checks it again, with its archive's SHA-256."""
    snap = lifecycle.located(snap, backup_dir)
    lifecycle.check_restorable(snap)
    return snap


def archive_missing(snap: Snapshot, backup_dir: Path) -> bool:
    """Whether the snapshot's archive is neither in ``backup_dir`` nor at its recorded path:
    a restore then fetches it from the repository, when one is given."""
    return not Path(lifecycle.located(snap, backup_dir).path).is_file()


def is_logical(snap: Snapshot | None) -> bool:
    """Whether a database is restored (a logical snapshot, or a dump file: no snapshot) rather
    than a volume."""
    return snap is None or snap.kind == "logical"  # pg.logical.KIND, not imported: it is heavy
