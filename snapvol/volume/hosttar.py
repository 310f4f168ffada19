"""Tar streams read straight out of a directory on this host, and extracted straight into one.

This is the host lane's data path. GNU tar in a pipe costs two extra copies of every byte (into
the pipe and out of it) and, on a snapshot, a second pass over the stream to hash each file; doing
it in-process reads each file once, hashes it and hands the same buffer to zstd. On two cores that
is the difference between beating ``tar | zstd`` and trailing it.

Streams are POSIX pax tar (a pax header only where a plain one cannot hold the value: sub-second
or out-of-range times, long or non-UTF-8 names, big owners, xattrs, sparse maps in GNU's PAX 1.0
form). A snapshot's members come depth first, as ``tar --sort=name`` gives them (names in byte
order, also the order of Docker's archive endpoint), except that in each directory the files of
``LEAD`` bytes or more, and the directories that hold one, come first, biggest first (see
``_lead_ranks``). Extraction never follows a symbolic
link: every directory on a member's path is opened with ``O_NOFOLLOW`` from the root down, so
nothing can land outside the root whatever the archive holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from snapvol.errors import DiskFullError, IntegrityError, OperationFailed
from snapvol.pipeline.archive import CHUNK, fd_sha256
from snapvol.pipeline.members import (
    BLOCKDEV,
    CAPABILITY,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Member,
    Xattrs,
    normalize,
)
from snapvol.pipeline.tarscan import (
    BLOCK,
    TYPEFLAGS,
    XATTR_PREFIX,
    TarFormatError,
    TarScanner,
    format_time_ns,
    hash_zeros,
)

_SMALL = 64 << 10  # pieces smaller than this are gathered into one chunk before they are passed on
# Files this big lead a snapshot's stream, so that where each begins in it does not move when a
# small file before it grows (see ``_lead_ranks``).
LEAD = 1 << 20
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOFOLLOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_SHORT_PATH = 3072  # longer paths are opened one directory at a time (PATH_MAX is 4096)


def _listing(
    fd: int, where: str, skip_errors: bool, prefix: str, ranks: Mapping[str, int]
) -> Iterator[str]:
    """The names in a directory, in byte order; those ``ranks`` holds first, highest first."""
    try:
        names = os.listdir(fd)
        return iter(sorted(names, key=lambda n: (-ranks.get(prefix + n, 0), os.fsencode(n))))
    except OSError as err:
        if skip_errors:
            return iter(())
        raise OSError(err.errno, err.strerror, where) from None


def _walk_at(
    root: Path, skip_errors: bool, ranks: Mapping[str, int] | None = None
) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """``walk``, with each entry's parent directory as a descriptor and its name in it; in each
    directory the entries ``ranks`` holds first (``_lead_ranks``).

    Directories are held open down the current branch, so no path handed to the kernel is ever
    longer than one name: paths longer than PATH_MAX are read like any other. The descriptor is
    valid until the next entry is asked for. The root is ``(".", st, root_fd, "")``.
    """
    top = os.open(root, _NOFOLLOW_DIR)
    stack: list[tuple[str, int, Iterator[str]]] = []
    try:
        yield ".", os.fstat(top), top, ""
        ranks = ranks or {}
        stack.append(("", top, _listing(top, str(root), skip_errors, "", ranks)))
        while stack:
            prefix, fd, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            rel = prefix + name
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                continue  # gone since the listing
            except OSError as err:
                if skip_errors:
                    continue
                raise OSError(err.errno, err.strerror, os.path.join(root, rel)) from None
            yield rel, st, fd, name
            if stat.S_ISDIR(st.st_mode):
                try:
                    child = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    if skip_errors:
                        continue
                    raise OSError(err.errno, err.strerror, os.path.join(root, rel)) from None
                where = os.path.join(root, rel)
                listing = _listing(child, where, skip_errors, rel + "/", ranks)
                stack.append((rel + "/", child, listing))
    finally:
        for _, fd, _ in stack:
            if fd != top:
                os.close(fd)
        os.close(top)


def walk(root: Path, *, skip_errors: bool = False) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry of ``root`` (itself first, as ``.``) with its ``lstat``, in tar's order.

    What vanishes meanwhile is skipped; with ``skip_errors`` (measuring a volume a service may
    still be changing) so is what cannot be listed or stat'ed.
    """
    for rel, st, _, _ in _walk_at(root, skip_errors):
        yield rel, st


