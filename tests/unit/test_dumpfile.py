"""Recognising dump files from their bytes, and checking plain pg_dump scripts are whole."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.errors import IntegrityError, NotFoundError, UsageError
from snapvol.pg import dumpfile
from snapvol.pg.dumpfile import PlainScanner, inspect_file, sniff, split_qualified

HEADER = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc123\n\n"
    b"-- Dumped from database version 15.20\n\n"
)
TRAILER = b"\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123\n\n"


def script(*blocks: tuple[str, list[str]], extra: bytes = b"") -> bytes:
    body = b"SET statement_timeout = 0;\nCREATE TABLE public.t (a int);\n" + extra
    for name, rows in blocks:
        body += f"\nCOPY {name} (a, b) FROM stdin;\n".encode()
        body += "".join(f"{row}\n" for row in rows).encode() + b"\\.\n"
    return HEADER + body + TRAILER


SAMPLE = script(
    ("public.usuarios", [f"{i}\tnombre{i}" for i in range(1, 501)]),
    ("public.vacia", []),
    ('"Mi Esquema"."tabla ""rara"""', ["1\tcon \\t tab y \\\\. no final", "2\tx"]),
    ("public.ultima", ["\\.x", "1\t2"]),
)
BIG = script(("public.big", [os.urandom(32).hex() for _ in range(5000)]))
SAMPLE_COUNTS = {
    "public.usuarios": 500,
    "public.vacia": 0,
    'Mi Esquema.tabla "rara"': 2,
    "public.ultima": 2,
}


def test_sniff() -> None:
    assert sniff(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert sniff(b"PGDMP\x01\x0e") == "custom"
    assert sniff(HEADER) == "plain"
    assert sniff(b"\xef\xbb\xbf" + HEADER) == "plain"
    assert sniff(b"-- a comment of mine\n" + HEADER) == "plain"
    for other in (b"", b"hello", b"SELECT 1;\n" + HEADER, b"-- PostgreSQL database cluster dump\n"):
        assert sniff(other) is None


def test_split_qualified() -> None:
    assert split_qualified("public.t") == ("public", "t")
    assert split_qualified("t") == ("public", "t")
    assert split_qualified('"My S"."a""b.c"') == ("My S", 'a"b.c')
    assert split_qualified('s."x"') == ("s", "x")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(SAMPLE) - 1), max_size=12))
def test_scanner_counts_rows_whatever_the_chunking(cuts: list[int]) -> None:
    scanner = PlainScanner("sample.sql")
    points = [0, *sorted(set(cuts)), len(SAMPLE)]
    for start, end in itertools.pairwise(points):
        scanner.feed(SAMPLE[start:end])
    scanner.close()
    assert scanner.tables == SAMPLE_COUNTS
    assert scanner.foreign is None


def test_scanner_refuses_truncated_scripts() -> None:
    cut_in_data = SAMPLE[: SAMPLE.index(b"nombre250")]
    scanner = PlainScanner("x.sql")
    scanner.feed(cut_in_data)
    with pytest.raises(IntegrityError, match=r"inside the data of table public\.usuarios"):
        scanner.close()
    scanner = PlainScanner("x.sql")
    scanner.feed(SAMPLE[: -len(TRAILER)])
    with pytest.raises(IntegrityError, match="trailer"):
        scanner.close()


def test_scanner_refuses_what_is_not_a_script() -> None:
    scanner = PlainScanner("x.sql")
    scanner.feed(b"SELECT 1;\n" + TRAILER)
    with pytest.raises(UsageError, match="not a pg_dump script"):
        scanner.close()


def test_scanner_notices_database_switches() -> None:
    scanner = PlainScanner("x.sql")
    scanner.feed(script(extra=b"CREATE DATABASE otra WITH TEMPLATE = template0;\n\\connect otra\n"))
    scanner.close()
    assert scanner.foreign == "CREATE DATABASE otra WITH TEMPLATE = template0;"


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def test_inspect_plain_files(tmp_path: Path) -> None:
    for name, data, compressed in (("a.sql", SAMPLE, False), ("a.sql.zst", zst(SAMPLE), True)):
        path = tmp_path / name
        path.write_bytes(data)
        dump = inspect_file(path)
        assert (dump.format, dump.compressed) == ("plain", compressed)
        assert dump.tables == SAMPLE_COUNTS
        assert dump.raw_bytes == len(SAMPLE) and dump.size_bytes == len(data)


def test_inspect_plain_file_records_the_extensions_of_its_script(tmp_path: Path) -> None:
    body = (
        b"SET statement_timeout = 0;\n"
        b"CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;\n"
        b"CREATE EXTENSION hstore;\n"
        b"CREATE TABLE public.t (a int);\n"
    )
    path = tmp_path / "ext.sql"
    path.write_bytes(HEADER + body + TRAILER)
    dump = inspect_file(path)
    assert dump.extensions is not None
    found = [(e.name, e.schema) for e in dump.extensions]
    assert found == [("pg_trgm", "public"), ("hstore", None)]
    path.write_bytes(SAMPLE)
    assert inspect_file(path).extensions == []
    (tmp_path / "c.dump").write_bytes(b"PGDMP\x01\x0e\x00" + bytes(5000))
    assert inspect_file(tmp_path / "c.dump").extensions is None  # left to pg_restore


def test_inspect_custom_files_by_content_not_name(tmp_path: Path) -> None:
    custom = b"PGDMP\x01\x0e\x00" + bytes(5000)
    (tmp_path / "backup.sql").write_bytes(custom)
    dump = inspect_file(tmp_path / "backup.sql")
    assert (dump.format, dump.compressed, dump.tables) == ("custom", False, None)
    (tmp_path / "backup.bin").write_bytes(zst(custom))
    dump = inspect_file(tmp_path / "backup.bin")
    assert (dump.format, dump.compressed) == ("custom", True)
    assert b"".join(dump.chunks()) == custom


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", UsageError, "not a PostgreSQL dump"),
        (b"hello\n", UsageError, "not a PostgreSQL dump"),
        (zst(b"\x89PNG" * 1000), UsageError, "once decompressed"),
        (zst(SAMPLE)[:-3], IntegrityError, "truncated"),
        (zst(BIG)[:2000], IntegrityError, "truncated"),  # not even one whole block
        (zst(SAMPLE)[:4] + b"\x00" * 50, IntegrityError, "zstd"),
        (SAMPLE[:-200], IntegrityError, "truncated"),
        (script(extra=b"\\connect otra\n"), UsageError, "switches or creates databases"),
    ],
)
def test_inspect_refuses_bad_files(
    tmp_path: Path, data: bytes, error: type[Exception], message: str
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(error, match=message):
        inspect_file(path)


def test_inspect_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        inspect_file(tmp_path / "nope.sql")
    with pytest.raises(NotFoundError):
        inspect_file(tmp_path)


def test_table_key() -> None:
    assert dumpfile.table_key("public", "t") == "public.t"
