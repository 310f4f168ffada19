"""A push-fed tar reader: sees every member of a tar stream as the bytes go by.

The archive pipeline never buffers a whole archive, and it must look at the same bytes it compresses
or uploads, so instead of pulling from a file (as ``tarfile`` does) this parser is *fed* chunks and
reports each member once its data has passed: path, type, size, mode, owner, mtime to the
nanosecond, link target, device numbers, extended attributes and, for regular files, the SHA-256
of the content. It understands ustar, POSIX pax (``SCHILY.xattr.*``, PAX 1.0 sparse files) and GNU
long-name headers, which covers what Docker's archive endpoint, GNU tar and ``volume.hosttar``
produce. The member record itself, and the checks a restore applies to it, are in ``members``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from snapvol.pipeline import archive
from snapvol.pipeline.members import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Member,
    normalize,
)

BLOCK = 512

TYPEFLAGS = {
    REGULAR: b"0",
    HARDLINK: b"1",
    SYMLINK: b"2",
    CHARDEV: b"3",
    BLOCKDEV: b"4",
    DIRECTORY: b"5",
    FIFO: b"6",
}
"""The flag a tar header gives each member type (what a writer puts there)."""
_TYPES = {flag: kind for kind, flag in TYPEFLAGS.items()} | {b"\0": REGULAR, b"7": REGULAR}
XATTR_PREFIX = "SCHILY.xattr."
"""The pax key prefix that carries an extended attribute (``SCHILY.xattr.user.a``)."""


class TarFormatError(ValueError):
    """The stream is not a tar archive this reader understands, or it is truncated."""


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        value = int.from_bytes(field, "big", signed=False)
        if field[0] == 0xFF:  # negative, two's complement
            return value - (1 << (8 * len(field)))
        return value & ~(0x80 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _string(field: bytes) -> str:
    return _name(field.split(b"\0", 1)[0])


def parse_time_ns(text: bytes) -> int:
    """A pax time (``-12.5``, ``1700000000.123456789``) in nanoseconds, exactly."""
    value = text.strip()
    negative = value.startswith(b"-")
    whole, _, frac = value.lstrip(b"-+").partition(b".")
    if not whole.isdigit() and not (whole == b"" and frac.isdigit()):
        raise TarFormatError(f"malformed pax time {text!r}")
    if frac and not frac.isdigit():
        raise TarFormatError(f"malformed pax time {text!r}")
    ns = int(whole or b"0") * 10**9 + int((frac + b"000000000")[:9])
    return -ns if negative else ns


def format_time_ns(ns: int) -> bytes:
    """The pax form of a time in nanoseconds (``parse_time_ns``'s inverse)."""
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), 10**9)
    text = f"{sign}{whole}" if frac == 0 else f"{sign}{whole}.{frac:09d}".rstrip("0")
    return text.encode()


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == computed


def _parse_pax(data: bytes) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed pax header") from None
        if length <= 0 or pos + length > len(data):
            raise TarFormatError("malformed pax header")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


class _Sparse:
    """A PAX 1.0 sparse member (GNU tar's ``GNU.sparse.major=1``): a map of data segments,
    then the segments, standing for a file of ``realsize`` bytes with holes elsewhere."""

    def __init__(self, realsize: int) -> None:
        self.realsize = realsize
        self.map_bytes = bytearray()
        self.segments: list[tuple[int, int]] | None = None  # None while the map is read
        self.index = 0  # the segment being read
        self.done = 0  # bytes of it already passed
        self.logical = 0  # the logical offset reached (what was hashed)

    def take_map(self, part: memoryview) -> None:
        self.map_bytes += part
        if len(self.map_bytes) % BLOCK:
            return
        lines = bytes(self.map_bytes).split(b"\n")
        if len(lines) < 2 or not lines[0].isdigit():
            raise TarFormatError("malformed sparse map")
        count = int(lines[0])
        if len(lines) < 2 + 2 * count:
            return  # the map goes on in the next block
        try:
            numbers = [int(line) for line in lines[1 : 1 + 2 * count]]
        except ValueError:
            raise TarFormatError("malformed sparse map") from None
        segments = list(zip(numbers[0::2], numbers[1::2], strict=True))
        end = 0
        for offset, length in segments:
            if offset < end or length < 0 or offset + length > self.realsize:
                raise TarFormatError("malformed sparse map")
            end = offset + length
        self.segments = [s for s in segments if s[1] > 0]


