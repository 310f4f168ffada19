"""The pod lane: a claim read and written through a helper pod's exec stream.

It implements ``snapvol.volume.lane.Lane`` over a running helper pod (``helper_pod``): ``tar``
in the pod writes the claim to stdout, which the API streams here and ``ScannedStream`` records
and hashes on the way into the archive pipeline, as it does for Docker's archive stream. A
restore streams the archive to ``tar -x`` on the pod's stdin, each member checked before it is
sent. ``find`` in the pod counts the entries beside a snapshot, so that an archive missing any
is never recorded (tar leaves out sockets, which it names).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from snapvol.background import Background
from snapvol.errors import IncompatibleError, IntegrityError, OperationFailed, SnapvolError
from snapvol.kube.client import Kube
from snapvol.kube.execstream import ExecOutput, feed
from snapvol.kube.helper_pod import HELPER_MOUNT
from snapvol.pipeline.members import BLOCKDEV, CHARDEV, Member, normalize
from snapvol.pipeline.tarscan import ScannedStream, TarFormatError
from snapvol.volume.lane import Recording, read_back

TAR_OUT = ["tar", "-C", HELPER_MOUNT, "-cf", "-", "."]
TAR_IN = ["tar", "-C", HELPER_MOUNT, "-xpf", "-", "--numeric-owner"]
# A helper that is not root cannot set the mode and times of the claim's root (a volume's
# root is root's, fsGroup's group-writable): tar says so for "." and exits 2. Those two
# complaints alone are let pass (the root keeps its own, as the read-back expects); any other
# fails the write.
TAR_IN_AS_OWNER = [
    "sh",
    "-c",
    f"err=$({shlex.join(TAR_IN)} 2>&1 >/dev/null); rc=$?; "
    "other=$(printf '%s\\n' \"$err\" | grep -v -e '^tar: \\.: Cannot utime: ' "
    "-e '^tar: \\.: Cannot change mode to ' -e '^tar: Exiting with failure status' -e '^$'); "
    'if [ "$rc" -eq 0 ] || { [ "$rc" -eq 2 ] && [ -z "$other" ]; }; then exit 0; fi; '
    'printf \'%s\\n\' "$err" >&2; exit "$rc"',
]
EMPTY = ["find", HELPER_MOUNT, "-mindepth", "1", "-delete"]
CENSUS = [
    "sh",
    "-c",
    f"cd {HELPER_MOUNT} && find . -mindepth 1 ! -type s -print0 | tr -cd '\\000' | wc -c"
    " && find . -mindepth 1 -type s -print0",
]
USAGE = ["sh", "-c", f"du -s -B1 {HELPER_MOUNT} | cut -f1; find {HELPER_MOUNT} -mindepth 1 | wc -l"]


def parse_census(out: str) -> tuple[int, list[str]]:
    """``CENSUS``'s output: the count of entries (sockets aside), then the sockets."""
    count, _, rest = out.partition("\n")
    return int(count), [normalize(p) for p in rest.split("\0") if p]


