"""``kube.podexec``: PostgreSQL's tools in a pod as the engine runs them in a container, over
exec channels. The commands run on this host through the channel interface the client's exec
websocket offers (``LocalChannel``); the websocket itself is the client's and is not exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snapvol.errors import IncompatibleError, OperationFailed
from snapvol.kube.podexec import PodExec, env_preamble
from tests.unit.kube.conftest import NS, LocalChannel

# Binary, with empty lines and a NUL: what follows the variables on stdin must arrive intact.
DUMP = b"PGDMP\x01\x0e\x00\n\n=not a variable\n" + bytes(range(256)) * 64


def local_pod(tmp_path: Path, subprotocol: str | None = None) -> PodExec:
    class Here:
        def exec(self, name: str, namespace: str, command: list[str], **_: Any) -> LocalChannel:
            channel = LocalChannel(command, stdin=True)
            if subprotocol is not None:
                channel.subprotocol = subprotocol  # type: ignore[attr-defined]
            return channel

    return PodExec(Here(), "p", NS, "c")  # type: ignore[arg-type]


def test_variables_go_on_stdin_and_the_command_gets_the_rest(tmp_path: Path):
    engine = local_pod(tmp_path)
    env = {"PGPASSWORD": "s3cret with spaces=and$dollar", "PGAPPNAME": "snapvol-1"}
    script = 'printf "%s|%s|" "$PGPASSWORD" "$PGAPPNAME"; cat'
    with engine.exec_stream("", ["sh", "-c", script], stdin=True, env=env) as stream:
        stream.feed([DUMP[:100], DUMP[100:]])
        out = b"".join(stream.chunks())
        assert stream.join_feed() is None and stream.exit_code() == 0
    assert out == b"s3cret with spaces=and$dollar|snapvol-1|" + DUMP
    assert stream.fed_bytes == len(DUMP)
    code, out, err = engine.exec_run("", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out\n", b"err\n")
    with pytest.raises(ValueError, match="cannot be passed on a line"):
        env_preamble({"PGPASSWORD": "two\nlines"})


def test_a_feed_that_fails_and_a_command_that_stops_reading(tmp_path: Path):
    engine = local_pod(tmp_path)

    def corrupt() -> Any:
        yield b"x" * 1000
        raise OperationFailed("the archive is corrupt")

    with engine.exec_stream("", ["sh", "-c", "cat > /dev/null"], stdin=True) as stream:
        stream.feed(corrupt())
        stream.drain()
        error = stream.join_feed()
    assert isinstance(error, OperationFailed) and stream.fed_bytes == 1000

    big = [b"y" * (1 << 16)] * 64  # more than a pipe holds: the writer blocks on it
    with engine.exec_stream("", ["sh", "-c", "head -c 10"], stdin=True) as stream:
        stream.feed(big)
        assert b"".join(stream.chunks()) == b"y" * 10
        stream.stop_feed()  # it read what it wanted: the rest is no error
        assert stream.join_feed() is None and stream.exit_code() == 0
    with engine.exec_stream("", ["sh", "-c", "head -c 10"], stdin=True) as stream:
        stream.feed(big)
        stream.drain()
        assert stream.join_feed() is not None  # not told: a command that stopped reading


def test_only_protocol_v5_is_spoken(tmp_path: Path):
    with pytest.raises(IncompatibleError, match=r"not v5\.channel\.k8s\.io"):
        local_pod(tmp_path, "v4.channel.k8s.io").exec_run("", ["true"])
    assert local_pod(tmp_path, "v5.channel.k8s.io").exec_run("", ["true"])[0] == 0
