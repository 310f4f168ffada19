"""One operation per container at a time, across every snapvol process on the machine.

The lock is an flock(2) on a file named after the container's id, in one machine-wide directory
(``/run/lock/snapvol``) that no environment variable moves: a cron job, a login shell, another
user and another ``--db`` all meet on the same file. The kernel drops the lock when its holders
die, so a crashed run never blocks the next one. The file also says who holds it, so a refused
caller can name the running operation.

The directory is shared like /tmp (mode 1777), so it is opened as a hostile place: a symbolic
link, a FIFO or a file of a stranger where a lock file should be is refused, never followed or
used; a file is trusted when root, this user or a member of the ``docker`` group owns it (anyone
else could delete it under its holder). If the directory cannot be used, snapvol refuses rather
than lock somewhere private, where another environment would not see the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import hashlib
import json
import os
import pwd
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from snapvol.errors import LockedError, OperationFailed

# The system's lock directory (FHS); the first one that exists is used. Not configurable on
# purpose: every snapvol process on the machine must pick the same one.
SYSTEM_LOCK_DIRS = (Path("/run/lock"), Path("/var/lock"))
DIR_NAME = "snapvol"
DOCKER_GROUP = "docker"
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC  # a FIFO never blocks
_ATTEMPTS = 10  # a reader probing the lock holds it for microseconds: retry before refusing


@dataclass
class ContainerLock:
    path: Path
    fd: int
    last_written: float = 0.0  # when a holder last wrote the file, as we took it (0: never)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock (unless a watchdog still shares it)
            self.fd = -1


def lock_dir() -> Path:
    """The machine-wide directory of lock files (whether it exists yet or not)."""
    base = next((p for p in SYSTEM_LOCK_DIRS if p.is_dir()), None)
    if base is None:
        names = " or ".join(str(p) for p in SYSTEM_LOCK_DIRS)
        raise OperationFailed(f"no system lock directory ({names}): cannot lock the container")
    return base / DIR_NAME


def lock_path(container_id: str) -> Path:
    return lock_dir() / _file_name(container_id)


def acquire(container_id: str, container_name: str, operation: str) -> ContainerLock:
    """Take the container's lock now, or raise LockedError naming the operation that holds it."""
    path = lock_path(container_id)
    with _open_dir(path.parent) as dir_fd:
        for attempt in range(_ATTEMPTS):
            fd, writable = _open_lock(dir_fd, path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if attempt + 1 < _ATTEMPTS:
                    os.close(fd)
                    time.sleep(0.02)
                    continue
                holder = _describe_holder(fd)
                os.close(fd)
                raise LockedError(
                    f"another snapvol operation is running on {container_name}: {holder}; "
                    "try again when it ends"
                ) from None
            if _still_linked(dir_fd, path, fd):
                break
            os.close(fd)  # someone removed or replaced the file: lock the one that is there now
        else:
            raise OperationFailed(f"lock file {path} keeps being replaced; refusing to go on")
        info = os.fstat(fd)
        last_written = info.st_mtime if info.st_size else 0.0  # empty: no holder wrote it yet
        if writable:
            _describe_self(fd, container_name, operation)
        # Only once this holder has said who it is: a refused caller names it, not the last one.
        _sweep(dir_fd, keep=path.name)
    return ContainerLock(path, fd, last_written)


@contextlib.contextmanager
def holding(containers: Iterable[tuple[str, str]], operation: str) -> Iterator[list[ContainerLock]]:
    """Each ``(id, name)`` container's lock, taken once and in turn, all released on exit.

    When one is refused (LockedError), the ones already taken are released: all or none.
    """
    held: list[ContainerLock] = []
    try:
        for container_id, name in dict.fromkeys(containers):
            held.append(acquire(container_id, name, operation))
        yield held
    finally:
        for lock in held:
            lock.release()


# A container's lock file that no one took for this long is its own leftover (containers are
# created again, under new ids, by compose and by `podman kube play`): removed.
SWEEP_AFTER_S = 7 * 24 * 3600
_CONTAINER_FILE = re.compile(r"[0-9a-f]{1,64}\.lock")


def _sweep(dir_fd: int, keep: str) -> None:
    """Remove this user's container lock files that no one took for ``SWEEP_AFTER_S``, each
    while holding its lock (one held, by a run or the watchdog it passed its lock to, stays), so
    that a process which opened it meanwhile finds it replaced (``_still_linked``) and opens the
    new one. Best effort: a file that cannot be checked stays, and nothing here fails the caller.
    """
    cutoff = time.time() - SWEEP_AFTER_S
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return
    for name in names:
        if name == keep or not _CONTAINER_FILE.fullmatch(name):
            continue
        with contextlib.suppress(OSError):
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                continue
            if info.st_mtime > cutoff:
                continue
            fd = os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _still_linked(dir_fd, Path(name), fd) and os.fstat(fd).st_mtime <= cutoff:
                    os.unlink(name, dir_fd=dir_fd)
            finally:
                os.close(fd)


def is_held(container_id: str) -> bool:
    """Whether some process holds the container's lock right now.

    True also when the lock cannot be checked (the directory or the file is not usable): whoever
    asks (recovery) must not judge a running operation by a lock it cannot see.
    """
    try:
        path = lock_path(container_id)
        with _open_dir(path.parent, create=False) as dir_fd:
            fd = os.open(path.name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return False  # no lock file (or no directory yet): nobody ever locked it since boot
    except (OSError, OperationFailed):
        return True
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: never blocks another reader
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


# --- the directory and the file ------------------------------------------------------------------


def _file_name(container_id: str) -> str:
    if re.fullmatch(r"[0-9a-f]{1,64}", container_id):
        return f"{container_id}.lock"
    # Not an engine's id (a damaged or hostile store): never let it name a path.
    return f"x{hashlib.sha256(container_id.encode()).hexdigest()}.lock"


def _trusted(uid: int) -> bool:
    """Whether ``uid`` may own a lock directory or file: root, this user, or a docker user.

    The owner of a lock file (or of the directory) can delete it while someone holds it, and
    the next process would lock a new file: only users who can run snapvol anyway may own one.
    """
    if uid in (0, os.geteuid()):
        return True
    try:
        group = grp.getgrnam(DOCKER_GROUP)
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return user.pw_gid == group.gr_gid or user.pw_name in group.gr_mem


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


@contextlib.contextmanager
def _open_dir(path: Path, create: bool = True) -> Iterator[int]:
    """The lock directory, created 1777 like /tmp, opened without following a symbolic link.

    Without ``create`` a missing directory raises FileNotFoundError: a reader (``ls`` run by
    anyone) never creates it, so it never owns it.
    """
    parent = os.stat(path.parent)
    if not _trusted(parent.st_uid) or (
        parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX
    ):
        raise OperationFailed(
            f"{path.parent} is writable by others without the sticky bit or owned by "
            f"{_owner(parent.st_uid)}: cannot keep locks there safely"
        )
    created = False
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            created = True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise OperationFailed(
            f"lock directory {path} is not a directory (a symbolic link?): {err.strerror}; "
            "remove it (as root) and try again"
        ) from None
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and (created or stat.S_IMODE(info.st_mode) != 0o1777):
            os.fchmod(fd, 0o1777)  # every user creates lock files here; none deletes another's
            info = os.fstat(fd)
        if not _trusted(info.st_uid) and os.geteuid() == 0 and create:
            # Made by a user outside the docker group (a rootless Docker user, say): root takes
            # it over, so that its maker can no longer remove other users' lock files.
            os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o1777)
            info = os.fstat(fd)
        if not _trusted(info.st_uid):
            raise OperationFailed(
                f"lock directory {path} is owned by {_owner(info.st_uid)}, who could remove "
                "other users' locks; run snapvol once as root (it takes the directory over) or "
                "remove the directory, and try again"
            )
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise OperationFailed(
                f"lock directory {path} is writable by everyone without the sticky bit; "
                f"make it mode 1777 (as root: chmod 1777 {path})"
            )
        yield fd
    finally:
        os.close(fd)


def _open_lock(dir_fd: int, path: Path) -> tuple[int, bool]:
    """The lock file, opened (or created, 0666) without following a link; whether we can write it.

    It is opened without O_CREAT first: in a sticky directory the kernel refuses O_CREAT on
    another user's file (fs.protected_regular), even when the file exists and is readable.
    """
    for _ in range(_ATTEMPTS):
        writable = True
        try:
            try:
                fd = os.open(path.name, os.O_RDWR | _FILE_FLAGS, dir_fd=dir_fd)
            except PermissionError:
                fd = os.open(path.name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
                writable = False
        except FileNotFoundError:
            try:
                fd = os.open(
                    path.name,
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | _FILE_FLAGS,
                    0o666,
                    dir_fd=dir_fd,
                )
            except FileExistsError:
                continue  # another process created it first: open theirs
            os.fchmod(fd, 0o666)  # the umask would keep other users from describing themselves
        except OSError as err:
            why = "a symbolic link" if err.errno == errno.ELOOP else err.strerror
            raise OperationFailed(
                f"cannot use lock file {path}: {why}; remove it (as root)"
            ) from None
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif info.st_nlink != 1:
            problem = "a hard link to another file"
        elif not _trusted(info.st_uid):
            problem = f"owned by {_owner(info.st_uid)}, who could remove it while it is held"
        if problem:
            os.close(fd)
            raise OperationFailed(f"cannot use lock file {path}: {problem}; remove it (as root)")
        return fd, writable
    raise OperationFailed(f"cannot create lock file {path}: it keeps appearing and vanishing")


def _still_linked(dir_fd: int, path: Path, fd: int) -> bool:
    """Whether the file we locked is still the one at ``path`` (not removed or replaced)."""
    try:
        now = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _describe_self(fd: int, container_name: str, operation: str) -> None:
    info = {
        "pid": os.getpid(),
        "uid": os.geteuid(),
        "operation": operation,
        "container": container_name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def _describe_holder(fd: int) -> str:
    for _ in range(5):  # the holder may be writing its description right now
        raw = os.pread(fd, 4096, 0)
        try:
            info = json.loads(raw)
            user = "" if info.get("uid", os.geteuid()) == os.geteuid() else ", user "
            if user:
                user += _owner(int(info["uid"]))
            operation = _printable(str(info["operation"]))
            started = _printable(str(info["started"]))
            return f"`snapvol {operation}` (pid {int(info['pid'])}{user}, since {started})"
        except (ValueError, KeyError, TypeError, AttributeError):
            time.sleep(0.02)
    return "an operation that is starting"


def _printable(text: str) -> str:
    """Text from a file anyone may write: no control characters, bounded length."""
    return "".join(c if c.isprintable() else "?" for c in text)[:120]
