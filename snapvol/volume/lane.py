"""The one interface through which a volume's files are read and written: a lane.

A lane reads the volume as a tar stream that records (and hashes) every member as it passes,
measures the volume, replaces its contents (each member checked before it is written) and reads
it back. Today there are two: ``host_lane`` (the volume's directory on this host) and
``endpoint_lane`` (Docker's archive endpoint on a helper container). Which one serves a volume
is decided once, when the target is resolved (``snapvol.volume.target``); a new engine (Podman,
Kubernetes) is one new module implementing ``Lane``, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from snapvol.pipeline.members import Member


class Recording(Protocol):
    """A tar stream of a volume; ``members`` is complete once it has been read to its end."""

    members: list[Member]

    def __iter__(self) -> Iterator[bytes]: ...


class Census(Protocol):
    """What a lane knows of the volume beside its tar stream (started before the stream)."""

    def left_out(self, recording: Recording) -> list[str]:
        """Once ``recording`` was read to its end: raise ``OperationFailed`` if it lacks entries
        of the volume; else the Unix sockets it left out (no tar holds one)."""
        ...


class Lane(Protocol):
    @property
    def name(self) -> str:
        """How the snapshot's record names the lane (its ``reader``)."""
        ...

    def source(self) -> AbstractContextManager[Recording]:
        """A tar stream of the volume that records (and hashes) every member as it passes."""
        ...

    def census(self) -> Census:
        """Start checking, beside a ``source`` read for a snapshot, that it misses nothing."""
        ...

    def usage(self) -> tuple[int | None, int | None]:
        """Bytes on disk and entries in the volume now (None when they cannot be measured)."""
        ...

    def refuse_unwritable(self, members: Sequence[Member]) -> str | None:
        """Raise if this lane cannot write ``members`` faithfully; a warning for what it
        writes but cannot read back to check (None: nothing to say)."""
        ...

    def replace(self, tar: Iterable[bytes], check: Callable[[Member], None]) -> dict[str, str]:
        """Empty the volume and extract ``tar`` into it; ``check`` sees each member before it
        is written. Returns SHA-256 digests of files already read back from disk (for
        ``landed``'s ``known``)."""
        ...

    def landed(
        self, advance: Callable[[int], None], known: Mapping[str, str] | None = None
    ) -> list[Member]:
        """Every member in the volume now, files hashed: what a snapshot of it would record."""
        ...

    def carried(self, member: Member) -> Member:
        """What of ``member`` this lane's read-back can see, to compare like with like."""
        ...

    def host_path(self, relative: str) -> Path | None:
        """Where ``relative`` (a path inside the volume) is on this host, when it is readable
        here; else None."""
        ...


def read_back(lane: Lane, advance: Callable[[int], None]) -> list[Member]:
    """``Lane.landed`` for a lane that sees the volume only through its own ``source``: the
    volume read through once more, every member recorded and hashed on the way."""
    from snapvol.pipeline import archive

    with lane.source() as source:
        for chunk in archive.prefetch(source):
            advance(len(chunk))
    return source.members
