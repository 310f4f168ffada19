"""The logical restore's pure parts: the dump's listing, scratch names and row-count checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snapvol.errors import IntegrityError
from snapvol.pg import logical_restore

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


def test_a_listed_table_whose_schema_has_spaces_is_found() -> None:
    # pg_restore --list separates schema, name and owner by spaces alone: parse_listing reads
    # "Odd Schema"."T q" as Odd.Schema T q, which must count as the restored table.
    _, listed = logical_restore.parse_listing("3345; 0 16390 TABLE DATA Odd Schema T q postgres\n")
    assert listed == ["Odd.Schema T q"]
    logical_restore.check_counts(source(listed=listed), {"Odd Schema.T q": 1})
    with pytest.raises(IntegrityError, match="is missing"):
        logical_restore.check_counts(source(listed=listed), {"Odd Schema.T r": 1})
