"""The phase protocol between snapvol and its rescue process: lines written, lines read back."""

from __future__ import annotations

import json
import os
import select

import pytest

from snapvol.volume import phases
from snapvol.volume.phases import INITIAL, Dirty, Done, Phase, Stopped, decode, encode

DIRTY = Dirty(was_running=True, volume="pgdata", image="postgres:15", safety="a1b2c3")


@pytest.mark.parametrize(
    "phase",
    [
        Stopped(was_running=True),
        Stopped(was_running=False),
        DIRTY,
        Dirty(was_running=False, volume="v", image="i", safety=None),
        Done(),
    ],
)
def test_every_phase_survives_the_wire(phase: Phase) -> None:
    line = encode(phase)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == phase


def test_the_wire_format_is_the_one_snapvol_always_wrote() -> None:
    # A rescue process started by an older snapvol, or the reverse, reads the same lines.
    assert json.loads(encode(Stopped(was_running=False))) == {
        "phase": "stopped",
        "was_running": False,
    }
    assert json.loads(encode(DIRTY)) == {
        "phase": "dirty",
        "was_running": True,
        "safety": "a1b2c3",
        "volume": "pgdata",
        "image": "postgres:15",
    }
    assert json.loads(encode(Done())) == {"phase": "done"}


def test_older_lines_decode() -> None:
    assert decode(b'{"phase": "stopped"}') == Stopped(was_running=True)
    assert decode('{"phase": "dirty", "volume": "v", "image": "i", "safety": ""}') == Dirty(
        was_running=True, volume="v", image="i", safety=None
    )


def test_a_phase_line_fits_one_atomic_pipe_write() -> None:
    longest = Dirty(was_running=True, volume="v" * 255, image="i" * 512, safety="s" * 64)
    assert len(encode(longest)) <= select.PIPE_BUF


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b'{"phase": "dirty", "was_running": true, "saf',  # cut short
        b"\x00\xff garbage\n",
        b"[1, 2]\n",
        b'"stopped"\n',
        b'{"phase": "paused", "was_running": true}\n',
        b'{"was_running": true}\n',
        b'{"phase": "stopped", "was_running": "yes"}\n',
        b'{"phase": "dirty", "was_running": true, "safety": "s", "image": "i"}\n',
        b'{"phase": "dirty", "was_running": true, "safety": "s", "volume": "v"}\n',
        b'{"phase": "dirty", "was_running": true, "safety": 7, "volume": "v", "image": "i"}\n',
    ],
)
def test_what_is_not_a_phase_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


def test_before_any_line_the_container_counts_as_stopped_while_running() -> None:
    assert phases.last([]) == INITIAL == Stopped(was_running=True)


def test_the_last_phase_wins() -> None:
    lines = [encode(Stopped(was_running=True)), encode(DIRTY), encode(Stopped(was_running=True))]
    assert phases.last(lines) == Stopped(was_running=True)
    assert phases.last([*lines, encode(DIRTY)]) == DIRTY
    assert phases.last([*lines, encode(Done())]) == Done()


def test_garbled_and_truncated_lines_are_skipped() -> None:
    lines = [
        encode(Stopped(was_running=False)),
        b"not json\n",
        encode(DIRTY),
        b'{"phase": "done"',  # snapvol died mid-write: the last, unfinished line
    ]
    assert phases.last(lines) == DIRTY


def test_the_last_phase_read_from_a_real_pipe() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as writer:
        writer.write(encode(Stopped(was_running=True)) + encode(DIRTY) + b'{"phase": "st')
    with os.fdopen(read_fd, "rb") as reader:
        assert phases.last(reader) == DIRTY


def test_a_dirty_line_that_cannot_be_read_keeps_the_container_stopped() -> None:
    """A malformed dirty phase must not let an earlier "stopped" win: the rescue would start the
    container on a half-written volume."""
    from snapvol.volume.rescue import decide

    lines = [encode(Stopped(was_running=True)), b'{"phase": "dirty", "was_running": true}\n']
    assert phases.last(lines) == phases.UNREADABLE_DIRTY
    rescue = decide(phases.last(lines))
    assert rescue.stranded is not None and not rescue.start
