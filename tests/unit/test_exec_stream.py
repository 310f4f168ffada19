"""ExecStream (snapvol.adapters.exec_frames): Docker's multiplexed exec stream, read in large
chunks."""

from __future__ import annotations

import itertools
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.adapters.exec_frames import ExecStream
from snapvol.errors import DockerError


def frames(parts: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack(">BxxxL", kind, len(data)) + data for kind, data in parts)


class FakeEngine:
    def exec_exit_code(self, exec_id: str, timeout: float) -> int:
        return 0


def stream_over(payload: bytes, cuts: list[int]) -> ExecStream:
    ours, theirs = socket.socketpair()

    def send() -> None:
        points = [0, *sorted(set(cuts)), len(payload)]
        for start, end in itertools.pairwise(points):
            theirs.sendall(payload[start:end])
        theirs.close()

    threading.Thread(target=send, daemon=True).start()
    return ExecStream(FakeEngine(), "exec", None, ours, what="test")  # type: ignore[arg-type]


PAYLOAD = frames(
    [(1, b"line one\nline "), (2, b"a warning\n"), (1, b"two\n"), (1, b""), (3, b"engine!")]
    + [(1, bytes([n]) * 40000) for n in range(5)]
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(PAYLOAD) - 1), max_size=8))
def test_exec_stream_demultiplexes_whatever_the_reads(cuts: list[int]) -> None:
    with stream_over(PAYLOAD, cuts) as stream:
        assert stream.read_line() == b"line one"
        assert stream.read_line() == b"line two"
        rest = b"".join(stream.chunks())
    assert rest == b"".join(bytes([n]) * 40000 for n in range(5))
    assert stream.stderr == "a warning\nengine!"


def test_exec_stream_keeps_only_the_tail_of_stderr() -> None:
    with stream_over(frames([(2, b"x" * 100_000), (2, b"the end")]), []) as stream:
        stream.drain()
    assert len(stream.stderr) == 64 << 10 and stream.stderr.endswith("the end")


def test_exec_stream_cut_inside_a_frame_is_an_error() -> None:
    cut = frames([(1, b"abcdef")])[:-2]
    with stream_over(cut, []) as stream, pytest.raises(DockerError, match="inside a frame"):
        stream.drain()


def test_close_wakes_a_feed_blocked_on_a_command_that_stopped_reading() -> None:
    """A caller that reads only the start of the output (the restore plan reads the script's
    prologue) closes the stream while the feed thread is stuck in ``sendall``: the command
    stopped reading its stdin because nobody reads its stdout. close() must wake it."""
    ours, theirs = socket.socketpair()  # theirs never reads: the command's stdin is full
    stream = ExecStream(FakeEngine(), "exec", None, ours, what="test")  # type: ignore[arg-type]
    stream.feed(itertools.repeat(b"x" * 65536))
    stuck = -1
    while stream.fed_bytes != stuck:  # until the socket buffers are full: sendall blocks
        stuck = stream.fed_bytes
        threading.Event().wait(0.2)
    assert stream._feeder is not None and stream._feeder.is_alive()
    stream.close()
    stream._feeder.join(timeout=10)
    assert not stream._feeder.is_alive(), "the feed thread is still blocked after close()"
    assert isinstance(stream.join_feed(), OSError)
    theirs.close()
