"""A command run in a container without a TTY, on the raw socket ``Engine.exec_stream`` opens:
the framing of its output, and ``ExecStream``, which reads and writes that socket.

Docker multiplexes stdout and stderr on one connection: each frame is an 8-byte header (the
stream, three zero bytes, the payload's length as a big-endian 32-bit number) and its payload.
A read from the socket may end anywhere, inside a header or a payload, so ``Demux`` keeps the
state between reads; the rest are small functions that can be checked on plain bytes. Nothing
here uses the docker SDK: the engine adapter opens the socket and reaps the exit code.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from snapvol.errors import DockerError, DockerUnavailableError, OperationFailed

STDOUT = 1
STDERR = 2
SYSTEM = 3  # the engine's own error text, on a stream of its own
HEADER_SIZE = 8
_HEADER = struct.Struct(">BxxxL")


def parse_header(header: bytes) -> tuple[int, int]:
    """The stream and payload length an 8-byte frame header announces."""
    stream, length = _HEADER.unpack(header)
    return stream, length


def frame(stream: int, payload: bytes) -> bytes:
    """One frame as the engine sends it (``parse_header``'s inverse, with its payload)."""
    return _HEADER.pack(stream, len(payload)) + payload


def keep_tail(buffer: bytearray, piece: bytes | memoryview, limit: int) -> None:
    """Append ``piece`` to ``buffer``, keeping only its last ``limit`` bytes."""
    buffer += piece
    if len(buffer) > limit:
        del buffer[: len(buffer) - limit]


class Demux:
    """Splits reads of a multiplexed stream into ``(stream, piece)`` pairs, whatever the reads'
    boundaries. Pieces are views of the data given to ``split``: use them before the next read
    reuses its buffer."""

    def __init__(self) -> None:
        self._header = b""
        self._stream = 0
        self._left = 0  # payload bytes of the current frame still to come

    @property
    def mid_frame(self) -> bool:
        """Whether the data so far ended inside a frame (at the end of a stream: cut short)."""
        return bool(self._header) or self._left > 0

    def split(self, data: bytes | memoryview) -> list[tuple[int, memoryview]]:
        pieces: list[tuple[int, memoryview]] = []
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._left == 0:
                need = HEADER_SIZE - len(self._header)
                self._header += bytes(view[i : i + need])
                i += need
                if len(self._header) == HEADER_SIZE:
                    self._stream, self._left = parse_header(self._header)
                    self._header = b""
                continue
            take = min(self._left, n - i)
            pieces.append((self._stream, view[i : i + take]))
            self._left -= take
            i += take
        return pieces


# --- the stream -----------------------------------------------------------------------------------


class ExitCodes(Protocol):
    """What an ExecStream asks of the engine: the exit code of a finished exec."""

    def exec_exit_code(self, exec_id: str, timeout: float = 30.0) -> int: ...


STREAM_RECV = 1 << 20  # bytes per recv: the daemon sends 32 KB frames, read many at once
STDERR_LIMIT = 64 << 10  # the tail of a command's stderr that is kept for error messages


def _buffered_leftover(response: Any, raw: socket.socket) -> bytes:
    """Bytes http.client read past the upgrade response's headers (the stream's first frames)."""
    fp = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
    if fp is None or not hasattr(fp, "peek"):
        return b""
    raw.setblocking(False)  # peek only what is already here, never wait for more
    try:
        data = fp.peek()
    except OSError:
        data = b""
    finally:
        raw.settimeout(None)
    return bytes(fp.read(len(data))) if data else b""


class StdoutReader:
    """A running command's stdout, read as chunks or lines: what ``ExecStream`` and the pod's
    ``PodStream`` share. A subclass gives ``_next_stdout``: the next bytes (maybe b""), None
    at the end."""

    _line_buf: bytes = b""

    def _next_stdout(self) -> bytes | None:
        raise NotImplementedError

    def chunks(self) -> Iterator[bytes]:
        """The command's stdout, chunk by chunk, until it closes it."""
        if self._line_buf:
            first, self._line_buf = self._line_buf, b""
            yield first
        while (data := self._next_stdout()) is not None:
            if data:
                yield data

    def drain(self) -> None:
        """Read (and drop) stdout to the end, keeping stderr."""
        for _ in self.chunks():
            pass

    def read_line(self) -> bytes | None:
        """One line of stdout without its newline; None once stdout ended."""
        while b"\n" not in self._line_buf:
            more = self._next_stdout()
            if more is None:
                if self._line_buf:
                    rest, self._line_buf = self._line_buf, b""
                    return rest
                return None
            self._line_buf += more
        line, _, self._line_buf = self._line_buf.partition(b"\n")
        return line


class ExecStream(StdoutReader):
    """A command running in a container, attached without a TTY: its stdout, stderr and stdin.

    Reading happens on the caller's thread; ``feed`` writes stdin from a thread of its own so that
    a command that talks back while it reads (psql, pg_restore) never deadlocks with us.
    """

    def __init__(
        self, engine: ExitCodes, exec_id: str, response: Any, sock: Any, what: str
    ) -> None:
        raw = getattr(sock, "_sock", sock)
        if not isinstance(raw, socket.socket):
            raise DockerError("streaming a command's output needs a unix or TCP Docker host")
        self.engine = engine
        self.exec_id = exec_id
        self.what = what
        self._response = response
        self._sock = sock
        self._raw = raw
        self._raw.settimeout(None)
        self._pending = _buffered_leftover(response, raw)
        self._buf = bytearray(STREAM_RECV)
        self._frames = Demux()
        self._eof = False
        self._stderr = bytearray()
        self._line_buf = b""
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None
        self._feed_stopped = False
        self.fed_bytes = 0

    # --- output ---

    @property
    def stderr(self) -> str:
        """The tail of what the command wrote on stderr (bounded)."""
        return self._stderr.decode("utf-8", "replace")

    def _recv(self) -> bytes | memoryview | None:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        try:
            n = self._raw.recv_into(self._buf)
        except OSError as err:
            raise DockerUnavailableError(
                f"the output of {self.what} in the container was cut off: {err}"
            ) from err
        return memoryview(self._buf)[:n] if n else None

    def _next_stdout(self) -> bytes | None:
        """Stdout bytes of one read from the socket (b"" if only stderr came); None at the end."""
        if self._eof:
            return None
        data = self._recv()
        if data is None:
            self._eof = True
            if self._frames.mid_frame:
                raise DockerError(f"the output of {self.what} ended inside a frame")
            return None
        out: list[memoryview] = []
        for stream, piece in self._frames.split(data):
            if stream == STDOUT:
                out.append(piece)
            else:  # stderr, and the engine's own error text
                keep_tail(self._stderr, piece, STDERR_LIMIT)
        return b"".join(out)

    # --- input ---

    def send(self, data: bytes) -> None:
        try:
            self._raw.sendall(data)
        except OSError as err:
            raise OperationFailed(f"{self.what} in the container stopped reading: {err}") from err

    def close_stdin(self) -> None:
        """Half-close the connection: the command sees the end of its input."""
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)

    def feed(self, chunks: Iterable[bytes], progress: Callable[[int], None] | None = None) -> None:
        """Write ``chunks`` to the command's stdin on a thread, then close it.

        An error from ``chunks`` itself (a corrupt archive) stops the feed and is re-raised by
        ``join_feed``; so is a command that stops reading before the end.
        """

        def pump() -> None:
            try:
                for chunk in chunks:
                    self._raw.sendall(chunk)
                    self.fed_bytes += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                self.close_stdin()
            except BaseException as err:  # handed to join_feed
                if not (self._feed_stopped and isinstance(err, OSError)):
                    self._feed_error = err
                with contextlib.suppress(OSError):
                    self._raw.shutdown(socket.SHUT_RDWR)

        self._feeder = threading.Thread(target=pump, name="snapvol-exec-stdin", daemon=True)
        self._feeder.start()

    def stop_feed(self) -> None:
        """The command has read what it wanted and ended (``pg_restore --list`` reads a dump's
        table of contents only): wake a ``feed`` blocked writing what no one reads any more,
        and wait for it. The rest is dropped, not an error; an error of ``chunks`` itself (a
        damaged archive) is still handed to ``join_feed``."""
        self._feed_stopped = True
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)
        if self._feeder is not None:
            self._feeder.join()

    def join_feed(self) -> BaseException | None:
        """Wait for the stdin thread; returns its error (None when every byte was written)."""
        if self._feeder is not None:
            self._feeder.join()
        return self._feed_error

    # --- end ---

    def exit_code(self, timeout: float = 30.0) -> int:
        return self.engine.exec_exit_code(self.exec_id, timeout)

    def close(self) -> None:
        """End the connection; a ``feed`` thread blocked writing (the command stopped reading
        because nobody reads its output) wakes with an error instead of waiting forever: a
        plain close does not wake a ``sendall`` in progress, a shutdown does."""
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._raw.close()
        with contextlib.suppress(Exception):
            self._sock.close()
        with contextlib.suppress(Exception):
            self._response.close()

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