class TarScanner:
    """Feed it a tar stream chunk by chunk; ``on_member`` is called for each complete member.

    ``on_header`` sees each member (without its hash) as soon as its header is read, before any
    of its data; ``on_data`` sees a regular member's data as it passes, with the offset in the
    file where it belongs (sparse members leave holes between pieces).

    ``digest`` (a ``ContentDigest``) is fed every byte of the stream but regular files' data, and
    each regular file's SHA-256 where its data was: with ``hash_files`` off, the SHA-256 that
    ``digest.file_sha256`` gives for the member (what a record says its content is).
    """

    def __init__(
        self,
        on_member: Callable[[Member], None],
        *,
        hash_files: bool = True,
        on_header: Callable[[Member], None] | None = None,
        on_data: Callable[[memoryview, int], None] | None = None,
        digest: ContentDigest | None = None,
    ) -> None:
        self._on_member = on_member
        self._digest = digest
        self._on_header = on_header
        self._on_data = on_data
        self._hash_files = hash_files
        self._buf = bytearray()
        self._state = "header"
        self._remaining = 0  # bytes of member data still to come
        self._padding = 0
        self._pending: Member | None = None
        self._hasher: hashlib._Hash | None = None
        self._offset = 0  # where the next data byte of a plain member goes
        self._sparse: _Sparse | None = None
        self._meta_kind: str | None = None  # collecting a pax or GNU long-name payload
        self._meta = bytearray()
        self._pax: dict[str, bytes] = {}
        self._gnu_name: str | None = None
        self._gnu_link: str | None = None
        self._zero_blocks = 0
        self.finished = False
        self.members = 0

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            if self._state == "data":
                view = self._consume_data(view)
            elif self._state == "padding":
                take = min(self._padding, len(view))
                if self._digest is not None:
                    self._digest.sha.update(view[:take])
                self._padding -= take
                view = view[take:]
                if self._padding == 0:
                    self._state = "header"
            elif self._state == "header":
                need = BLOCK - len(self._buf)
                self._buf += view[:need]
                view = view[need:]
                if len(self._buf) == BLOCK:
                    header = bytes(self._buf)
                    self._buf.clear()
                    try:
                        self._header(header)
                    except TarFormatError:
                        raise
                    except ValueError as err:  # a number that is none, in a header or pax
                        raise TarFormatError(f"malformed tar header ({err})") from None
            else:  # "end": anything after the end-of-archive marker is padding
                if self._digest is not None:
                    self._digest.sha.update(view)
                return

    def close(self) -> None:
        """Call at end of stream: raises if the archive stopped inside a member or header."""
        if (
            self._state in ("data", "padding")
            or self._buf
            or (self._state == "header" and self.members == 0 and self._zero_blocks == 0)
        ):
            raise TarFormatError("tar stream is truncated")

    def _header(self, header: bytes) -> None:
        if self._digest is not None:
            self._digest.sha.update(header)
        if header == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self._state = "end"
                self.finished = True
            return
        self._zero_blocks = 0
        if not _checksum_ok(header):
            raise TarFormatError("bad tar header checksum (corrupt or not a tar stream)")
        flag = header[156:157]
        size = _number(header[124:136])
        if flag in (b"x", b"g", b"L", b"K"):
            self._meta_kind = flag.decode()
            self._meta.clear()
            self._start_data(size)
            return
        pax = self._pax
        name = _string(header[0:100])
        prefix = _string(header[345:500]) if header[257:263] == b"ustar\0" else ""
        if prefix:
            name = f"{prefix}/{name}"
        if "GNU.sparse.name" in pax:
            name = _name(pax["GNU.sparse.name"])
        elif "path" in pax:
            name = _name(pax["path"])
        elif self._gnu_name is not None:
            name = self._gnu_name
        if "linkpath" in pax:
            linkname = _name(pax["linkpath"])
        else:
            linkname = self._gnu_link if self._gnu_link is not None else _string(header[157:257])
        if "size" in pax:
            size = int(pax["size"])
        kind = _TYPES.get(flag)
        if kind is None:
            raise TarFormatError(f"unsupported tar member type {flag!r} for {name!r}")
        sparse = None
        logical = size
        if kind == REGULAR and pax.get("GNU.sparse.major") == b"1":
            if pax.get("GNU.sparse.minor") != b"0" or "GNU.sparse.realsize" not in pax:
                raise TarFormatError(f"unsupported sparse format for {name!r}")
            logical = int(pax["GNU.sparse.realsize"])
            sparse = _Sparse(logical)
        mtime_ns = (
            parse_time_ns(pax["mtime"]) if "mtime" in pax else _number(header[136:148]) * 10**9
        )
        device = kind in (CHARDEV, BLOCKDEV)
        member = Member(
            path=normalize(name),
            type=kind,
            size=logical if kind == REGULAR else 0,
            mode=_number(header[100:108]) & 0o7777,
            uid=int(pax["uid"]) if "uid" in pax else _number(header[108:116]),
            gid=int(pax["gid"]) if "gid" in pax else _number(header[116:124]),
            mtime_ns=mtime_ns,
            linkname=linkname if kind in (SYMLINK, HARDLINK) else "",
            xattrs=tuple(sorted((k[len(XATTR_PREFIX) :], v) for k, v in _xattr_items(pax))),
            devmajor=_number(header[329:337]) if device else 0,
            devminor=_number(header[337:345]) if device else 0,
        )
        self._pending = member
        self._pax = {}
        self._gnu_name = self._gnu_link = None
        self._meta_kind = None
        if self._on_header is not None:
            self._on_header(member)
        if kind == REGULAR and self._hash_files:
            self._hasher = hashlib.sha256()
        self._sparse = sparse
        self._offset = 0
        self._start_data(size if kind == REGULAR else 0)

    def _start_data(self, size: int) -> None:
        self._remaining = size
        self._padding = (-size) % BLOCK
        if size == 0:
            self._finish_member()
        else:
            self._state = "data"

    def _consume_data(self, view: memoryview) -> memoryview:
        take = min(self._remaining, len(view))
        part = view[:take]
        if self._meta_kind is not None:
            self._meta += part
            if self._digest is not None:
                self._digest.sha.update(part)
        elif self._sparse is not None:
            self._sparse_data(part)
        else:
            if self._hasher is not None:
                self._hasher.update(part)
            if self._on_data is not None:
                self._on_data(part, self._offset)
            self._offset += take
        self._remaining -= take
        if self._remaining == 0:
            self._finish_member()
        return view[take:]

    def _sparse_data(self, part: memoryview) -> None:
        sparse = self._sparse
        assert sparse is not None
        while part:
            if sparse.segments is None:
                take = min(len(part), BLOCK - len(sparse.map_bytes) % BLOCK)
                if self._digest is not None:  # the map is no file data: the digest covers it
                    self._digest.sha.update(part[:take])
                sparse.take_map(part[:take])
                part = part[take:]
                continue
            if sparse.index >= len(sparse.segments):
                raise TarFormatError("sparse member holds more data than its map")
            offset, length = sparse.segments[sparse.index]
            take = min(len(part), length - sparse.done)
            where = offset + sparse.done
            if self._hasher is not None:
                hash_zeros(self._hasher, where - sparse.logical)
                self._hasher.update(part[:take])
            sparse.logical = where + take
            if self._on_data is not None:
                self._on_data(part[:take], where)
            sparse.done += take
            if sparse.done == length:
                sparse.index, sparse.done = sparse.index + 1, 0
            part = part[take:]

    def _finish_member(self) -> None:
        self._state = "padding" if self._padding else "header"
        if self._meta_kind is not None:
            payload = bytes(self._meta)
            if self._meta_kind == "x":
                self._pax = _parse_pax(payload)
            elif self._meta_kind == "L":
                self._gnu_name = _name(payload.split(b"\0", 1)[0])
            elif self._meta_kind == "K":
                self._gnu_link = _name(payload.split(b"\0", 1)[0])
            self._meta_kind = None  # "g" (global pax) carries nothing we record
            return
        member = self._pending
        assert member is not None
        sparse, self._sparse = self._sparse, None
        if sparse is not None:
            if sparse.segments is None or sparse.index != len(sparse.segments):
                raise TarFormatError(f"sparse member {member.path!r} is shorter than its map")
            if self._hasher is not None:
                hash_zeros(self._hasher, sparse.realsize - sparse.logical)
        digest = self._hasher.hexdigest() if self._hasher is not None else None
        self._hasher = None
        self._pending = None
        self.members += 1
        if self._digest is not None and member.type == REGULAR:
            self._digest.add_file(member, digest)
        self._on_member(replace(member, sha256=digest) if digest else member)


