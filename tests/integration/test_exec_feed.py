"""Feeding a command in a container that stops reading before the end of its input."""

from __future__ import annotations

import itertools
import time

from snapvol.adapters.engine import Engine
from tests.docker_helpers import TestBed


def test_a_feed_the_command_no_longer_reads_is_stopped_not_waited_for(bed: TestBed) -> None:
    """`pg_restore --list` reads a dump's table of contents and exits: the thread writing the
    rest of the dump blocked in sendall until Docker closed the connection (6-17 s for a
    268 KB file). Here the input never ends: only stop_feed can end that thread."""
    container = bed.sleeper({})
    engine = Engine.connect()
    try:
        endless = itertools.repeat(b"x" * 65536)
        with engine.exec_stream(
            container.id, ["sh", "-c", "head -c 100000 >/dev/null; echo read"], stdin=True
        ) as stream:
            stream.feed(endless)
            assert b"".join(stream.chunks()) == b"read\n"  # the command ended
            time.sleep(1)  # (not a speed bound: only so that a feed that ends by itself could)
            feeder = stream._feeder
            assert feeder is not None and feeder.is_alive()  # blocked: no one reads
            stream.stop_feed()
            assert not feeder.is_alive()
            assert stream.join_feed() is None  # what was not read is not an error
            assert stream.exit_code() == 0
            assert stream.fed_bytes >= 100000
    finally:
        engine.close()
