"""PostgreSQL dump files: what a file is, from its bytes (never its name), and whether a plain
pg_dump script is whole. Pure logic: no Docker, no PostgreSQL.

Three kinds are recognised, each possibly zstd-compressed: pg_dump's custom format (magic
``PGDMP``), a plain pg_dump script (``-- PostgreSQL database dump`` in its header) and nothing
else. A plain script is scanned to the end: it must close with pg_dump's ``dump complete``
trailer, and the rows of each ``COPY ... FROM stdin`` block are counted on the way, which is what a
restore of it is checked against.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from snapvol.errors import IntegrityError, NotFoundError, UsageError
from snapvol.pg import sqlscript
from snapvol.pipeline import archive

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CUSTOM_MAGIC = b"PGDMP"
PLAIN_HEADER = b"-- PostgreSQL database dump"
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"
CUSTOM = "custom"
PLAIN = "plain"
FORMATS = (CUSTOM, PLAIN)

_SNIFF_BYTES = 4096  # a pg_dump script's header is in its first few lines
_TAIL_BYTES = 1024  # the trailer is followed by at most an \unrestrict line
_MAX_LINE = 64 << 20  # a longer line outside COPY data is not a pg_dump script
_IDENT = rb'(?:"(?:[^"\n]|"")*"|[^\s."]+)'
_COPY = re.compile(
    rb"^COPY (" + _IDENT + rb"(?:\." + _IDENT + rb")?)(?: \([^\n]*\))? FROM stdin;\n", re.M
)
# A script that creates or switches databases would not land in the database we restore into.
_FOREIGN = re.compile(rb"^(?:\\connect\s|\\c\s|CREATE DATABASE\s|DROP DATABASE\s)", re.M)


def sniff(head: bytes) -> str | None:
    """``zstd``, ``custom``, ``plain`` or None, from a file's first bytes."""
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(CUSTOM_MAGIC):
        return CUSTOM
    if _looks_plain(head):
        return PLAIN
    return None


def _looks_plain(head: bytes) -> bool:
    """pg_dump scripts open with a comment block naming themselves."""
    lines = head[:_SNIFF_BYTES].removeprefix(b"\xef\xbb\xbf").splitlines()[:8]
    for line in lines:
        if line.strip() == PLAIN_HEADER:
            return True
        if line.strip() and not line.startswith(b"--"):
            return False
    return False


