"""A logical snapshot's own choices and the pg_dump command they make (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from snapvol.errors import UsageError
from snapvol.pg.logical import DumpOptions, PgDumpRun
from snapvol.pg.pgexec import PgTarget


def test_the_dump_format_is_checked_where_the_options_are_built() -> None:
    assert DumpOptions().format == "custom"
    assert DumpOptions(format="plain").format == "plain"
    with pytest.raises(UsageError, match="one of custom, plain, not 'tar'"):
        DumpOptions(format="tar")


def run(**changes: Any) -> PgDumpRun:
    target = PgTarget(container=None, database="pc_db", user="postgres")  # type: ignore[arg-type]
    fields: dict[str, Any] = {
        "target": target,
        "exported": "00000003-0000001B-1",
        "app": "snapvol-1234abcd",
        "format": "custom",
        "level": 3,
        "in_container": True,
        "lock_wait": False,
    }
    return PgDumpRun(**{**fields, **changes})


def test_pg_dump_reads_the_exported_snapshot_and_leaves_compression_to_zstd() -> None:
    base = ["pg_dump", "-U", "postgres", "-d", "pc_db", "--snapshot=00000003-0000001B-1"]
    assert run().argv() == [*base, "--format=custom", "--compress=0"]
    assert run(format="plain").argv() == [*base, "--format=plain"]
    held = run(lock_wait=True).argv()
    assert held == [*base, "--lock-wait-timeout=10000", "--format=custom", "--compress=0"]