def _kind(mode: int) -> str | None:
    for test, kind in (
        (stat.S_ISREG, REGULAR),
        (stat.S_ISDIR, DIRECTORY),
        (stat.S_ISLNK, SYMLINK),
        (stat.S_ISFIFO, FIFO),
        (stat.S_ISCHR, CHARDEV),
        (stat.S_ISBLK, BLOCKDEV),
    ):
        if test(mode):
            return kind
    return None  # a socket: tar skips those too


def _at(fd: int, name: str) -> str:
    """A short path naming ``name`` in directory ``fd`` (for calls that take no ``dir_fd``)."""
    return f"/proc/self/fd/{fd}/{name}" if name else f"/proc/self/fd/{fd}"


def read_xattrs(fd: int, name: str) -> Xattrs:
    """The extended attributes (ACLs and capabilities included) of ``name`` in ``fd``, sorted;
    the link itself for a symbolic link."""
    target: int | str = fd if not name else _at(fd, name)
    follow = not name  # a descriptor is the file itself
    try:
        return tuple(
            sorted(
                (key, os.getxattr(target, key, follow_symlinks=follow))
                for key in _xattr_names(target, follow)
            )
        )
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.ENODATA):
            return ()
        raise


def _xattr_names(target: int | str, follow: bool = True) -> list[str]:
    """The names of ``target``'s extended attributes; none where the filesystem keeps none."""
    try:
        return os.listxattr(target, follow_symlinks=follow)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.ENODATA):
            return []
        raise


def _write_xattrs(target: int | str, xattrs: Xattrs) -> None:
    """Set ``xattrs`` on a descriptor or a ``/proc`` path; the capability last, as tar does
    (after chown, which clears it)."""
    for key, value in sorted(xattrs, key=lambda kv: kv[0] == CAPABILITY):
        os.setxattr(target, key, value, follow_symlinks=isinstance(target, int))


def _clear_xattrs(fd: int) -> None:
    """Remove a kept directory's xattrs (the root's: ``finish`` sets the archive's). A default
    ACL left on it would be inherited by every entry created below it, and any other attribute
    would outlive the restore. The SELinux label belongs to the host, not to the volume's data."""
    for name in _xattr_names(fd):
        if name != "security.selinux":
            with contextlib.suppress(FileNotFoundError):
                os.removexattr(fd, name)


def _lead_ranks(root: Path, lead: int) -> dict[str, int]:
    """The size of each regular file of ``lead`` bytes or more, and of each directory the size of
    the biggest such file in it (at any depth): what ``_walk_at`` gives first.

    Why: a repository that deduplicates a snapshot's stream (restic) cuts it into chunks where
    its content says, but never less than 512 KiB after the last cut. PostgreSQL's pages each
    hold a run of zeros, where a cut may always fall, so in its files the cuts lie at fixed
    distances from one another: once a small file before a big one grows, every cut in the big
    one moves and none of its chunks is found again (a pgbench load then added 1.3x to 1.6x
    what restic's backup of the directory adds). Given first, in an order their sizes decide,
    the big files start where they started in the last snapshot."""
    ranks: dict[str, int] = {}
    for rel, st, _, _ in _walk_at(root, False):
        if stat.S_ISREG(st.st_mode) and st.st_size >= lead:
            ranks[rel] = st.st_size
            parent = rel
            while "/" in parent:
                parent = parent.rpartition("/")[0]
                ranks[parent] = max(ranks.get(parent, 0), st.st_size)
    return ranks


