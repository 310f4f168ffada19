"""A staging directory beside a volume's directory, and the exchange that puts it in its place.

A staged restore (``snapvol.volume.staged``) fills a new directory next to Docker's
``<volume>/_data`` while the service keeps running, then swaps the two names in one
``renameat2(RENAME_EXCHANGE)``: there is never a moment without ``_data``, and never a
half-written one. The directory is named ``snapvol-staging-<pid>-<8 hex digits>``, and a marker
in the runtime directory (``snapvol.runtime.run_dir``) names it before it is created, so that
what a killed run leaves (a copy being filled, or the previous contents once swapped out) is
found and removed: by the recovery every command starts with (``remove_leftovers``), or by the
next staged restore of that volume (``remove_strays``). A directory is snapvol's own only if its
name says so and its process is gone; nothing else is ever removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from snapvol.errors import DiskFullError, OperationFailed
from snapvol.output import Reporter, human_bytes
from snapvol.runtime import pid_alive, run_dir, started_after

PREFIX = "snapvol-staging-"
_NAME = re.compile(r"snapvol-staging-([0-9]+)-[0-9a-f]{8}(-probe)?")
_MARKER_SUFFIX = ".staging"
_PROBE_SUFFIX = "-probe"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_SELINUX = "security.selinux"


def _owner_gone(pid: int, path: Path) -> bool:
    """Whether the run that made ``path`` (process ``pid``) is over: the pid is dead, or taken
    by a process that started after ``path`` last changed (so after its creator made it)."""
    try:
        changed = datetime.fromtimestamp(os.lstat(path).st_mtime, UTC)
    except FileNotFoundError:
        changed = datetime.now(UTC)
    return not pid_alive(pid) or started_after(pid, changed)


@dataclass(frozen=True)
class Staging:
    """A staging directory of this process, and its marker in the runtime directory."""

    path: Path
    marker: Path

    @classmethod
    def create(cls, parent: Path) -> Staging:
        """A new, empty directory (mode 0700) in ``parent``; its marker is written first."""
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        marker = run_dir() / f"{name}{_MARKER_SUFFIX}"
        marker.write_text(f"{parent / name}\n")
        try:
            os.mkdir(parent / name, 0o700)
        except BaseException:
            marker.unlink(missing_ok=True)
            raise
        return cls(parent / name, marker)

    @property
    def probe(self) -> Path:
        return self.path.with_name(self.path.name + _PROBE_SUFFIX)

    def remove(self) -> None:
        """Remove the directory (whatever it holds now) and its marker."""
        for path in (self.probe, self.path):
            _remove_tree(path)
        self.marker.unlink(missing_ok=True)


def _remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, never following a symbolic link."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)  # descriptor-based on Linux: links are removed, not followed
    else:
        os.unlink(path)


def exchange(first: Path, second: Path) -> None:
    """Swap two entries of one directory atomically (``renameat2`` with ``RENAME_EXCHANGE``).

    ``OSError``: EINVAL where the kernel or filesystem cannot (ENOSYS without the call), EXDEV
    across filesystems, EBUSY on a mount point; nothing was changed then."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(first))
    done = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def _unescaped(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (space, tab, newline, backslash as octal)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounts_at_or_below(directory: Path) -> list[str]:
    """The mount points at ``directory`` or below it, in this process's view. ``os.path.ismount``
    misses a bind mount from the same filesystem, and whatever is mounted below the volume's
    previous contents would be removed with them."""
    top = os.path.realpath(directory)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            for line in info:
                fields = line.split(" ")
                if len(fields) > 4:
                    point = _unescaped(fields[4])
                    if point == top or point.startswith(top.rstrip("/") + "/"):
                        found.append(point)
    except OSError:
        return [top]  # cannot tell: as if it were one
    return found


def usable_beside(directory: Path) -> bool:
    """Whether a staged copy can replace ``directory``: it is a real directory with no mount at
    or below it, on the same filesystem as its parent, the parent is writable here and the
    exchange works there (tried on two empty directories of this process)."""
    parent = directory.parent
    try:
        info, parent_info = os.lstat(directory), os.lstat(parent)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_dev != parent_info.st_dev:
        return False
    if os.path.ismount(directory) or mounts_at_or_below(directory):
        return False
    if not os.access(parent, os.W_OK | os.X_OK):
        return False
    try:
        staged = Staging.create(parent)
    except OSError:
        return False
    try:
        os.mkdir(staged.probe, 0o700)
        exchange(staged.path, staged.probe)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            staged.remove()
    return True


def keep_host_label(directory: Path, staged: Path) -> None:
    """Give ``staged`` the SELinux label of ``directory``: the host's, not the volume's data
    (a restore keeps it on the root it rewrites, and the archive's root may not set one)."""
    try:
        label = os.getxattr(directory, _SELINUX, follow_symlinks=False)
    except OSError:
        return  # none, or no SELinux here
    with contextlib.suppress(OSError):
        os.setxattr(staged, _SELINUX, label, follow_symlinks=False)


def check_space(parent: Path, raw_bytes: int, entries: int, volume: str) -> None:
    """Refuse, before anything is read, a staged copy that cannot fit beside the volume: its
    raw size plus a block per entry, and an inode per entry."""
    info = os.statvfs(parent)
    need = raw_bytes + entries * info.f_bsize
    free = info.f_bavail * info.f_frsize
    if free < need:
        raise DiskFullError(
            f"not enough space beside volume {volume} for the restored copy "
            f"({human_bytes(need)} needed, {human_bytes(free)} free in {parent}); nothing was "
            "changed"
        )
    if info.f_files and info.f_favail < entries:
        raise DiskFullError(
            f"not enough inodes beside volume {volume} for the restored copy ({entries} "
            f"needed, {info.f_favail} free in {parent}); nothing was changed"
        )


def remove_strays(parent: Path, reporter: Reporter) -> None:
    """Remove the staging directories in ``parent`` (a volume's directory) that a killed run
    left: named so by snapvol, their process gone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in sorted(names):
        found = _NAME.fullmatch(name)
        path = parent / name
        if found is None or not _owner_gone(int(found[1]), path):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                _remove_tree(path)
                reporter.warn(f"removed {path}, left by an interrupted restore")


def remove_leftovers(reporter: Reporter) -> None:
    """Remove what killed staged restores of this environment left: each marker whose process
    is gone names a staging directory (and its probe), which is removed with the marker."""
    try:
        markers = sorted(run_dir().glob(f"{PREFIX}*{_MARKER_SUFFIX}"))
    except (OSError, OperationFailed):
        return  # no runtime directory of ours: no marker either (and no reason to fail here)
    for marker in markers:
        name = marker.name.removesuffix(_MARKER_SUFFIX)
        found = _NAME.fullmatch(name)
        if found is None or found[2] or not _owner_gone(int(found[1]), marker):
            continue
        try:
            path = Path(marker.read_text().strip())
        except OSError:
            continue
        if not path.is_absolute() or path.name != name:
            continue  # not a marker snapvol wrote: leave it and what it names alone
        staged = Staging(path, marker)
        existed = os.path.lexists(path)
        try:
            staged.remove()
        except OSError as err:
            reporter.warn(f"could not remove {path}, left by an interrupted restore: {err}")
            continue
        if existed:
            reporter.warn(f"removed {path}, left by an interrupted restore")