@dataclass(frozen=True)
class PodLane:
    kube: Kube
    pod: str  # a running helper pod that mounts the claim at HELPER_MOUNT
    namespace: str
    claim: str
    # The helper's user and group when it is not root (Pod Security ``restricted``): it can
    # give files no other owner, and make no device node.
    owner: tuple[int | None, int | None] | None = None

    @property
    def name(self) -> str:
        return "pod"

    def _out(self, command: list[str], what: str) -> ExecOutput:
        return ExecOutput(self.kube.exec(self.pod, self.namespace, command), what)

    def run(self, command: list[str], what: str) -> str:
        """A short command's stdout (OperationFailed unless it exits 0)."""
        return b"".join(self._out(command, what)).decode("utf-8", "surrogateescape")

    @contextlib.contextmanager
    def source(self) -> Iterator[Recording]:
        what = f"reading claim {self.claim} with tar in pod {self.pod}"
        yield ScannedStream(self._out(TAR_OUT, what))

    def census(self) -> _Count:
        return _Count(self)

    def usage(self) -> tuple[int | None, int | None]:
        try:
            lines = self.run(USAGE, "measuring the claim").split()
            if len(lines) >= 2:
                return int(lines[0]), int(lines[1])
        except (SnapvolError, ValueError):
            pass
        return None, None

    def refuse_unwritable(self, members: Sequence[Member]) -> str | None:
        if self.owner is not None:
            self._refuse_other_owners(members, *self.owner)
        with_xattrs = sum(1 for m in members if m.xattrs)
        if with_xattrs:
            return (
                f"{with_xattrs} file(s) have extended attributes, which tar in the helper pod "
                "does not restore"
            )
        return None

    def refuse_unreplaceable(self, held: Sequence[Member]) -> None:
        """A helper that is not root: refuse, before anything changes, a claim holding entries
        of another owner (``held``: its safety copy's), which emptying it could not delete and
        a rollback could not put back."""
        if self.owner is not None:
            self._refuse_other_owners(held, *self.owner, what="empty or put back")

    def _refuse_other_owners(
        self,
        members: Sequence[Member],
        user: int | None,
        group: int | None,
        *,
        what: str = "restore",
    ) -> None:
        """A helper that is not root writes every entry as ``user:group``: refuse, before
        anything changes, a snapshot whose entries it could not give their owners."""
        if user is None or group is None:
            raise IncompatibleError(
                f"the helper for claim {self.claim} cannot run as root here (Pod Security) and "
                "the workload names no runAsUser and fsGroup, so what owners it would write is "
                "unknown; nothing was changed"
            )
        other = [
            m
            for m in members
            # the claim's own directory is kept, not made: its owner stays
            if m.path != "." and ((m.uid, m.gid) != (user, group) or m.type in (CHARDEV, BLOCKDEV))
        ]
        if other:
            first = other[0]
            raise IncompatibleError(
                f"the helper for claim {self.claim} cannot run as root here (Pod Security), and "
                f"as the workload's user ({user}:{group}) it cannot {what} {len(other)} "
                f"entries owned by others or device nodes (first: {first.path!r}, "
                f"{first.uid}:{first.gid}); nothing was changed"
            )

    def replace(self, tar: Iterable[bytes], check: Callable[[Member], None]) -> dict[str, str]:
        self.run(EMPTY, f"emptying claim {self.claim}")
        checked = ScannedStream(tar, check=check, hash_files=False)
        command = TAR_IN if self.owner is None else TAR_IN_AS_OWNER
        channel = self.kube.exec(self.pod, self.namespace, command, stdin=True)
        try:
            feed(channel, checked, f"writing claim {self.claim} with tar in pod {self.pod}")
        except TarFormatError as err:
            raise IntegrityError(f"the archive's tar stream is malformed: {err}") from err
        return {}

    def landed(
        self, advance: Callable[[int], None], known: Mapping[str, str] | None = None
    ) -> list[Member]:
        return read_back(self, advance)

    def carried(self, member: Member) -> Member:
        """tar's default format keeps times in whole seconds and no extended attributes."""
        return replace(member, mtime_ns=member.mtime_ns // 10**9 * 10**9, xattrs=())

    def host_path(self, relative: str) -> Path | None:
        return None


class _Count:
    """The claim's entries counted by ``find`` in the pod beside the stream, then compared."""

    def __init__(self, lane: PodLane) -> None:
        self._counting = Background(
            lambda: parse_census(lane.run(CENSUS, f"counting the entries of claim {lane.claim}"))
        )

    def left_out(self, recording: Recording) -> list[str]:
        expected, sockets = self._counting.result()
        found = sum(1 for m in recording.members if m.path != ".")
        if found != expected:
            raise OperationFailed(
                f"tar in the helper pod gave {found} of the claim's {expected} entries; "
                "nothing was recorded"
            )
        return sockets
