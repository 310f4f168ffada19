"""The endpoint lane: a volume read and written through Docker's archive endpoint.

A helper container mounts the volume and is never started; the engine streams a tar of the
mount out of it (about 8x faster than a container's stdout) and extracts one into it. It works
with any engine and without root, and it is the only lane for volumes Docker mounts only while a
container uses them (driver options). The helper runs the target's own image, so nothing is
ever pulled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from snapvol.adapters.engine import Engine
from snapvol.background import Background
from snapvol.errors import IntegrityError, OperationFailed, SnapvolError, UsageError
from snapvol.pipeline.members import CAPABILITY, Member, normalize
from snapvol.pipeline.tarscan import ScannedStream, TarFormatError
from snapvol.volume.lane import Recording, read_back

HELPER_MOUNT = "/snapvol/data"

_CENSUS = (
    f"cd {HELPER_MOUNT} && find . -mindepth 1 ! -type s -print0 | tr -cd '\\000' | wc -c"
    " && find . -mindepth 1 -type s -print0"
)
_USAGE = f"du -s -B1 {HELPER_MOUNT} | cut -f1; find {HELPER_MOUNT} -mindepth 1 | wc -l"


def endpoint_census(engine: Engine, image: str, volume_name: str) -> tuple[int, list[str]]:
    """How many entries (sockets aside) the volume holds, and its sockets, counted by ``find``
    in a helper: Docker's archive endpoint silently leaves out what it cannot stat (paths
    longer than PATH_MAX) and sockets, so its archive is checked against this count."""
    try:
        code, out = engine.run_helper(
            image,
            volume_name,
            HELPER_MOUNT,
            ["sh", "-c", _CENSUS],
            read_only=True,
            timeout=600,
            user="0:0",
        )
        count, _, rest = out.partition("\n")
        if code != 0:
            raise ValueError(out.strip()[-200:])
        return int(count), [normalize(p) for p in rest.split("\0") if p]
    except (SnapvolError, ValueError) as err:
        raise OperationFailed(
            f"could not count the entries of volume {volume_name} with find in a helper "
            f"container ({err}), so a complete archive cannot be told from a short one; "
            "read the volume on this host instead (as root), or give the helper containers "
            "an image that has sh and find",
            retry_with={"reader": "host", "helper_image": ""},
        ) from err


class _Count:
    """The volume's entries counted by ``find`` beside the stream, then compared with it."""

    def __init__(self, engine: Engine, image: str, volume: str) -> None:
        self._counting = Background(lambda: endpoint_census(engine, image, volume))

    def left_out(self, recording: Recording) -> list[str]:
        expected, sockets = self._counting.result()
        found = sum(1 for m in recording.members if m.path != ".")
        if found != expected:
            raise OperationFailed(
                f"Docker's archive endpoint gave {found} of the volume's {expected} entries "
                "(it silently leaves out paths longer than PATH_MAX, 4096 bytes); "
                "nothing was recorded: read the volume on this host instead (as root)",
                retry_with={"reader": "host"},
            )
        return sockets


@dataclass(frozen=True)
class EndpointLane:
    engine: Engine
    volume: str
    # The image helper containers run (the target's own, unless one was given).
    image: str

    @property
    def name(self) -> str:
        return "endpoint"

    @contextlib.contextmanager
    def source(self) -> Iterator[Recording]:
        with self.engine.helper(self.image, self.volume, HELPER_MOUNT, read_only=True) as helper:
            yield ScannedStream(self.engine.archive_out(helper, HELPER_MOUNT))

    def census(self) -> _Count:
        return _Count(self.engine, self.image, self.volume)

    def usage(self) -> tuple[int | None, int | None]:
        try:
            code, out = self.engine.run_helper(
                self.image,
                self.volume,
                HELPER_MOUNT,
                ["sh", "-c", _USAGE],
                read_only=True,
                timeout=120,
                user="0:0",
            )
            lines = out.split()
            if code == 0 and len(lines) >= 2:
                return int(lines[0]), int(lines[1])
        except (SnapvolError, ValueError):
            pass
        return None, None

    def refuse_unwritable(self, members: Sequence[Member]) -> str | None:
        """Docker's archive endpoint drops an extended attribute whose value is empty (in pax an
        empty value means "unset") and reads back only ``security.capability``: refuse the
        first, say so for the rest."""
        empty = [m for m in members if any(not value for _, value in m.xattrs)]
        if empty:
            raise UsageError(
                f"{empty[0].path!r} has an extended attribute with an empty value, which "
                "Docker's archive endpoint would drop; restore it through the volume's "
                "directory on this host (as root); nothing was changed",
                retry_with={"reader": "host"},
            )
        unchecked = sum(1 for m in members if any(k != CAPABILITY for k, _ in m.xattrs))
        if unchecked:
            return (
                f"{unchecked} file(s) have extended attributes (ACLs, user.*) that the archive "
                "endpoint restores but cannot read back to check; a restore through the "
                "volume's directory on this host (as root) checks them"
            )
        return None

    def replace(self, tar: Iterable[bytes], check: Callable[[Member], None]) -> dict[str, str]:
        code, out = self.engine.run_helper(
            self.image,
            self.volume,
            HELPER_MOUNT,
            ["find", HELPER_MOUNT, "-mindepth", "1", "-delete"],
            read_only=False,
            user="0:0",
        )
        if code != 0:
            raise OperationFailed(f"emptying volume {self.volume} failed: {out.strip()[:200]}")
        checked = ScannedStream(tar, check=check, hash_files=False)
        with self.engine.helper(self.image, self.volume, HELPER_MOUNT, read_only=False) as helper:
            try:
                self.engine.archive_in(helper, HELPER_MOUNT, checked)
            except TarFormatError as err:
                raise IntegrityError(f"the archive's tar stream is malformed: {err}") from err
        return {}

    def landed(
        self, advance: Callable[[int], None], known: Mapping[str, str] | None = None
    ) -> list[Member]:
        return read_back(self, advance)

    def carried(self, member: Member) -> Member:
        """Docker's archive endpoint reports only the ``security.capability`` attribute and
        times in whole seconds, and its extraction sets times before 1970 and after 2262
        (beyond 64-bit nanoseconds) to 1970: those are not compared (see the README's lane
        table)."""
        seconds = member.mtime_ns // 10**9
        return replace(
            member,
            mtime_ns=seconds * 10**9 if 0 < seconds * 10**9 < 2**63 else -1,
            xattrs=tuple(kv for kv in member.xattrs if kv[0] == CAPABILITY),
        )

    def host_path(self, relative: str) -> Path | None:
        return None
