"""Where archives are kept: the ``Destination`` interface and today's one destination, the local
backup directory (``LocalDirectory``).

A destination is asked where a new archive goes, where a recorded one can be read, and to delete
a record's archive. It deletes only what ``archive_name`` recognises as snapvol's own file for the
record (``<name>.<id><suffix>``, with the record's own name and id), and only in itself: the path
a record holds names a file, never a place to delete in. A remote repository is one more module
implementing the same protocol.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Protocol

from snapvol.errors import UsageError
from snapvol.names import archive_filename, validate_name
from snapvol.pipeline.archive import ARCHIVE_SUFFIXES, PARTIAL_SUFFIX, ensure_private_dir


class Recorded(Protocol):
    """What a destination reads of a snapshot's record (``store.Snapshot`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str: ...


class Destination(Protocol):
    """A place that holds snapshots' archives."""

    def prepare(self) -> None:
        """Make the place ready to receive archives (created if missing, owner-only)."""

    def location(self, filename: str) -> str:
        """Where the archive ``filename`` goes: the path its record keeps."""

    def find(self, record: Recorded) -> str | None:
        """Where this destination holds the record's archive; None if it does not."""

    def remove(self, record: Recorded) -> bool:
        """Delete the record's archive and its partial file, here only; whether one was removed."""

    def partials(self) -> list[str]:
        """The names of partial archives here: writes in progress, or left by interrupted runs."""

    def remove_partial(self, name: str) -> bool:
        """Delete the partial archive ``name`` here; whether it was there."""


_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def archive_name(record: Recorded) -> str | None:
    """The file name snapvol gave this snapshot's archive, read from its record, or None when the
    record names no file of ours: ``<name>.<id><suffix>``, with the record's own name and id and
    one of snapvol's suffixes. Only such a file, in the current destination, is ever deleted.
    """
    if not record.path or not _ID.fullmatch(record.id):
        return None
    try:
        validate_name(record.name)
    except UsageError:
        return None
    name = Path(record.path).name
    for suffix in ARCHIVE_SUFFIXES:
        if name == archive_filename(record.name, record.id, suffix):
            return name
    return None


def partial_name(name: str) -> str:
    """The name an archive has while it is written (``archive`` renames it when complete)."""
    return name + PARTIAL_SUFFIX


class LocalDirectory:
    """The backup directory on this machine. Every file operation goes through a descriptor of
    the directory opened without following a link: never through a symbolic link, never
    anywhere else."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        ensure_private_dir(self.directory)

    def location(self, filename: str) -> str:
        return str(self.directory.resolve() / _plain(filename))

    def find(self, record: Recorded) -> str | None:
        name = archive_name(record)
        if name is None or not self.holds(name):
            return None
        return str(self.directory.resolve() / name)

    def remove(self, record: Recorded) -> bool:
        """The recorded path decides nothing but the file name, and only if it is snapvol's own
        naming for this record: a record pointing elsewhere (a copied store, a hand-edited row)
        deletes nothing outside this directory."""
        name = archive_name(record)
        if name is None:
            return False
        removed = self.unlink(name)
        return self.unlink(partial_name(name)) or removed

    def partials(self) -> list[str]:
        return [n for n in self.names() if n.endswith(PARTIAL_SUFFIX)]

    def remove_partial(self, name: str) -> bool:
        if not name.endswith(PARTIAL_SUFFIX):
            raise ValueError(f"not a partial archive: {name!r}")
        return self.unlink(name)

    # --- the directory, through a descriptor ---

    def _open(self) -> int | None:
        """A descriptor of the directory (resolved), opened without following a link; None if
        it does not exist."""
        try:
            return os.open(
                self.directory.resolve(),
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
            )
        except (FileNotFoundError, NotADirectoryError):
            return None

    def names(self) -> list[str]:
        """The names in the directory, sorted (none if it does not exist)."""
        fd = self._open()
        if fd is None:
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def holds(self, name: str) -> bool:
        """Whether the directory holds a regular file ``name`` itself (a link does not count)."""
        fd = self._open()
        if fd is None:
            return False
        try:
            return stat.S_ISREG(os.stat(_plain(name), dir_fd=fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)

    def unlink(self, name: str) -> bool:
        """Delete the regular file ``name`` in the directory; whether it was there. A link (or
        anything but a regular file) by that name is left alone: snapvol never writes one."""
        fd = self._open()
        if fd is None:
            return False
        try:
            info = os.stat(_plain(name), dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                return False
            os.unlink(name, dir_fd=fd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)


def _plain(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")
    return name
