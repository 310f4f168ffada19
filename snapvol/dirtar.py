"""Tar streams read straight out of a directory on this host, and extracted straight into one.

This is the host lane's data path. GNU tar in a pipe costs two extra copies of every byte (into
the pipe and out of it) and, on a snapshot, a second pass over the stream to hash each file; doing
it in-process reads each file once, hashes it and hands the same buffer to zstd. On two cores that
is the difference between beating ``tar | zstd`` and trailing it.

Streams are GNU-format tar, members in the order of ``tar --sort=name`` (depth first, names in byte
order), which is also the order of Docker's archive endpoint. Extraction never follows a symbolic
link: every directory on a member's path is opened with ``O_NOFOLLOW`` from the root down, so
nothing can land outside the root whatever the archive holds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from snapvol import archive
from snapvol.errors import DiskFullError, IntegrityError, OperationFailed
from snapvol.tarscan import (
    BLOCK,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Member,
    TarFormatError,
    TarScanner,
    normalize,
)

CHUNK = 1 << 20
_SMALL = 64 << 10  # pieces smaller than this are gathered into one chunk before they are passed on
_TAR_TYPES = {
    REGULAR: tarfile.REGTYPE,
    HARDLINK: tarfile.LNKTYPE,
    SYMLINK: tarfile.SYMTYPE,
    DIRECTORY: tarfile.DIRTYPE,
    FIFO: tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _listing(path: str, skip_errors: bool) -> Iterator[str]:
    try:
        return iter(sorted(os.listdir(path), key=os.fsencode))
    except OSError:
        if skip_errors:
            return iter(())
        raise


def walk(root: Path, *, skip_errors: bool = False) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry of ``root`` (itself first, as ``.``) with its ``lstat``, in tar's order.

    What vanishes meanwhile is skipped; with ``skip_errors`` (measuring a volume a service may
    still be changing) so is what cannot be listed or stat'ed.
    """
    top = str(root)
    yield ".", os.lstat(top)
    stack: list[tuple[str, Iterator[str]]] = [("", _listing(top, skip_errors))]
    while stack:
        prefix, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        rel = prefix + name
        try:
            st = os.lstat(os.path.join(top, rel))
        except FileNotFoundError:
            continue  # gone since the listing
        except OSError:
            if skip_errors:
                continue
            raise
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            stack.append((rel + "/", _listing(os.path.join(top, rel), skip_errors)))


def _kind(mode: int) -> str | None:
    for test, kind in (
        (stat.S_ISREG, REGULAR),
        (stat.S_ISDIR, DIRECTORY),
        (stat.S_ISLNK, SYMLINK),
        (stat.S_ISFIFO, FIFO),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
    ):
        if test(mode):
            return kind
    return None  # a socket: tar skips those too


