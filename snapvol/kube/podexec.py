"""PostgreSQL's tools in a pod's container, run the way the engine adapter runs them in a container.

``PodExec`` offers the two calls ``snapvol.pg`` makes of the engine (``exec_run`` and
``exec_stream``) over the API's exec stream, and ``PodStream`` the ``ExecStream`` interface over
an exec's channels: stdout, a bounded tail of stderr, stdin written from a thread of its own (a
command that talks back while it reads never deadlocks with us), the exit status from the
status channel. So a logical restore into a pod is ``snapvol.pg.logical_restore``'s own code:
its checks, its SQL and its swap, not a second copy.

What an exec through the API cannot say, it is told on stdin: the API has no environment for an
exec, so the variables the engine would set (the application name; a load role's password,
which must never be in a process's arguments) go first on the command's stdin, one
``NAME=value`` a line and an empty line, read by ``sh`` before it ``exec``\\s the command,
which then reads the rest of stdin as its own. The API has no user either: commands run as the
container's user (a target's ``os_user`` must be empty).

Ending a command's input (psql reading a script commits at its end) needs the exec protocol
``v5.channel.k8s.io``; a cluster that does not speak it is refused before anything is run, unless
the caller never needs an input to end (``ends_input=False``: a logical snapshot, whose psql
session ends when its stream is closed and whose pg_dump reads nothing).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable

from snapvol.adapters.exec_frames import STDERR_LIMIT, StdoutReader, keep_tail
from snapvol.errors import IncompatibleError, OperationFailed
from snapvol.kube.client import ExecChannel, Kube
from snapvol.kube.execstream import ERROR, STDERR, STDOUT, exit_status

V5 = "v5.channel.k8s.io"

# Reads NAME=value lines up to an empty one from stdin, exports them, runs the command.
_ENV_FROM_STDIN = 'while IFS= read -r kv && [ -n "$kv" ]; do export "$kv"; done; exec "$@"'
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_preamble(env: dict[str, str] | None) -> bytes:
    """What goes first on stdin: the variables, one a line, then an empty line."""
    lines = []
    for name, value in (env or {}).items():
        if not _NAME.fullmatch(name) or "\n" in value or "\x00" in value:
            raise ValueError(f"variable {name!r} cannot be passed on a line")
        lines.append(f"{name}={value}\n")
    return ("".join(lines) + "\n").encode()


class PodStream(StdoutReader):
    """A command running in a pod (``ExecStream``'s interface over an exec's channels)."""

    def __init__(self, channel: ExecChannel, what: str, *, poll: float = 1.0) -> None:
        self.channel = channel
        self.what = what
        self.poll = poll
        self.fed_bytes = 0
        self._stderr = bytearray()
        self._status = b""
        self._eof = False
        self._line_buf = b""
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None  # what the chunks fed raised
        self._write_error: BaseException | None = None  # the command stopped reading
        self._feed_stopped = False

    # --- output ---

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def _take(self) -> bytes:
        out = self.channel.read_channel(STDOUT)
        keep_tail(self._stderr, self.channel.read_channel(STDERR), STDERR_LIMIT)
        self._status += self.channel.read_channel(ERROR)
        return out

    def _next_stdout(self) -> bytes | None:
        """The next stdout bytes; None once the exec ended (its status then arrived or not)."""
        while not self._eof:
            if not self.channel.is_open():
                self._eof = True
                return self._take() or None
            self.channel.update(timeout=self.poll)
            out = self._take()
            if out:
                return out
        return None

    # --- input ---

    def send(self, data: bytes) -> None:
        try:
            self.channel.write_stdin(data)
        except Exception as err:
            raise OperationFailed(f"{self.what} in the pod stopped reading: {err}") from err

    def close_stdin(self) -> None:
        """The command sees the end of its input (protocol v5: checked when it started)."""
        close = getattr(self.channel, "close_channel", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close(0)

    def feed(self, chunks: Iterable[bytes], progress: Callable[[int], None] | None = None) -> None:
        """Write ``chunks`` to stdin on a thread, then end it. An error of ``chunks`` (a corrupt
        archive) ends the input and is handed to ``join_feed``, as is a command that stopped
        reading (unless ``stop_feed`` said it may)."""

        def pump() -> None:
            try:
                for chunk in chunks:
                    try:
                        self.channel.write_stdin(bytes(chunk))
                    except Exception as err:  # the command is gone or stopped reading
                        self._write_error = err
                        return
                    self.fed_bytes += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except BaseException as err:  # handed to join_feed
                self._feed_error = err
            finally:
                self.close_stdin()

        self._feeder = threading.Thread(target=pump, name="snapvol-pod-stdin", daemon=True)
        self._feeder.start()

    def stop_feed(self) -> None:
        """The command read what it wanted and ended: the rest is dropped, not an error."""
        self._feed_stopped = True
        self.channel.close()  # wakes a write blocked on a command that no longer reads
        if self._feeder is not None:
            self._feeder.join()

    def join_feed(self) -> BaseException | None:
        if self._feeder is not None:
            self._feeder.join()
        if self._feed_error is not None or self._feed_stopped:
            return self._feed_error
        return self._write_error

    # --- end ---

    def exit_code(self, timeout: float = 30.0) -> int:
        """The command's exit code, once its output ended (read to the end here if need be)."""
        self.drain()
        if not self._status:
            raise OperationFailed(
                f"{self.what}: the exec stream closed before the command reported its exit "
                "status (the pod, its node or the API server went away)"
            )
        code, message = exit_status(self._status)
        if code == -1 and message:  # no exit code: the API's own words say why
            keep_tail(self._stderr, f"\n{message}\n".encode(), STDERR_LIMIT)
        return code

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()

    def __enter__(self) -> PodStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PodExec:
    """``exec_run`` and ``exec_stream`` (the engine adapter's) for one container of one pod: the
    container id the callers pass is theirs (a record's), never a pod's."""

    def __init__(
        self, kube: Kube, pod: str, namespace: str, container: str, *, ends_input: bool = True
    ) -> None:
        self.kube = kube
        self.pod = pod
        self.namespace = namespace
        self.container = container
        self.ends_input = ends_input  # False: nothing run here relies on its input's end

    def _start(self, cmd: list[str], env: dict[str, str] | None, user: str) -> PodStream:
        if user:
            raise OperationFailed(f"{cmd[0]} cannot run as user {user} in a pod: the API has none")
        preamble = env_preamble(env)
        channel = self.kube.exec(
            self.pod,
            self.namespace,
            ["sh", "-c", _ENV_FROM_STDIN, "snapvol", *cmd],
            stdin=True,
            container=self.container,
        )
        spoken = getattr(channel, "subprotocol", V5)  # the client's websocket says which
        if spoken != V5 and self.ends_input:
            channel.close()
            raise IncompatibleError(
                f"the API server speaks exec protocol {spoken}, not {V5}: snapvol cannot end "
                "a command's input there (psql commits a restore at its end), so a logical "
                "restore into a pod needs a cluster that speaks it (Kubernetes 1.30 or later; "
                "1.29 with the TranslateStreamCloseWebsocketRequests feature gate); nothing "
                "was changed"
            )
        tool = cmd[4] if cmd[:2] == ["sh", "-c"] and len(cmd) > 4 else cmd[0]  # pgexec.shell's
        stream = PodStream(channel, tool)
        stream.send(preamble)
        return stream

    def exec_stream(
        self,
        container_id: str,
        cmd: list[str],
        *,
        stdin: bool = False,
        user: str = "",
        env: dict[str, str] | None = None,
    ) -> PodStream:
        stream = self._start(cmd, env, user)
        if not stdin:
            stream.close_stdin()
        return stream

    def exec_run(
        self,
        container_id: str,
        cmd: list[str],
        *,
        user: str = "",
        env: dict[str, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        with self.exec_stream(container_id, cmd, user=user, env=env) as stream:
            out = b"".join(stream.chunks())
            code = stream.exit_code()
        return code, out, stream.stderr.encode()
