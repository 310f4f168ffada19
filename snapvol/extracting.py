"""Writing files out of a snapshot into a directory, without touching any container.

The archive is checked against its recorded SHA-256 first, as a restore checks it; every member
is checked against the store before it is written (nothing outside the directory, nothing the
store does not know); every file written is read back and compared with its recorded SHA-256.
Nothing that exists is overwritten: a volume's files go into an empty (or new) directory, a
dump into a new file. On any failure what this run wrote is removed again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import IntegrityError, OperationFailed, UsageError
from snapvol.output import Reporter
from snapvol.pipeline import archive
from snapvol.pipeline.members import BLOCKDEV, CHARDEV, HARDLINK, REGULAR, Member, normalize
from snapvol.volume import hostpath, hosttar
from snapvol.volume.restore import HeaderCheck

_DUMP_SUFFIX = {"custom": ".dump", "plain": ".sql"}


@dataclass(frozen=True)
class Extracted:
    where: Path  # the directory (volume) or the file (dump) written
    files: int  # regular files written
    bytes: int  # their size


def selection(members: Sequence[Member], paths: Sequence[str]) -> Callable[[Member], bool]:
    """Which members ``paths`` (paths inside the volume; a directory brings what is below it)
    ask for, with the directories above them and the files their hard links name. A path the
    snapshot does not hold is a usage error, before anything is written."""
    recorded = {m.path for m in members}
    asked = [normalize(p.lstrip("/")) or "." for p in paths]
    unknown = [p for p in asked if p not in recorded]
    if unknown:
        raise UsageError(f"the snapshot holds no {unknown[0]!r} (see `snapvol show --files`)")
    if not asked or "." in asked:
        return lambda _m: True
    wanted = {m.path for m in members if any(_within(m.path, p) for p in asked)}
    wanted |= {normalize(m.linkname) for m in members if m.path in wanted and m.type == HARDLINK}
    wanted |= {parent for path in list(wanted) for parent in _parents(path)}
    return lambda m: m.path in wanted


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _empty_dir(to: Path) -> bool:
    """Make sure ``to`` is a directory with nothing in it; True when this run made it."""
    if to.is_symlink() or (to.exists() and not to.is_dir()):
        raise UsageError(f"{to} is not a directory")
    if to.exists():
        if any(to.iterdir()):
            raise UsageError(f"{to} is not empty: extract writes into an empty or new directory")
        return False
    try:
        to.mkdir(mode=0o700, parents=True)
    except OSError as err:
        raise OperationFailed(f"cannot create {to}: {err.strerror or err}") from err
    return True


def extract_volume(
    store: Store, snap: Snapshot, paths: Sequence[str], to: Path, reporter: Reporter
) -> Extracted:
    """Write the members of volume snapshot ``snap`` that ``paths`` name (all: none given) into
    the empty or new directory ``to``. As root, owners and every attribute are kept; as
    another user, files are the user's and only ``user.`` attributes are written."""
    members = store.members(snap.id)
    wanted = selection(members, paths)
    root = os.geteuid() == 0
    devices = [m.path for m in members if m.type in (CHARDEV, BLOCKDEV) and wanted(m)]
    if devices and not root:
        asked = wanted
        wanted = lambda m: asked(m) and m.type not in (CHARDEV, BLOCKDEV)  # noqa: E731
        reporter.warn(
            f"{len(devices)} device node(s) left out (only root makes them), e.g. {devices[0]!r}"
        )
    lifecycle.check_archive(snap, reporter)
    made = _empty_dir(to)
    check = HeaderCheck({m.path: m for m in members})
    try:
        with reporter.transfer("extracting", snap.raw_bytes) as advance:
            chunks = archive.prefetch(archive.decompressed_chunks(Path(snap.path), advance))
            digests = hosttar.extract(to, chunks, check, wanted=wanted, owners=root)
        check.finish(Path(snap.path).name)
        files = [m for m in members if m.type == REGULAR and wanted(m)]
        for m in files:
            if digests.get(m.path) != m.sha256:
                raise IntegrityError(f"after extraction {m.path!r} does not match the snapshot")
    except BaseException:
        if made:
            shutil.rmtree(to, ignore_errors=True)
        else:
            hostpath.empty_dir(to)
        raise
    return Extracted(to, len(files), sum(m.size for m in files))


def extract_dump(snap: Snapshot, to: Path, reporter: Reporter) -> Extracted:
    """Write logical snapshot ``snap``'s dump, uncompressed, as a new file in directory ``to``
    (``pg_restore`` or ``psql`` read it)."""
    lifecycle.check_archive(snap, reporter)
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = to / f"{snap.name}.{snap.id}{_DUMP_SUFFIX.get(snap.format or '', '.dump')}"
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"{dest} exists: extract never overwrites a file") from None
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, reporter.transfer("extracting", snap.raw_bytes) as adv:
            for chunk in archive.decompressed_chunks(Path(snap.path), adv):
                out.write(chunk)
                size += len(chunk)
        if snap.raw_bytes is not None and size != snap.raw_bytes:
            raise IntegrityError(
                f"the dump holds {size} bytes uncompressed, the record says {snap.raw_bytes}"
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Extracted(dest, 1, size)