class _Entries:
    """Turns ``walk``'s entries into members; the second name of an inode becomes a hard link.
    Sockets, which no tar holds, are listed in ``skipped``. With ``lead``, the files of that
    many bytes or more first (``_lead_ranks``)."""

    def __init__(self, root: Path, *, file_xattrs: bool = True, lead: int | None = None) -> None:
        self.root = root
        self.skipped: list[str] = []
        self._first: dict[tuple[int, int], str] = {}
        self._file_xattrs = file_xattrs  # off: the caller reads them from the open file
        self._lead = lead

    def __iter__(self) -> Iterator[tuple[Member, os.stat_result, int, str]]:
        ranks = _lead_ranks(self.root, self._lead) if self._lead is not None else None
        for rel, st, fd, name in _walk_at(self.root, False, ranks):
            kind = _kind(st.st_mode)
            if kind is None:
                self.skipped.append(rel)
                continue
            linkname = ""
            if kind == REGULAR and st.st_nlink > 1:
                first = self._first.setdefault((st.st_dev, st.st_ino), rel)
                if first != rel:
                    kind, linkname = HARDLINK, f"./{first}"
            elif kind == SYMLINK:
                linkname = os.readlink(name, dir_fd=fd)
            device = kind in (CHARDEV, BLOCKDEV)
            member = Member(
                path=rel,
                type=kind,
                size=st.st_size if kind == REGULAR else 0,
                mode=st.st_mode & 0o7777,
                uid=st.st_uid,
                gid=st.st_gid,
                mtime_ns=st.st_mtime_ns,
                linkname=linkname,
                xattrs=read_xattrs(fd, name)
                if kind != HARDLINK and (kind != REGULAR or self._file_xattrs)
                else (),
                devmajor=os.major(st.st_rdev) if device else 0,
                devminor=os.minor(st.st_rdev) if device else 0,
            )
            yield member, st, fd, name


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length += 1
    return str(length).encode() + body


_MAGIC = b"ustar\x0000" + bytes(64)  # magic, version, empty user and group names
_TAIL = bytes(167)  # prefix and padding
_CHECKSUM_SPACES = 8 * 32


def _block(
    name: bytes, flag: bytes, size: int, member: Member | None, linkname: bytes, mtime: int
) -> bytes:
    """One ustar header block (values that do not fit are 0 here and exact in the pax header)."""
    mode, uid, gid, major, minor = (
        (member.mode, member.uid, member.gid, member.devmajor, member.devminor)
        if member is not None
        else (0o644, 0, 0, 0, 0)
    )
    head = b"%s%07o\0%07o\0%07o\0%011o\0%011o\0" % (
        name[:100].ljust(100, b"\0"),
        mode,
        uid if uid < 8**7 else 0,
        gid if gid < 8**7 else 0,
        size if size < 8**11 else 0,
        mtime,
    )
    link = linkname[:100].ljust(100, b"\0")
    devices = b"%07o\0%07o\0" % (major if major < 8**7 else 0, minor if minor < 8**7 else 0)
    checksum = sum(head) + _CHECKSUM_SPACES + flag[0] + sum(link) + sum(_MAGIC) + sum(devices)
    return b"".join((head, b"%06o\0 " % checksum, flag, link, _MAGIC, devices, _TAIL))


@functools.lru_cache(maxsize=4096)
def _pax_block(size: int) -> bytes:
    """The header of a pax extended header of ``size`` bytes (always the same otherwise)."""
    return _block(b"././@PaxHeader", b"x", size, None, b"", 0)


def _sparse_segments(fd: int, size: int) -> list[tuple[int, int]]:
    """The data segments of a file (offset, length), holes left out; SEEK_DATA/SEEK_HOLE."""
    segments = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole from here to the end
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        segments.append((start, end - start))
        offset = end
    return segments


def sparse_map(segments: list[tuple[int, int]], size: int) -> bytes:
    """A PAX 1.0 sparse map block: the segment count, then offset and length of each, in
    decimal lines, zero-padded to whole blocks; GNU tar's final (size, 0) entry included."""
    if not segments or sum(segments[-1]) < size:
        segments = [*segments, (size, 0)]
    text = f"{len(segments)}\n" + "".join(f"{o}\n{n}\n" for o, n in segments)
    raw = text.encode()
    return raw + bytes((-len(raw)) % BLOCK)


