"""A command's output and input through the API's exec stream, as the archive pipeline's chunks.

``ExecOutput`` is an iterable of bytes (the command's stdout) with ``abort``, the shape every
lane's source has: it feeds ``ScannedStream`` and ``archive.write_compressed`` as Docker's
archive stream does. The command's exit status arrives on the exec's error channel once it
ends; a non-zero status (or a stream that closed without one) fails the iteration, so a short
tar is never taken for a whole one. Nothing accumulates: each frame is handed on as it comes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator

from snapvol.errors import OperationFailed
from snapvol.kube.client import ExecChannel

STDOUT, STDERR, ERROR = 1, 2, 3  # the exec protocol's channels
IDLE = 600.0
"""Seconds of silence on an exec's stdout after which it is given up (tar is never that quiet)."""
_STDERR_KEPT = 4096  # bytes of stderr kept for the message
_BOILERPLATE = re.compile(r"Error is not recoverable|Exiting with failure status")


def exit_status(text: bytes) -> tuple[int, str]:
    """The exit code and message of the Status an exec ends with (on its error channel)."""
    try:
        status = json.loads(text)
    except ValueError:
        return -1, text.decode("utf-8", "replace").strip()[:200]
    if not isinstance(status, dict):
        return -1, str(status)[:200]
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or "")
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "")), message
            except ValueError:
                break
    return -1, message


class ExecOutput:
    """The stdout of an exec, chunk by chunk; fails at its end unless the command exited 0."""

    def __init__(
        self,
        channel: ExecChannel,
        what: str,
        *,
        poll: float = 1.0,
        idle: float = IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.what = what
        self.poll = poll
        self.idle = idle
        self.clock = clock
        self.stderr = b""
        self._status = b""
        self.returncode: int | None = None

    def _drain(self) -> bytes:
        """What arrived on each channel since the last call: stdout returned, stderr (its
        tail) and the status kept."""
        out = self.channel.read_channel(STDOUT)
        self.stderr = (self.stderr + self.channel.read_channel(STDERR))[-_STDERR_KEPT:]
        self._status += self.channel.read_channel(ERROR)
        return out

    def __iter__(self) -> Iterator[bytes]:
        heard = self.clock()
        try:
            while True:
                self.channel.update(timeout=self.poll)
                out = self._drain()
                if out:
                    heard = self.clock()
                    yield out
                if not self.channel.is_open():
                    break
                if self.clock() - heard > self.idle:
                    raise OperationFailed(
                        f"{self.what}: no data for {self.idle:g} s; the exec stream was "
                        "given up (the pod, its node or the API server stopped answering)"
                    )
            out = self._drain()  # frames that came with the close
            if out:
                yield out
        finally:
            self.channel.close()
        self.check()

    def check(self) -> None:
        if not self._status:
            raise OperationFailed(
                f"{self.what}: the exec stream closed before the command reported its exit "
                f"status{self._stderr_tail()}"
            )
        code, message = exit_status(self._status)
        self.returncode = code
        if code != 0:
            raise OperationFailed(
                f"{self.what}: the command failed (exit {code}: {message}){self._stderr_tail()}"
            )

    def _stderr_tail(self) -> str:
        """The command's last line of stderr that says why (tar's closing lines do not)."""
        lines = [line for line in self.stderr.decode("utf-8", "replace").splitlines() if line]
        telling = [line for line in lines if not _BOILERPLATE.search(line)]
        chosen = (telling or lines)[-1:]
        return f"; it said: {chosen[0][:200]}" if chosen else ""

    def abort(self) -> None:
        self.channel.close()


def feed(channel: ExecChannel, chunks: Iterable[bytes], what: str) -> ExecOutput:
    """Write ``chunks`` to the exec's stdin, then close stdin and wait for the command's exit;
    OperationFailed unless it exited 0. Returns the finished output (stdout discarded)."""
    output = ExecOutput(channel, what)
    try:
        for chunk in chunks:
            channel.write_stdin(bytes(chunk))
            output._drain()  # keep its stderr tail; stdout is not wanted
        close = getattr(channel, "close_channel", None)
        if callable(close):  # protocol v5.channel.k8s.io: EOF on stdin (older: tar stops at
            close(0)  # the archive's end-of-archive blocks)
    except BaseException:
        channel.close()
        raise
    for _ in output:
        pass
    return output
