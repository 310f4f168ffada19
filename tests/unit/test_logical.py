"""The logical feature's pure parts: quoting, names, listings, checks, the exec stream's
demultiplexing and the zstd helpers (the in-container pipelines: test_pgexec.py)."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.adapters.exec_frames import ExecStream
from snapvol.errors import DockerError, IntegrityError, OperationFailed
from snapvol.pg import logical, logical_restore, quoting
from snapvol.pipeline import archive

LISTING = """;
; Archive created at 2026-11-28 05:17:45 UTC
;     dbname: pc_db
;     TOC Entries: 12
;     Dumped from database version: 15.20 (Debian 15.20-0+deb12u1)
;     Dumped by pg_dump version: 15.20 (Debian 15.20-0+deb12u1)
;
; Selected TOC Entries:
;
215; 1259 16390 TABLE public usuarios postgres
216; 1259 16395 SEQUENCE public productos_producto_id_seq postgres
3340; 0 16390 TABLE DATA public usuarios postgres
3341; 0 16396 TABLE DATA public productos postgres
3342; 0 16400 TABLE DATA ventas mi tabla app_owner
3343; 0 0 SEQUENCE SET public productos_producto_id_seq postgres
"""


def test_parse_listing() -> None:
    header, tables = logical_restore.parse_listing(LISTING)
    assert header == {
        "created": "2026-11-28 05:17:45 UTC",
        "database": "pc_db",
        "entries": "12",
        "server_version": "15.20 (Debian 15.20-0+deb12u1)",
        "pg_dump_version": "15.20 (Debian 15.20-0+deb12u1)",
    }
    assert tables == ["public.usuarios", "public.productos", "ventas.mi tabla"]


def test_quoting() -> None:
    assert quoting.ident('we"ird') == '"we""ird"'
    assert quoting.literal("it's") == "'it''s'"


def test_scratch_names_fit_in_63_bytes() -> None:
    for database in ("pc_db", "x" * 63, "ñ" * 40):
        name = logical_restore._derived_name(database, "__snapvol_old_0123abcd")
        assert len(name.encode()) <= 63 and name.endswith("__snapvol_old_0123abcd")
        name.encode().decode()  # never cut inside a character


def source(**kwargs: Any) -> logical_restore.DumpSource:
    return logical_restore.DumpSource(Path("x.sql"), "plain", False, 1, 1, **kwargs)


def test_check_counts() -> None:
    logical_restore.check_counts(source(tables={"public.a": 3}), {"public.a": 3, "public.b": 1})
    with pytest.raises(IntegrityError, match=r"public\.a has 2 rows, x\.sql recorded 3"):
        logical_restore.check_counts(source(tables={"public.a": 3}), {"public.a": 2})
    with pytest.raises(IntegrityError, match=r"table public\.b is missing"):
        logical_restore.check_counts(source(tables={"public.b": 0}), {})
    with pytest.raises(IntegrityError, match=r"public\.c is missing"):
        logical_restore.check_counts(source(listed=["public.c"]), {"public.a": 1})
    logical_restore.check_counts(source(listed=["public.a"]), {"public.a": 1})


def test_zstd_report_formats() -> None:
    new = "/*stdin*\\            : 15.53%   (224524 B =>  34870 B, /*stdout*\\) \n"
    old = "/*stdin*\\            : 15.53%   (224524 => 34870 bytes, /*stdout*\\) \n"
    for text in (new, old):
        assert logical._ZSTD_REPORT.findall(text) == [("224524", "34870")]


def test_restore_without_id_and_without_terminal_asks_for_one(cmd: Any, tmp_path: Path) -> None:
    from snapvol.adapters.store import Store

    Store.open(tmp_path / "manifests.db").close()  # an empty store: restore never creates one
    result = cmd("restore", exit_code=2)
    assert result.stderr == (
        "Error: which snapshot? give an id or name (see `snapvol ls`); "
        "the interactive list needs a terminal\n"
    )


def test_restore_argument_combinations(cmd: Any, tmp_path: Path) -> None:
    result = cmd("restore", "abc", "--file", str(tmp_path / "x.sql"), exit_code=2)
    assert "not both" in result.stderr
    result = cmd("snapshot", "--logical", "--volume-name", "v", exit_code=2)
    assert "--volume-name goes with --volume" in result.stderr
    result = cmd("snapshot", "--volume", "--format", "plain", exit_code=2)
    assert "--format goes with --logical" in result.stderr


# --- ExecStream: Docker's multiplexed stream, read in large chunks ------------------------------


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


# --- zstd helpers ---------------------------------------------------------------------------------


DATA = os.urandom(200_000) + b"a" * 300_000 + os.urandom(100_000).hex().encode()
COMPRESSED = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(DATA)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(COMPRESSED) * 2 - 1), max_size=8))
def test_walker_and_frames_follow_two_frames_whatever_the_chunking(cuts: list[int]) -> None:
    stream = COMPRESSED * 2
    points = [0, *sorted(set(cuts)), len(stream)]
    walker = archive.ZstdFrameWalker("x")
    decompressor = archive.ZstdFrames("x")
    out = b""
    for start, end in itertools.pairwise(points):
        walker.feed(stream[start:end])
        out += b"".join(decompressor.feed(stream[start:end]))
    walker.close()
    decompressor.close()
    assert walker.frames == decompressor.frames == 2
    assert out == DATA * 2


@pytest.mark.parametrize("cut", [1, 4, 5, 100, len(COMPRESSED) // 2, len(COMPRESSED) - 5])
def test_truncated_zstd_is_refused(cut: int) -> None:
    for helper in (archive.ZstdFrameWalker("x"), archive.ZstdFrames("x")):
        with pytest.raises(IntegrityError, match=r"truncated|no zstd frame"):
            result = helper.feed(COMPRESSED[:cut])
            if result is not None:
                list(result)
            helper.close()


def test_corrupt_zstd_is_refused() -> None:
    damaged = bytearray(COMPRESSED)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        list(archive.unzstd([bytes(damaged)], "x"))
    with pytest.raises(IntegrityError, match="not zstd data"):
        archive.ZstdFrameWalker("x").feed(b"PGDMP....")


def test_write_precompressed(tmp_path: Path) -> None:
    dest = tmp_path / "a.dump.zst"
    result = archive.write_precompressed(
        iter([COMPRESSED[:1000], COMPRESSED[1000:]]), dest, raw_size=lambda: len(DATA)
    )
    assert dest.read_bytes() == COMPRESSED
    assert (result.size_bytes, result.raw_bytes) == (len(COMPRESSED), len(DATA))
    assert result.sha256 == archive.file_sha256(dest)[0]

    def failing() -> Any:
        yield COMPRESSED[:1000]
        raise OperationFailed("pg_dump failed (exit 1): boom")

    for chunks, error in (
        (iter([COMPRESSED[:-10]]), IntegrityError),
        (failing(), OperationFailed),
    ):
        other = tmp_path / "b.dump.zst"
        with pytest.raises(error):
            archive.write_precompressed(chunks, other, raw_size=lambda: 0)
        assert list(tmp_path.iterdir()) == [dest]