_HEX64 = re.compile(r"[0-9a-f]{64}")


class ContentDigest:
    """The SHA-256 of a tar stream in which each regular file's data stands as its SHA-256: it
    covers every header, name, owner, time, attribute and padding byte of the stream, and every
    file's content through that file's hash. Computed by a ``TarScanner`` that hashes the files
    it reads, it says what the stream holds; computed from a record's file hashes
    (``file_sha256``, the scanner not hashing), it says what the stream holds if its files are
    what the record says, which costs no hashing of the data. Equal digests: the same stream.
    """

    def __init__(self, file_sha256: Callable[[Member], str | None] | None = None) -> None:
        self.sha = hashlib.sha256()
        self._file_sha256 = file_sha256

    @classmethod
    def of_record(cls, members: Iterable[Member]) -> ContentDigest:
        """A digest whose files' SHA-256s are those ``members`` (a record) give, by path."""
        recorded = {m.path: m.sha256 for m in members if m.type == REGULAR}
        return cls(lambda m: recorded.get(m.path))

    def add_file(self, member: Member, computed: str | None) -> None:
        digest = computed
        if digest is None and self._file_sha256 is not None:
            digest = self._file_sha256(member)
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise TarFormatError(f"no SHA-256 for the content of {member.path!r}")
        self.sha.update(bytes.fromhex(digest))

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def _xattr_items(pax: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    return ((k, v) for k, v in pax.items() if k.startswith(XATTR_PREFIX))


_ZEROS = bytes(1 << 20)


def hash_zeros(hasher: hashlib._Hash, count: int) -> None:
    """Feed ``count`` zero bytes (a hole) to ``hasher``."""
    zeros = memoryview(_ZEROS)
    while count > 0:
        take = min(count, len(zeros))
        hasher.update(zeros[:take])
        count -= take


class ScannedStream:
    """A tar stream passed on unchanged while a TarScanner reads along.

    ``members`` records every member (regular files hashed unless ``hash_files`` is off) once
    the stream has been read to its end; ``check`` sees each member's header before any of its
    data is passed on, and raises to stop the stream. ``abort`` is handed to the source.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        check: Callable[[Member], None] | None = None,
        hash_files: bool = True,
    ) -> None:
        self._chunks = chunks
        self.members: list[Member] = []
        self._scanner = TarScanner(self.members.append, hash_files=hash_files, on_header=check)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._scanner.feed(chunk)
            yield chunk
        self._scanner.close()

    def abort(self) -> None:
        archive.abort_source(self._chunks)