class _Entries:
    """Turns ``walk``'s entries into members; the second name of an inode becomes a hard link."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._first: dict[tuple[int, int], str] = {}

    def __iter__(self) -> Iterator[tuple[Member, os.stat_result]]:
        for rel, st in walk(self.root):
            kind = _kind(st.st_mode)
            if kind is None:
                continue
            linkname = ""
            if kind == REGULAR and st.st_nlink > 1:
                first = self._first.setdefault((st.st_dev, st.st_ino), rel)
                if first != rel:
                    kind, linkname = HARDLINK, f"./{first}"
            elif kind == SYMLINK:
                linkname = os.readlink(os.path.join(self.root, rel))
            member = Member(
                path=rel,
                type=kind,
                size=st.st_size if kind == REGULAR else 0,
                mode=st.st_mode & 0o7777,
                uid=st.st_uid,
                gid=st.st_gid,
                mtime=int(st.st_mtime),
                linkname=linkname,
            )
            yield member, st


def _header(member: Member, st: os.stat_result) -> bytes:
    info = tarfile.TarInfo("." if member.path == "." else f"./{member.path}")
    info.type = _TAR_TYPES[member.type]
    info.mode, info.uid, info.gid = member.mode, member.uid, member.gid
    info.mtime, info.size, info.linkname = member.mtime, member.size, member.linkname
    if member.type in ("chardev", "blockdev"):
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


class DirTar:
    """A tar stream of ``root``, read from disk, with every member recorded (and hashed) on the way.

    ``members`` is complete once the stream has been read to its end. ``abort`` (any thread)
    makes the stream stop at the next chunk.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: list[Member] = []
        self._stopped = False

    def abort(self) -> None:
        self._stopped = True

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream()
        except OSError as err:  # not to be mistaken for a failure to write the archive
            where = err.filename or self.root
            raise OperationFailed(f"reading {where} failed: {err.strerror or err}") from err

    def _stream(self) -> Iterator[bytes]:
        out = bytearray()  # headers, padding and small files, gathered into chunks
        for member, st in _Entries(self.root):
            if self._stopped:
                return
            out += _header(member, st)
            if member.type == REGULAR:
                sha = hashlib.sha256()
                for piece in self._read(member, st):
                    sha.update(piece)
                    if len(piece) < _SMALL:
                        out += piece
                    else:
                        if out:
                            yield bytes(out)
                            out.clear()
                        yield piece
                    if len(out) >= CHUNK:
                        yield bytes(out)
                        out.clear()
                out += bytes((-member.size) % BLOCK)
                member = replace(member, sha256=sha.hexdigest())
            self.members.append(member)
        yield bytes(out + bytes(2 * BLOCK))

    def _read(self, member: Member, st: os.stat_result) -> Iterator[bytes]:
        """The file's content, exactly ``st.st_size`` bytes; an error if it changes meanwhile."""
        path = os.path.join(self.root, member.path)
        changed = OperationFailed(
            f"{member.path} changed while it was read; is another container using the volume?"
        )
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_ino != st.st_ino:
                raise changed
            left = st.st_size
            while left:
                piece = os.read(fd, min(CHUNK, left))
                if not piece:
                    raise changed
                left -= len(piece)
                yield piece
            if os.read(fd, 1) or os.fstat(fd).st_mtime_ns != st.st_mtime_ns:
                raise changed
        finally:
            os.close(fd)


def _sha256(path: Path) -> str:
    return archive.file_sha256(path)[0]


def scan(root: Path, workers: int = 2, known: Mapping[str, str] | None = None) -> dict[str, Member]:
    """Every member of ``root`` as a snapshot would record it; files hashed on ``workers`` threads,
    largest first so that no thread is left with the one big file at the end. ``known`` holds
    digests already read back from disk (by ``extract``), which are not computed again."""
    known = known or {}
    members = {member.path: member for member, _ in _Entries(root)}
    files = sorted(
        (m for m in members.values() if m.type == REGULAR and m.path not in known),
        key=lambda m: m.size,
        reverse=True,
    )
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapvol-scan") as pool:
        hashed = pool.map(lambda m: _sha256(root / m.path), files)
        digests = {m.path: digest for m, digest in zip(files, hashed, strict=True)}
    for path, member in members.items():
        if member.type == REGULAR:
            members[path] = replace(member, sha256=known.get(path) or digests[path])
    return members


def _parts(rel: str) -> list[str]:
    """The names along ``rel``; none may climb out of (or stay in place at) the root."""
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise IntegrityError(f"archive member path {rel!r} would leave the volume")
    return parts


