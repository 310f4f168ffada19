"""The archive pipeline: bytes flow chunk by chunk through zstd and SHA-256 to disk, and back.

Nothing here buffers a whole archive: memory stays flat whatever the volume's size. Files are
written as ``<name>.partial`` with owner-only permissions, fsynced and renamed into place, so a
file without the suffix is always complete. zstandard is imported where it compresses or
decompresses: commands that only read the store import this module for its constants.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapvol.background import Background
from snapvol.errors import DiskFullError, IntegrityError, NotFoundError, OperationFailed

CHUNK = 1 << 20
"""Bytes per read and write along the pipeline (the engine's streams, files, zstd)."""
PARTIAL_SUFFIX = ".partial"
ARCHIVE_SUFFIXES = (".tar.zst", ".dump.zst", ".sql.zst")
"""The endings snapvol gives its archives (volume, custom and plain dumps): with the record's
name and id before them, the only files it ever deletes."""
_PREFETCH = 8  # chunks read ahead of the compressor: bounds memory to a few MB

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    sha256: str
    size_bytes: int  # compressed, on disk
    raw_bytes: int  # uncompressed stream


def ensure_private_dir(path: Path) -> Path:
    """Create the backup directory (mode 0700) if missing; return its resolved path.

    An existing one is tightened to 0700 only when it is ours to tighten: a real directory (not
    a symbolic link to one), owned by us, not a shared sticky directory such as /tmp. Modes are
    changed through a descriptor opened without following links, never by path.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # a dangling link, or a race: look again
            os.mkdir(path, 0o700)
        info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        if not path.is_dir():
            raise NotFoundError(
                f"backup directory {path} is a symbolic link to nothing; create its target or "
                "give another directory"
            )
        return path.resolve()  # the user's link: used, but its target's mode is not ours
    if not stat.S_ISDIR(info.st_mode):
        raise OperationFailed(f"backup directory {path} exists and is not a directory")
    ours = info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX
    if ours and stat.S_IMODE(info.st_mode) != 0o700:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    return path.resolve()


def prefetch(
    chunks: Iterable[bytes], depth: int = _PREFETCH, on_end: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """Read ``chunks`` on a thread so network reads overlap with compression and hashing.

    ``on_end`` runs on that thread once ``chunks`` is exhausted, while the consumer finishes.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                q.put(chunk)
            q.put(done)
        except BaseException as err:  # handed to the consumer, which re-raises it
            q.put(err)
            return
        if on_end is not None:
            on_end()

    thread = threading.Thread(target=pump, name="snapvol-prefetch", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = q.get()
            if item is done:
                finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while not finished and thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class _Cancelled(Exception):
    """Raised in the writer thread once the caller has given up on the archive."""


class _HashingFile:
    """File-like sink that hashes and counts what is written to it.

    ``close`` may be called from another thread while a writer thread is still busy: the lock
    guarantees no write lands after the descriptor is closed (its number could be reused).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0
        self._lock = threading.Lock()

    def write(self, data: bytes | memoryview) -> int:
        with self._lock:
            if self.fd < 0:
                raise _Cancelled()
            self.sha.update(data)
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = -1


def _open_partial(dest: Path) -> tuple[Path, int]:
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)  # destination.partial_name
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise OperationFailed(f"{partial} already exists (another run, or a leftover)") from None
    return partial, fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def abort_source(chunks: Iterable[bytes]) -> None:
    """Tell a source that can be told (the engine's stream, a DirTar, a ScannedStream) to stop."""
    abort = getattr(chunks, "abort", None)
    if callable(abort):
        abort()


def _write_partial(
    dest: Path, body: Callable[[_HashingFile], int], source: Iterable[bytes]
) -> ArchiveResult:
    """Write ``dest`` through ``dest.partial``: ``body`` fills the sink and returns the raw size.

    On success the file is fsynced and renamed into place. On any failure or interruption the
    partial file is removed and nothing is left at ``dest``.
    """
    partial, fd = _open_partial(dest)
    sink = _HashingFile(fd)
    try:
        raw = Background(lambda: body(sink), name="snapvol-writer").result()
        os.fsync(sink.fd)
        sink.close()
        os.rename(partial, dest)
        _fsync_dir(dest.parent)
    except BaseException as err:
        abort_source(source)  # so the producer (the engine, or DirTar) lets go at once, not at exit
        sink.close()
        partial.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"no space left in {dest.parent}; the partial archive was removed"
            ) from None
        if isinstance(err, OSError):
            raise OperationFailed(f"writing {dest.name} failed: {err.strerror or err}") from err
        raise
    return ArchiveResult(
        path=dest, sha256=sink.sha.hexdigest(), size_bytes=sink.size, raw_bytes=raw
    )


def write_compressed(
    chunks: Iterable[bytes],
    dest: Path,
    *,
    level: int = 3,
    progress: Progress | None = None,
    on_source_end: Callable[[], None] | None = None,
) -> ArchiveResult:
    """Compress ``chunks`` with zstd into ``dest`` via ``dest.partial``, hashing in the same pass.

    ``chunks`` is read on a thread of its own: whatever work the source does per chunk (reading
    files and hashing them, or scanning a stream) runs beside compression, not before it.
    ``on_source_end`` runs on that thread once the source is exhausted, beside the last of the
    compression and the fsync.
    """

    def body(sink: _HashingFile) -> int:
        import zstandard

        raw = 0
        compressor = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
        writer_sink: Any = sink  # file-like enough for zstandard: write() and flush()
        # No `with`: leaving it on an error would finish the frame, compressing for nothing.
        writer = compressor.stream_writer(writer_sink, closefd=False, write_size=CHUNK)
        for chunk in prefetch(chunks, on_end=on_source_end):
            writer.write(chunk)
            raw += len(chunk)
            if progress is not None:
                progress(len(chunk))
        writer.flush(zstandard.FLUSH_FRAME)
        return raw

    return _write_partial(dest, body, chunks)


_SMALL_READ = 64 << 10  # the least buffer fd_sha256 reads into


def fd_sha256(fd: int, progress: Progress | None = None) -> tuple[str, int]:
    """SHA-256 and size of what is left to read from ``fd``, read into one reused buffer (of
    up to 4 chunks: no bigger than a small file needs, so hashing many of them costs no more)."""
    sha = hashlib.sha256()
    size = 0
    buf = bytearray(min(4 * CHUNK, max(os.fstat(fd).st_size + 1, _SMALL_READ)))
    view = memoryview(buf)
    while n := os.readv(fd, [buf]):
        sha.update(view[:n])
        size += n
        if progress is not None:
            progress(n)
    return sha.hexdigest(), size


def file_sha256(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"{path} vanished before it could be read") from None
    try:
        return fd_sha256(fd, progress)
    finally:
        os.close(fd)


def decompressed_chunks(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    """Stream the uncompressed content of a zstd file, chunk by chunk."""
    import zstandard

    try:
        with open(path, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK)
            while chunk := reader.read(CHUNK):
                if progress is not None:
                    progress(len(chunk))
                yield chunk
    except zstandard.ZstdError as err:
        raise IntegrityError(f"archive {path.name} cannot be decompressed: {err}") from err


# --- already-compressed streams (logical snapshots: zstd runs next to pg_dump) ------------------

_ZSTD_FEED = 256 << 10  # compressed bytes per decompress call: bounds each call's output


class ZstdFrames:
    """Decompresses a zstd stream piece by piece, frame after frame, checking every checksum.

    ``close`` raises IntegrityError unless the stream ended exactly at the end of a frame: a
    truncated stream is never mistaken for a complete one.
    """

    def __init__(self, what: str) -> None:
        import zstandard

        self.what = what
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._mid_frame = False
        self.frames = 0
        self.raw_bytes = 0

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """The uncompressed bytes ``data`` completes, in pieces of bounded size."""
        import zstandard  # imported already by __init__: only the name is looked up

        view = memoryview(data)
        while view:
            piece, view = view[:_ZSTD_FEED], view[_ZSTD_FEED:]
            while piece:
                self._mid_frame = True
                try:
                    out = self._obj.decompress(piece)
                except zstandard.ZstdError as err:
                    raise IntegrityError(f"{self.what} is not valid zstd data: {err}") from err
                if out:
                    self.raw_bytes += len(out)
                    yield out
                if not self._obj.eof:
                    break
                self.frames += 1
                self._mid_frame = False
                piece = memoryview(self._obj.unused_data)
                self._obj = self._dctx.decompressobj()

    def close(self) -> None:
        if self._mid_frame:
            raise IntegrityError(f"{self.what} is truncated (its last zstd frame is incomplete)")
        if self.frames == 0:
            raise IntegrityError(f"{self.what} holds no zstd frame")


def unzstd(chunks: Iterable[bytes], what: str) -> Iterator[bytes]:
    """Decompress a zstd stream (any number of frames); IntegrityError if corrupt or truncated."""
    frames = ZstdFrames(what)
    for chunk in chunks:
        yield from frames.feed(chunk)
    frames.close()


def file_chunks(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    """A file's bytes, chunk by chunk."""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                if progress is not None:
                    progress(len(chunk))
                yield chunk
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None


def write_precompressed(
    chunks: Iterable[bytes],
    dest: Path,
    *,
    raw_size: Callable[[], int],
    progress: Progress | None = None,
) -> ArchiveResult:
    """Write an already zstd-compressed stream to ``dest`` via ``dest.partial``, hashing it.

    Its frames are walked on the way (not decompressed: that would cost as much CPU as the
    whole rest of the pipeline) so that a truncated stream fails the write. ``raw_size`` is
    asked for the uncompressed size once the stream ended: the producer knows it.
    """

    def body(sink: _HashingFile) -> int:
        frames = ZstdFrameWalker(f"the compressed stream for {dest.name}")
        for chunk in prefetch(chunks):
            sink.write(chunk)
            frames.feed(chunk)
            if progress is not None:
                progress(len(chunk))
        frames.close()
        return raw_size()

    return _write_partial(dest, body, chunks)


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # ..5F: skippable frames, which carry no data


class ZstdFrameWalker:
    """Follows a zstd stream's structure without decompressing it: frame headers, every block
    header, the checksum. ``close`` raises IntegrityError unless the stream ended exactly at the
    end of a frame, so a truncated stream is caught for a fraction of decompression's cost.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.frames = 0
        self._need = 4  # bytes wanted for the current header
        self._state = "magic"
        self._head = b""
        self._skip = 0  # bytes of block content (or a skippable frame) still to pass over
        self._checksum = False

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            take = self._need - len(self._head)
            self._head += bytes(view[:take])
            view = view[take:]
            if len(self._head) == self._need:
                self._parsed()

    def _parsed(self) -> None:
        head, state = self._head, self._state
        self._head = b""
        if state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == _SKIPPABLE:
                self._state, self._need = "skippable", 4
            else:
                raise IntegrityError(f"{self.what} is not zstd data (bad frame magic)")
        elif state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state, self._need = "magic", 4
            self.frames += 1
        elif state == "descriptor":
            fhd = head[0]
            if fhd & 0x08:
                raise IntegrityError(f"{self.what}: reserved bit set in a zstd frame header")
            single = bool(fhd & 0x20)
            fcs = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
            did = {0: 0, 1: 1, 2: 2, 3: 4}[fhd & 0x03]
            self._checksum = bool(fhd & 0x04)
            rest = (0 if single else 1) + did + fcs
            self._state, self._need = "header", rest
            if rest == 0:
                self._state, self._need = "block", 3
        elif state == "header":
            self._state, self._need = "block", 3
        elif state == "block":
            value = int.from_bytes(head, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise IntegrityError(f"{self.what}: reserved zstd block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._state, self._need = ("checksum", 4) if self._checksum else ("magic", 4)
                if not self._checksum:
                    self.frames += 1
        elif state == "checksum":
            self._state, self._need = "magic", 4
            self.frames += 1

    def close(self) -> None:
        if self._skip or self._head or self._state != "magic":
            raise IntegrityError(f"{self.what} is truncated (its last zstd frame is incomplete)")
        if self.frames == 0:
            raise IntegrityError(f"{self.what} holds no zstd frame")
