"""Reading an exec's channels: stdout handed on frame by frame, the exit status required.

A scripted channel stands in for the client's exec websocket (no API server, no fake of one):
it delivers the frames a real exec sends, in the order it sends them.
"""

from __future__ import annotations

import json

import pytest

from snapvol.errors import OperationFailed
from snapvol.kube.execstream import ExecOutput, exit_status, feed

SUCCESS = json.dumps({"metadata": {}, "status": "Success"}).encode()


def failure(code: int) -> bytes:
    return json.dumps(
        {
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


class Scripted:
    """Each ``update`` delivers the next batch of (channel, data); then the stream closes."""

    def __init__(self, *batches: list[tuple[int, bytes]]) -> None:
        self.batches = list(batches)
        self.channels: dict[int, bytes] = {}
        self.open = True
        self.closed = False
        self.stdin: list[bytes] = []
        self.stdin_closed = False

    def update(self, timeout: float = 0) -> None:
        if self.batches:
            for channel, data in self.batches.pop(0):
                self.channels[channel] = self.channels.get(channel, b"") + data
        if not self.batches:
            self.open = False

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        return self.channels.pop(channel, b"")

    def is_open(self) -> bool:
        return self.open

    def write_stdin(self, data: bytes) -> None:
        self.stdin.append(data)

    def close_channel(self, channel: int) -> None:
        self.stdin_closed = channel == 0

    def close(self) -> None:
        self.closed = True


def test_stdout_frames_pass_in_order_and_stderr_stays_aside():
    channel = Scripted([(1, b"ab")], [(2, b"warn\n"), (1, b"cd")], [(1, b"ef"), (3, SUCCESS)])
    out = ExecOutput(channel, "reading")
    assert list(out) == [b"ab", b"cd", b"ef"]
    assert out.returncode == 0 and out.stderr == b"warn\n" and channel.closed


def test_a_stream_that_closes_without_a_status_fails():
    channel = Scripted([(1, b"partial tar")], [(2, b"tar: connection lost\n")])
    with pytest.raises(OperationFailed) as err:
        list(ExecOutput(channel, "reading claim x"))
    assert str(err.value) == (
        "reading claim x: the exec stream closed before the command reported its exit status; "
        "it said: tar: connection lost"
    )


def test_a_non_zero_exit_fails_with_the_reason_not_the_boilerplate():
    stderr = (
        b"tar: ./a: file changed as we read it\n"
        b"tar: Exiting with failure status due to previous errors\n"
    )
    channel = Scripted([(1, b"x"), (2, stderr), (3, failure(1))])
    with pytest.raises(OperationFailed) as err:
        list(ExecOutput(channel, "reading"))
    assert str(err.value).endswith(
        "(exit 1: command terminated with non-zero exit code: exit status 1); "
        "it said: tar: ./a: file changed as we read it"
    )


def test_a_silent_stream_is_given_up_and_closed():
    channel = Scripted(*([[(2, b"")]] * 1000))  # open, saying nothing
    now = [0.0]

    def clock() -> float:
        now[0] += 10
        return now[0]

    with pytest.raises(OperationFailed) as err:
        list(ExecOutput(channel, "reading", idle=60, clock=clock))
    assert str(err.value).startswith("reading: no data for 60 s; the exec stream was given up")
    assert channel.closed and len(channel.batches) > 900


def test_exit_status_parsing():
    assert exit_status(SUCCESS) == (0, "")
    assert exit_status(failure(2))[0] == 2
    assert exit_status(b"not json") == (-1, "not json")
    assert exit_status(b'{"status": "Failure", "message": "boom"}') == (-1, "boom")


def test_feed_writes_every_chunk_then_closes_stdin():
    channel = Scripted([(3, SUCCESS)])
    channel.open = True
    done = feed(channel, [b"one", memoryview(b"two")], "writing")
    assert channel.stdin == [b"one", b"two"] and channel.stdin_closed
    assert done.returncode == 0
    failing = Scripted([(2, b"tar: Unexpected EOF\n"), (3, failure(2))])
    with pytest.raises(OperationFailed, match=r"exit 2.*it said: tar: Unexpected EOF"):
        feed(failing, [b"x"], "writing")