def split_qualified(name: str) -> tuple[str, str]:
    """``public.t`` or ``"My Schema"."a""b"`` -> (schema, table), quotes undone."""
    parts: list[str] = []
    i, n = 0, len(name)
    while i <= n:
        if i < n and name[i] == '"':
            j, buf = i + 1, []
            while j < n:
                if name[j] == '"':
                    if j + 1 < n and name[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(name[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = name.find(".", i)
            j = n if j < 0 else j
            parts.append(name[i:j])
            i = j
        if i < n and name[i] == ".":
            i += 1
            continue
        break
    if len(parts) == 1:
        return "public", parts[0]
    return parts[-2], parts[-1]


def table_key(schema: str, table: str) -> str:
    """How tables are named in the store and in messages: ``schema.table``, unquoted."""
    return f"{schema}.{table}"


class PlainScanner:
    """Reads a plain pg_dump script chunk by chunk: counts COPY rows, checks head and trailer."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.tables: dict[str, int] = {}
        self._buf = b""
        self._copy: str | None = None
        self._head = b""
        self._tail = b""
        self.foreign: str | None = None  # the first \connect / CREATE DATABASE line, if any

    def feed(self, data: bytes) -> None:
        if len(self._head) < _SNIFF_BYTES:
            self._head += data[: _SNIFF_BYTES - len(self._head)]
        self._tail = (self._tail + data[-_TAIL_BYTES:])[-_TAIL_BYTES:]
        buf = self._buf + data if self._buf else bytes(data)
        pos = 0
        while True:
            if self._copy is None:
                match = _COPY.search(buf, pos)
                end = match.start() if match else buf.rfind(b"\n", pos) + 1
                if self.foreign is None and end > pos:
                    bad = _FOREIGN.search(buf, pos, end)
                    if bad:
                        line_end = buf.find(b"\n", bad.start())
                        self.foreign = buf[bad.start() : line_end].decode("utf-8", "replace")
                if match is None:
                    pos = max(pos, end)
                    break
                schema, table = split_qualified(match.group(1).decode("utf-8", "replace"))
                self._copy = table_key(schema, table)
                self.tables.setdefault(self._copy, 0)
                pos = match.end()
                continue
            if buf.startswith(b"\\.\n", pos):
                stop = pos
            else:
                found = buf.find(b"\n\\.\n", pos)
                stop = found + 1 if found >= 0 else -1
            if stop < 0:  # the block goes on: count its complete lines, keep the last partial one
                last = buf.rfind(b"\n", pos)
                if last >= pos:
                    self.tables[self._copy] += buf.count(b"\n", pos, last + 1)
                    pos = last + 1
                break
            self.tables[self._copy] += buf.count(b"\n", pos, stop)
            pos = stop + 3
            self._copy = None
        self._buf = buf[pos:]
        if len(self._buf) > _MAX_LINE:
            raise IntegrityError(f"{self.what} has a line over 64 MiB: not a pg_dump script")

    def close(self) -> None:
        """IntegrityError unless the script is whole: its header, every COPY ended, the trailer."""
        if not _looks_plain(self._head):
            raise UsageError(f"{self.what} is not a pg_dump script")
        if self._copy is not None:
            raise IntegrityError(
                f"{self.what} is truncated: it ends inside the data of table {self._copy}"
            )
        if PLAIN_TRAILER not in self._tail:
            raise IntegrityError(
                f"{self.what} is truncated: it lacks pg_dump's '-- PostgreSQL database dump "
                "complete' trailer"
            )


@dataclass
class DumpFile:
    """A dump file as validated on the host (a custom one is checked by pg_restore as well)."""

    path: Path
    format: str
    compressed: bool
    size_bytes: int
    raw_bytes: int | None = None  # known once the whole file was read
    tables: dict[str, int] | None = None  # plain: rows per table, from its COPY blocks
    roles: list[tuple[str, str]] = field(default_factory=list)  # roles allowed: (role, SQL)
    # plain: the extensions its script creates (None: not read here, as a custom file's body)
    extensions: list[sqlscript.Extension] | None = None

    def chunks(self, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The uncompressed dump, chunk by chunk (IntegrityError on a corrupt zstd stream)."""
        raw = archive.file_chunks(self.path, progress)
        return archive.unzstd(raw, self.path.name) if self.compressed else raw


def _head(path: Path, compressed: bool, n: int) -> bytes:
    """The first ``n`` bytes of the file, decompressed if it is zstd."""
    chunks: Iterable[bytes] = archive.file_chunks(path)
    if compressed:
        frames = archive.ZstdFrames(path.name)
        chunks = (out for chunk in chunks for out in frames.feed(chunk))
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= n:
            break
    return head[:n]


def inspect_file(
    path: Path, progress: Callable[[int], None] | None = None, *, allow_roles: bool = False
) -> DumpFile:
    """Recognise ``path`` from its content; read a plain script to the end to check it is whole
    and that it changes nothing but its database (``sqlscript``; ``allow_roles``: the roles it
    creates are collected instead of refused).

    UsageError for a file that is not a dump or reaches beyond its database (naming the line);
    IntegrityError for one that is corrupt or truncated. A custom dump's body is left to
    ``pg_restore`` (see ``logical_restore.check_custom``).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    compressed = sniff(_head(path, False, 8)) == "zstd"
    inner = sniff(_head(path, compressed, _SNIFF_BYTES))
    if inner not in FORMATS:
        if compressed:  # too little came out: a truncated or corrupt stream says so here
            for _ in archive.unzstd(archive.file_chunks(path), path.name):
                pass
        raise UsageError(
            f"{path} is not a PostgreSQL dump (neither pg_dump's custom format nor a pg_dump "
            "SQL script" + (", once decompressed)" if compressed else ")")
        )
    assert inner is not None
    dump = DumpFile(path=path, format=inner, compressed=compressed, size_bytes=size)
    if not compressed:
        dump.raw_bytes = size
    if inner == PLAIN:
        scanner = PlainScanner(path.name)
        roles = sqlscript.RoleCheck() if allow_roles else None
        script = sqlscript.ScriptFilter(path.name, allow_role=roles)
        refused: sqlscript.RefusedScript | None = None
        raw = 0
        for chunk in dump.chunks(progress):
            scanner.feed(chunk)
            if refused is None:
                try:
                    script.feed(chunk)
                except sqlscript.RefusedScript as err:
                    refused = err  # said once the file is known whole and a single database's
            raw += len(chunk)
        scanner.close()
        if scanner.foreign is not None:
            raise UsageError(
                f"{path} switches or creates databases ({scanner.foreign!r}, a dump made with "
                "--create or by pg_dumpall): restore it with psql by hand"
            )
        if refused is not None:
            raise refused
        script.close()
        dump.roles = roles.statements if roles is not None else []
        dump.extensions = script.extensions
        dump.raw_bytes = raw
        dump.tables = scanner.tables
    return dump
