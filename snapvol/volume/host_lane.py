"""The host lane: a volume read and written straight through its directory on this host.

Several times faster than the archive endpoint (``snapvol.volume.hosttar`` does the tar in
process, numeric owners and modes kept); when it applies is ``snapvol.volume.hostpath``'s
decision for a Docker volume, ``snapvol.kube.node``'s for a Kubernetes claim whose data is a
directory on the node snapvol runs on. It sees everything a tar can hold, so its read-back
compares everything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from snapvol.pipeline.members import Member
from snapvol.volume import hostpath, hosttar
from snapvol.volume.lane import Lane, Recording


class _Skipped:
    """The host lane's stream holds every entry but the sockets, which it lists as it goes."""

    def left_out(self, recording: Recording) -> list[str]:
        assert isinstance(recording, hosttar.DirTar)
        return recording.skipped


@dataclass(frozen=True)
class HostLane:
    directory: Path
    # Writes the volume when its directory is not writable here (then a helper container does);
    # None: nothing else can, this host writes it (a Kubernetes node's, ``snapvol.kube.node``).
    fallback: Lane | None

    @property
    def name(self) -> str:
        return "host"

    @contextlib.contextmanager
    def source(self) -> Iterator[Recording]:
        yield hosttar.DirTar(self.directory)

    def census(self) -> _Skipped:
        return _Skipped()

    def usage(self) -> tuple[int | None, int | None]:
        return hostpath.usage(self.directory)

    def writes_here(self) -> bool:
        """Whether this host writes the directory itself (else the fallback lane writes it)."""
        return self.fallback is None or os.access(self.directory, os.W_OK)

    def refuse_unwritable(self, members: Sequence[Member]) -> str | None:
        if self.fallback is None or self.writes_here():
            return None
        return self.fallback.refuse_unwritable(members)

    def replace(self, tar: Iterable[bytes], check: Callable[[Member], None]) -> dict[str, str]:
        """The host lane reads each file back as soon as it is written, beside the
        extraction: the digests it returns spare ``landed`` a second read."""
        if self.fallback is not None and not self.writes_here():
            return self.fallback.replace(tar, check)
        hostpath.empty_dir(self.directory)
        return hosttar.extract(self.directory, tar, check)

    def landed(
        self, advance: Callable[[int], None], known: Mapping[str, str] | None = None
    ) -> list[Member]:
        found = hosttar.scan(self.directory, known=known)
        advance(sum(m.size for m in found.values()))
        return list(found.values())

    def carried(self, member: Member) -> Member:
        if self.fallback is None or self.writes_here():
            return member
        return self.fallback.carried(member)

    def host_path(self, relative: str) -> Path | None:
        return self.directory / relative