class _Extractor:
    """Creates each member under ``root`` as the stream goes by; never follows a symbolic link."""

    def __init__(
        self, root: Path, check: Callable[[Member], None], written: Callable[[str], None]
    ) -> None:
        self.root = root
        self.check = check
        self.written = written  # told the path of each regular file once it is complete
        self.root_fd = os.open(root, _NOFOLLOW_DIR)
        self._cached: tuple[str, int] | None = None  # the last parent directory opened
        self._file = -1  # the regular file being written
        self._dirs: list[Member] = []  # their owner, mode and time are set last, deepest first

    def close(self) -> None:
        self._close_file()
        self._uncache()
        os.close(self.root_fd)

    def _close_file(self) -> None:
        if self._file >= 0:
            os.close(self._file)
            self._file = -1

    def _uncache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _dir(self, rel: str) -> int:
        """A descriptor of directory ``rel`` (``""``: the root), kept open for the next member."""
        if not rel:
            return self.root_fd
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1]
        fd = self._open_dir(rel)
        self._uncache()
        self._cached = (rel, fd)
        return fd

    def _open_dir(self, rel: str) -> int:
        """A new descriptor of directory ``rel``, opened from the root without following links."""
        fd = self.root_fd
        try:
            for part in _parts(rel):
                child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
                if fd != self.root_fd:
                    os.close(fd)
                fd = child
        except OSError as err:
            if fd != self.root_fd:
                os.close(fd)
            if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise IntegrityError(
                    f"archive member path {rel!r} is not a directory in the volume"
                ) from None
            raise
        return fd

    def _place(self, path: str) -> tuple[int, str]:
        _parts(path)
        parent, _, name = path.rpartition("/")
        return self._dir(parent), name

    def header(self, member: Member) -> None:
        self.check(member)  # raises before anything is created
        if member.path == ".":
            self._dirs.append(member)
            return
        fd, name = self._place(member.path)
        if member.type == DIRECTORY:
            os.mkdir(name, 0o700, dir_fd=fd)
            self._dirs.append(member)
        elif member.type == REGULAR:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._file = os.open(name, flags, 0o600, dir_fd=fd)
        elif member.type == SYMLINK:
            os.symlink(member.linkname, name, dir_fd=fd)
        elif member.type == HARDLINK:
            target = normalize(member.linkname)
            _parts(target)
            parent, _, src = target.rpartition("/")
            src_fd = self._open_dir(parent) if parent else self.root_fd
            try:
                os.link(src, name, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
            finally:
                if src_fd != self.root_fd:
                    os.close(src_fd)
        elif member.type == FIFO:
            os.mkfifo(name, 0o600, dir_fd=fd)
        else:
            raise IntegrityError(f"archive member {member.path!r} is a {member.type}: refused")

    def data(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self._file, view) :]

    def member(self, member: Member) -> None:
        """The member's data has all passed: give it its owner, mode and time."""
        times = (member.mtime * 10**9, member.mtime * 10**9)
        if member.type == REGULAR:
            os.fchown(self._file, member.uid, member.gid)
            os.fchmod(self._file, member.mode)  # after chown, which may clear set-id bits
            os.utime(self._file, ns=times)
            self._close_file()
            self.written(member.path)
        elif member.type in (SYMLINK, FIFO):
            fd, name = self._place(member.path)
            os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
            if member.type == FIFO:
                os.chmod(name, member.mode, dir_fd=fd)
            os.utime(name, ns=times, dir_fd=fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directories last (their mode may forbid writing into them), deepest first."""
        for member in reversed(self._dirs):
            fd = self.root_fd if member.path == "." else self._open_dir(member.path)
            try:
                os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode)
                times = (member.mtime * 10**9, member.mtime * 10**9)
                os.utime(fd, ns=times)
            finally:
                if fd != self.root_fd:
                    os.close(fd)


def extract(
    root: Path, chunks: Iterable[bytes], check: Callable[[Member], None], workers: int = 2
) -> dict[str, str]:
    """Extract a tar stream into the (empty) directory ``root``, keeping owners, modes and times.

    ``check`` sees every member before anything of it is created and raises to refuse it. Each
    regular file is read back from disk and hashed on ``workers`` threads as soon as it is
    closed, so that the restore's read-back check overlaps the extraction: returns those
    SHA-256 digests by path (for ``scan``).
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapvol-readback")
    pending: dict[str, Future[str]] = {}
    extractor = _Extractor(
        root, check, lambda path: pending.__setitem__(path, pool.submit(_sha256, root / path))
    )
    scanner = TarScanner(
        extractor.member, hash_files=False, on_header=extractor.header, on_data=extractor.data
    )
    try:
        for chunk in chunks:
            scanner.feed(chunk)
        scanner.close()
        extractor.finish()
        return {path: future.result() for path, future in pending.items()}
    except TarFormatError as err:
        raise IntegrityError(f"the archive's tar stream is malformed: {err}") from err
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"no space left in the volume while extracting ({root})") from None
        raise OperationFailed(f"extracting into {root} failed: {err.strerror or err}") from err
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            extractor.close()
