"""The framing of a command's output on an exec socket without a TTY.

Docker multiplexes stdout and stderr on one connection: each frame is an 8-byte header (the
stream, three zero bytes, the payload's length as a big-endian 32-bit number) and its payload.
A read from the socket may end anywhere, inside a header or a payload, so ``Demux`` keeps the
state between reads; the rest are small functions. Nothing here touches a socket or the SDK
(``engine.ExecStream`` does the reading), so all of it can be checked on plain bytes.
"""

from __future__ import annotations

import struct

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