def header(member: Member, sparse: bytes | None = None, stored: int = 0) -> bytes:
    """The tar header(s) of ``member``: POSIX pax, with an extended header for whatever ustar
    cannot hold exactly (long or non-ASCII-safe names, nanosecond or negative times, large
    owners and sizes, ``SCHILY.xattr.*``, PAX 1.0 sparse files, as GNU tar writes them).
    ``sparse``: the member's sparse map, ``stored``: the data bytes that follow it."""
    name = b"." if member.path == "." else b"./" + os.fsencode(member.path)
    if member.type == DIRECTORY:
        name += b"/"
    linkname = os.fsencode(member.linkname)
    records: list[bytes] = []
    if sparse is not None:
        records += [
            _pax_record(b"GNU.sparse.major", b"1"),
            _pax_record(b"GNU.sparse.minor", b"0"),
            _pax_record(b"GNU.sparse.name", name),
            _pax_record(b"GNU.sparse.realsize", str(member.size).encode()),
        ]
        base = os.fsencode(member.path).rpartition(b"/")[2][:60]
        name = b"./GNUSparseFile.0/" + base
    elif len(name) > 100:
        records.append(_pax_record(b"path", name))
    if len(linkname) > 100:
        records.append(_pax_record(b"linkpath", linkname))
    seconds, fraction = divmod(member.mtime_ns, 10**9)
    if fraction or not 0 <= seconds < 8**11:
        records.append(_pax_record(b"mtime", format_time_ns(member.mtime_ns)))
        seconds = min(max(seconds, 0), 8**11 - 1)
    for key, owner in ((b"uid", member.uid), (b"gid", member.gid)):
        if owner >= 8**7:
            records.append(_pax_record(key, str(owner).encode()))
    size = stored + len(sparse) if sparse is not None else member.size
    if size >= 8**11:
        records.append(_pax_record(b"size", str(size).encode()))
    for attr, value in member.xattrs:
        records.append(_pax_record(os.fsencode(XATTR_PREFIX + attr), value))
    main = _block(name, TYPEFLAGS[member.type], size, member, linkname, seconds)
    if not records:
        return main
    data = b"".join(records)
    pax = _pax_block(len(data))
    return pax + data + bytes((-len(data)) % BLOCK) + main


class DirTar:
    """A tar stream of ``root``, read from disk, with every member recorded (and hashed) on the way.

    ``members`` is complete once the stream has been read to its end; ``skipped`` lists the
    sockets left out. ``abort`` (any thread) makes the stream stop at the next chunk.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: list[Member] = []
        self.skipped: list[str] = []
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
        entries = _Entries(self.root, file_xattrs=False, lead=LEAD)
        self.skipped = entries.skipped
        for member, st, dir_fd, name in entries:
            if self._stopped:
                return
            if member.type != REGULAR:
                out += header(member)
                self.members.append(member)
                continue
            fd = os.open(name, _NOFOLLOW_FILE, dir_fd=dir_fd)
            try:
                if os.fstat(fd).st_ino != st.st_ino:
                    raise _changed(member.path)
                xattrs = read_xattrs(fd, "")
                if xattrs:
                    member = replace(member, xattrs=xattrs)
                segments = [(0, st.st_size)] if st.st_size else []
                if st.st_blocks * 512 < st.st_size:  # holes, maybe: ask where the data is
                    segments = _sparse_segments(fd, st.st_size)
                plain = segments == [(0, st.st_size)] or st.st_size == 0
                stored = sum(length for _, length in segments)
                if plain:
                    out += header(member)
                else:
                    table = sparse_map(segments, st.st_size)
                    out += header(member, table, stored)
                    out += table
                sha = hashlib.sha256()
                done = 0
                for offset, length in segments:
                    if offset > done:
                        hash_zeros(sha, offset - done)
                    for piece in self._read(fd, offset, length, member.path):
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
                    done = offset + length
                hash_zeros(sha, st.st_size - done)
                if os.fstat(fd).st_mtime_ns != st.st_mtime_ns:
                    raise _changed(member.path)
                if plain and os.pread(fd, 1, st.st_size):
                    raise _changed(member.path)
            finally:
                os.close(fd)
            out += bytes((-stored) % BLOCK)
            self.members.append(replace(member, sha256=sha.hexdigest()))
        yield bytes(out + bytes(2 * BLOCK))

    @staticmethod
    def _read(fd: int, offset: int, length: int, path: str) -> Iterator[bytes]:
        """``length`` bytes of the file from ``offset``; an error if it shrinks meanwhile."""
        os.lseek(fd, offset, os.SEEK_SET)  # SEEK_DATA/SEEK_HOLE may have moved it
        left = length
        while left:
            piece = os.read(fd, min(CHUNK, left))
            if not piece:
                raise _changed(path)
            left -= len(piece)
            yield piece


def _changed(path: str) -> OperationFailed:
    return OperationFailed(
        f"{path} changed while it was read; is another container using the volume?"
    )


def _descend(top: int, parts: Iterable[str]) -> int:
    """The directory reached from ``top`` through ``parts``, each opened without following a
    link: a new descriptor, or ``top`` itself when ``parts`` is empty (``top`` stays open)."""
    fd = top
    try:
        for part in parts:
            child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            if fd != top:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != top:
            os.close(fd)
        raise
    return fd


def _open_file(root: Path, rel: str) -> int:
    """A read descriptor of ``root/rel``, never following a link, whatever the path's length."""
    path = os.path.join(root, rel)
    if len(os.fsencode(path)) < _SHORT_PATH:
        return os.open(path, _NOFOLLOW_FILE)
    parent, _, name = rel.rpartition("/")
    top = os.open(root, _NOFOLLOW_DIR)
    try:
        fd = _descend(top, parent.split("/") if parent else ())
        try:
            return os.open(name, _NOFOLLOW_FILE, dir_fd=fd)
        finally:
            if fd != top:
                os.close(fd)
    finally:
        os.close(top)


