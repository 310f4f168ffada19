"""The exec stream's framing, on plain bytes (reading it off a real socket: test_logical.py)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.adapters.exec_frames import (
    STDERR,
    STDOUT,
    SYSTEM,
    Demux,
    frame,
    keep_tail,
    parse_header,
)


def test_a_header_is_the_stream_and_a_big_endian_length() -> None:
    assert parse_header(b"\x01\0\0\0\0\0\x01\x02") == (STDOUT, 258)
    assert parse_header(b"\x02\xff\xff\xff\xff\xff\xff\xff") == (STDERR, 2**32 - 1)
    assert frame(SYSTEM, b"boom") == b"\x03\0\0\0\0\0\0\x04boom"


frames = st.lists(
    st.tuples(st.sampled_from([STDOUT, STDERR, SYSTEM]), st.binary(max_size=300)), max_size=12
)


def reads(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=200, deadline=None)
@given(frames, st.lists(st.integers(min_value=0), max_size=10))
def test_every_stream_comes_out_whole_whatever_the_reads(
    parts: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    demux = Demux()
    got: dict[int, bytes] = {STDOUT: b"", STDERR: b"", SYSTEM: b""}
    for data in reads(b"".join(frame(s, p) for s, p in parts), cuts):
        for stream, piece in demux.split(data):
            got[stream] += bytes(piece)
    for stream in got:
        assert got[stream] == b"".join(p for s, p in parts if s == stream)
    assert not demux.mid_frame


def test_a_stream_cut_inside_a_header_or_a_payload_is_mid_frame() -> None:
    whole = frame(STDOUT, b"abcdef")
    for cut in (1, 7, 8, 13):
        demux = Demux()
        demux.split(whole[:cut])
        assert demux.mid_frame, cut
    demux = Demux()
    assert [(s, bytes(p)) for s, p in demux.split(whole + frame(STDERR, b""))] == [
        (STDOUT, b"abcdef")
    ]
    assert not demux.mid_frame


def test_keep_tail_keeps_the_last_bytes() -> None:
    buffer = bytearray(b"12345")
    keep_tail(buffer, b"6789", 6)
    assert buffer == b"456789"
    keep_tail(buffer, memoryview(b"ab"), 100)
    assert buffer == b"456789ab"
