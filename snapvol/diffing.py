"""What changed between two volume snapshots, from the files the store recorded for each: no
archive is read and no container is touched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from snapvol.adapters.store import Snapshot
from snapvol.errors import UsageError
from snapvol.pipeline.members import HARDLINK, Member, normalize

_ASPECTS = (
    ("type", lambda m: m.type),
    ("content", lambda m: (m.size, m.sha256)),
    ("link", lambda m: normalize(m.linkname) if m.type == HARDLINK else m.linkname),
    ("mode", lambda m: m.mode),
    ("owner", lambda m: (m.uid, m.gid)),
    ("mtime", lambda m: m.mtime_ns),
    ("xattrs", lambda m: m.xattrs),
    ("device", lambda m: (m.devmajor, m.devminor)),
)
"""What of a file can change, in the order it is said; content is size and SHA-256."""


@dataclass(frozen=True)
class Changed:
    path: str
    aspects: tuple[str, ...]  # of _ASPECTS' names


@dataclass
class Diff:
    """Paths added, removed and changed from snapshot ``a`` to snapshot ``b``, sorted."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def volume_only(snap: Snapshot) -> Snapshot:
    if snap.kind != "volume":
        raise UsageError(
            f"snapshot {snap.id} is a {snap.kind} snapshot: diff compares the files of volume "
            "snapshots"
        )
    return snap


def diff(a: Sequence[Member], b: Sequence[Member]) -> Diff:
    """The files of ``b`` against those of ``a`` (the volume's root itself included)."""
    old = {m.path: m for m in a}
    new = {m.path: m for m in b}
    result = Diff(
        added=sorted(new.keys() - old.keys()),
        removed=sorted(old.keys() - new.keys()),
    )
    for path in sorted(old.keys() & new.keys()):
        aspects = tuple(name for name, key in _ASPECTS if key(old[path]) != key(new[path]))
        if aspects:
            result.changed.append(Changed(path, aspects))
    return result