def _sha256(root: Path, rel: str) -> str:
    fd = _open_file(root, rel)
    try:
        return fd_sha256(fd)[0]
    finally:
        os.close(fd)


def scan(root: Path, workers: int = 2, known: Mapping[str, str] | None = None) -> dict[str, Member]:
    """Every member of ``root`` as a snapshot would record it; files hashed on ``workers`` threads,
    largest first so that no thread is left with the one big file at the end. ``known`` holds
    digests already read back from disk (by ``extract``), which are not computed again."""
    known = known or {}
    members = {member.path: member for member, _, _, _ in _Entries(root)}
    files = sorted(
        (m for m in members.values() if m.type == REGULAR and m.path not in known),
        key=lambda m: m.size,
        reverse=True,
    )
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapvol-scan") as pool:
        hashed = pool.map(lambda m: _sha256(root, m.path), files)
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
        self,
        root: Path,
        check: Callable[[Member], None],
        written: Callable[[str], None],
        wanted: Callable[[Member], bool] | None = None,
        owners: bool = True,
    ) -> None:
        self.root = root
        self.check = check
        self.written = written  # told the path of each regular file once it is complete
        self.wanted = wanted  # None: every member, the root included (a restore)
        self.owners = owners  # False: files get the user's owner, and no system attributes
        self._skipping = False  # the current member is not wanted: its data passes by
        self.root_fd = os.open(root, _NOFOLLOW_DIR)
        if wanted is None:
            _clear_xattrs(self.root_fd)
        self._cached: tuple[str, int] | None = None  # the last parent directory opened
        self._file = -1  # the regular file being written
        self._end = 0  # how far it was written (a sparse file may end in a hole)
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
        try:
            return _descend(self.root_fd, _parts(rel))
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise IntegrityError(
                    f"archive member path {rel!r} is not a directory in the volume"
                ) from None
            raise

    def _place(self, path: str) -> tuple[int, str]:
        _parts(path)
        parent, _, name = path.rpartition("/")
        return self._dir(parent), name

    def _attributes(self, xattrs: Xattrs) -> Xattrs:
        """What of ``xattrs`` this extraction writes: without owners, the user namespace only
        (the others need privileges, and an ACL names owners that mean nothing here)."""
        return xattrs if self.owners else tuple(kv for kv in xattrs if kv[0].startswith("user."))

    def header(self, member: Member) -> None:
        self.check(member)  # raises before anything is created
        self._skipping = self.wanted is not None and (member.path == "." or not self.wanted(member))
        if self._skipping:
            return
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
            self._end = 0
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
        elif member.type in (CHARDEV, BLOCKDEV):
            kind = stat.S_IFCHR if member.type == CHARDEV else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(name, kind | 0o600, device, dir_fd=fd)
        else:
            raise IntegrityError(f"archive member {member.path!r} is a {member.type}: refused")

    def data(self, view: memoryview, offset: int) -> None:
        if self._skipping:
            return
        while view:
            done = os.pwrite(self._file, view, offset)
            view, offset = view[done:], offset + done
        self._end = max(self._end, offset)

    def member(self, member: Member) -> None:
        """The member's data has all passed: give it its owner, mode, attributes and time,
        in tar's order (chown may clear set-id bits and capabilities)."""
        if self._skipping:
            return
        if member.type == REGULAR:
            if self._end < member.size:  # a sparse file that ends in a hole
                os.ftruncate(self._file, member.size)
            if self.owners:
                os.fchown(self._file, member.uid, member.gid)
            os.fchmod(self._file, member.mode)
            _write_xattrs(self._file, self._attributes(member.xattrs))
            _set_time(self._file, member.mtime_ns)
            self._close_file()
            self.written(member.path)
        elif member.type != DIRECTORY and member.type != HARDLINK:
            fd, name = self._place(member.path)
            if self.owners:
                os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
            if member.type != SYMLINK:
                os.chmod(name, member.mode, dir_fd=fd)
            if self._attributes(member.xattrs):
                _write_xattrs(_at(fd, name), self._attributes(member.xattrs))
            _set_time(name, member.mtime_ns, fd)

    def finish(self) -> None:
        """Directories last (their mode may forbid writing into them), deepest first."""
        for member in reversed(self._dirs):
            fd = self.root_fd if member.path == "." else self._open_dir(member.path)
            try:
                if self.owners:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode)
                _write_xattrs(fd, self._attributes(member.xattrs))
                _set_time(fd, member.mtime_ns)
            finally:
                if fd != self.root_fd:
                    os.close(fd)


