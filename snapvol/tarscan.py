"""A push-fed tar reader: sees every member of a tar stream as the bytes go by.

The archive pipeline never buffers a whole archive, and it must look at the same bytes it compresses
or uploads, so instead of pulling from a file (as ``tarfile`` does) this parser is *fed* chunks and
reports each member once its data has passed: path, type, size, mode, link target and, for regular
files, the SHA-256 of the content. It understands ustar, POSIX pax and GNU long-name headers, which
covers what Docker's archive endpoint and GNU tar produce.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from snapvol import archive

BLOCK = 512

# Type flags (tar(5)).
REGULAR = "file"
HARDLINK = "hardlink"
SYMLINK = "symlink"
DIRECTORY = "dir"
FIFO = "fifo"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"

_TYPES = {
    b"0": REGULAR,
    b"\0": REGULAR,
    b"7": REGULAR,
    b"1": HARDLINK,
    b"2": SYMLINK,
    b"3": CHARDEV,
    b"4": BLOCKDEV,
    b"5": DIRECTORY,
    b"6": FIFO,
}


class TarFormatError(ValueError):
    """The stream is not a tar archive this reader understands, or it is truncated."""


@dataclass(frozen=True)
class Member:
    """One archive member as recorded in the manifest store."""

    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str = ""
    sha256: str | None = None


def normalize(name: str) -> str:
    """Member name relative to the archive root: ``./a/b/`` -> ``a/b``; the root itself is ``.``."""
    stripped = name.rstrip("/")
    while stripped.startswith("./"):
        stripped = stripped[2:]
    return stripped or "."


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        value = int.from_bytes(field, "big", signed=False)
        return value & ~(0x80 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _string(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == computed


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        if length <= 0:
            raise TarFormatError("malformed pax header")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarScanner:
    """Feed it a tar stream chunk by chunk; ``on_member`` is called for each complete member.

    ``on_header`` sees each member (without its hash) as soon as its header is read, before any
    of its data; ``on_data`` sees a regular member's data as it passes.
    """

    def __init__(
        self,
        on_member: Callable[[Member], None],
        *,
        hash_files: bool = True,
        on_header: Callable[[Member], None] | None = None,
        on_data: Callable[[memoryview], None] | None = None,
    ) -> None:
        self._on_member = on_member
        self._on_header = on_header
        self._on_data = on_data
        self._hash_files = hash_files
        self._buf = bytearray()
        self._state = "header"
        self._remaining = 0  # bytes of member data still to come
        self._padding = 0
        self._pending: dict[str, object] | None = None
        self._hasher: hashlib._Hash | None = None
        self._meta_kind: str | None = None  # collecting a pax or GNU long-name payload
        self._meta = bytearray()
        self._pax: dict[str, str] = {}
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
                    self._header(header)
            else:  # "end": anything after the end-of-archive marker is padding
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
        name = _string(header[0:100])
        prefix = _string(header[345:500]) if header[257:263] == b"ustar\0" else ""
        if prefix:
            name = f"{prefix}/{name}"
        name = self._pax.get("path", self._gnu_name or name)
        linkname = self._pax.get("linkpath", self._gnu_link or _string(header[157:257]))
        if "size" in self._pax:
            size = int(self._pax["size"])
        kind = _TYPES.get(flag)
        if kind is None:
            raise TarFormatError(f"unsupported tar member type {flag!r} for {name!r}")
        self._pending = {
            "path": normalize(name),
            "type": kind,
            "size": size if kind == REGULAR else 0,
            "mode": _number(header[100:108]) & 0o7777,
            "uid": int(self._pax.get("uid", _number(header[108:116]))),
            "gid": int(self._pax.get("gid", _number(header[116:124]))),
            "mtime": int(float(self._pax.get("mtime", _number(header[136:148])))),
            "linkname": linkname if kind in (SYMLINK, HARDLINK) else "",
        }
        self._pax = {}
        self._gnu_name = self._gnu_link = None
        self._meta_kind = None
        if self._on_header is not None:
            self._on_header(Member(**self._pending))  # type: ignore[arg-type]
        if kind == REGULAR and self._hash_files:
            self._hasher = hashlib.sha256()
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
        else:
            if self._hasher is not None:
                self._hasher.update(part)
            if self._on_data is not None:
                self._on_data(part)
        self._remaining -= take
        if self._remaining == 0:
            self._finish_member()
        return view[take:]

    def _finish_member(self) -> None:
        self._state = "padding" if self._padding else "header"
        if self._meta_kind is not None:
            payload = bytes(self._meta)
            if self._meta_kind == "x":
                self._pax = _parse_pax(payload)
            elif self._meta_kind == "L":
                self._gnu_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif self._meta_kind == "K":
                self._gnu_link = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            self._meta_kind = None  # "g" (global pax) carries nothing we record
            return
        assert self._pending is not None
        digest = self._hasher.hexdigest() if self._hasher is not None else None
        self._hasher = None
        member = Member(sha256=digest, **self._pending)  # type: ignore[arg-type]
        self._pending = None
        self.members += 1
        self._on_member(member)


def unsafe_reason(member: Member) -> str | None:
    """Why extracting this member could write outside the target directory (None if safe)."""
    path = member.path
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "path contains '..'"
    if member.type in (CHARDEV, BLOCKDEV):
        return "device file"
    if member.type == HARDLINK:
        target = normalize(member.linkname)
        if target.startswith("/") or ".." in target.split("/"):
            return f"hard link to {member.linkname!r} outside the archive"
    if member.type == SYMLINK:
        target = member.linkname
        if target.startswith("/"):
            return f"symbolic link to absolute path {target!r}"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if resolved == ".." or resolved.startswith("../"):
            return f"symbolic link to {target!r} points outside the archive"
    return None


def same_file(a: Member, b: Member, *, content: bool = True) -> bool:
    """Whether two records describe the same file: type, size, mode, owner, link target and, with
    ``content``, SHA-256. Hard link targets are compared as member paths (``./a`` is ``a``)."""

    def key(m: Member) -> tuple[object, ...]:
        link = normalize(m.linkname) if m.type == HARDLINK else m.linkname
        return (m.type, m.size, link, m.mode, m.uid, m.gid, m.sha256 if content else None)

    return key(a) == key(b)


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