_NS_MAX = (1 << 63) - 1
_AT_FDCWD, _AT_SYMLINK_NOFOLLOW = -100, 0x100


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _set_time(target: int | str, mtime_ns: int, dir_fd: int | None = None) -> None:
    """Set atime and mtime to ``mtime_ns`` exactly, before 1970 too. Beyond what a count of
    nanoseconds in 64 bits holds (year 2262; ext4 goes to 2446) Python's ``os.utime`` raises
    OverflowError, so those go to ``utimensat`` as seconds and nanoseconds."""
    where: dict[str, object] = {}
    if dir_fd is not None:
        where = {"dir_fd": dir_fd, "follow_symlinks": False}
    if -_NS_MAX <= mtime_ns <= _NS_MAX:
        os.utime(target, ns=(mtime_ns, mtime_ns), **where)  # type: ignore[arg-type]
        return
    seconds, nanoseconds = divmod(mtime_ns, 10**9)
    stamp = _Timespec(seconds, nanoseconds)
    times = (_Timespec * 2)(stamp, stamp)
    libc = ctypes.CDLL(None, use_errno=True)
    if isinstance(target, int):
        done = libc.futimens(target, times)
    else:
        flags = _AT_SYMLINK_NOFOLLOW if dir_fd is not None else 0
        at = dir_fd if dir_fd is not None else _AT_FDCWD
        done = libc.utimensat(at, os.fsencode(target), times, flags)
    if done != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def extract(
    root: Path,
    chunks: Iterable[bytes],
    check: Callable[[Member], None],
    workers: int = 2,
    *,
    wanted: Callable[[Member], bool] | None = None,
    owners: bool = True,
) -> dict[str, str]:
    """Extract a tar stream into the (empty) directory ``root``, keeping owners, modes and times.

    ``check`` sees every member before anything of it is created and raises to refuse it. Each
    regular file is read back from disk and hashed on ``workers`` threads as soon as it is
    closed, so that the restore's read-back check overlaps the extraction: returns those
    SHA-256 digests by path (for ``scan``). ``wanted``: only the members it accepts are
    written (each checked all the same), and ``root`` keeps its own mode, owner and
    attributes; ``owners=False``: nothing is given an owner or system attributes (for a user's
    directory, not a volume).
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapvol-readback")
    pending: dict[str, Future[str]] = {}
    extractor = _Extractor(
        root,
        check,
        lambda path: pending.__setitem__(path, pool.submit(_sha256, root, path)),
        wanted,
        owners,
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
