"""Logical snapshots: pg_dump of a database in a running PostgreSQL container.

A psql session in the container opens a REPEATABLE READ transaction, exports its snapshot and
counts every user table's rows in it while ``pg_dump --snapshot`` dumps that same state, so the
recorded counts match the dump exactly. When the image has ``zstd`` it runs next to pg_dump and
the exec stream carries compressed bytes (the stream out of ``docker exec`` is the bottleneck, about
80 MB/s); otherwise the raw dump is compressed on the host. Either way the bytes are hashed and
their zstd frames walked on their way to ``<file>.partial``, which is renamed only once pg_dump
and zstd both exited 0 and zstd's own byte count matches what arrived.

A restore's safety snapshot is taken in a session that holds every table of the database it
replaces still (``hold_still``): reads go on, writes wait until the restore's swap disconnects
them, so the safety snapshot is the database exactly as the restore replaced it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.engine import Engine
from snapvol.adapters.exec_frames import ExecStream
from snapvol.adapters.store import Snapshot
from snapvol.background import Background
from snapvol.errors import IntegrityError, SnapvolError, UsageError
from snapvol.options import SnapshotOptions
from snapvol.output import Reporter
from snapvol.pg import pgexec
from snapvol.pg.dumpfile import CUSTOM, FORMATS, PLAIN
from snapvol.pg.pgexec import PgTarget, PsqlSession
from snapvol.pg.quoting import literal
from snapvol.pipeline import archive
from snapvol.workspace import Workspace

KIND = "logical"
SUFFIXES = {CUSTOM: ".dump.zst", PLAIN: ".sql.zst"}


@dataclass
class Held:
    """A session on a database whose open REPEATABLE READ transaction holds all its tables."""

    session: PsqlSession
    app: str  # its application_name (pg_dump's is this with ``-dump``)
    pid: int  # its server process: the swap ends it last, once no other session is left

    def release(self) -> None:
        self.session.close()


LOCK_TIMEOUT_S = 10
_LOCK_ATTEMPTS = 3

# Every user table (partitioned ones lock their partitions), as quoted names in one JSON line.
_TABLES_SQL = """SELECT coalesce(json_agg(format('%I.%I', n.nspname, c.relname) ORDER BY 1), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'"""


def hold_still(engine: Engine, target: PgTarget, app: str, reporter: Reporter) -> Held:
    """Hold every table of ``target``'s database in EXCLUSIVE mode: reads go on, writes wait.

    The locks are taken before the transaction's snapshot (LOCK takes none), so a dump in it is
    the database as it stays until the session ends. A session holding a table in an open
    transaction would keep us waiting: after ``LOCK_TIMEOUT_S`` the database's other sessions are
    disconnected (a restore disconnects them at its swap anyway) and we try again.
    """
    for attempt in range(_LOCK_ATTEMPTS):
        session = PsqlSession(engine, target, target.database, app)
        try:
            tables = json.loads(session.query(_TABLES_SQL)[0][0])
            pid = int(session.query("SELECT pg_backend_pid()")[0][0])
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            if tables:
                session.query(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
                session.query(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
            return Held(session, app, pid)
        except SnapvolError as err:
            session.close()
            if "lock timeout" not in err.message or attempt == _LOCK_ATTEMPTS - 1:
                raise type(err)(f"could not stop writes to {target.database}: {err}") from err
        rows = pgexec.psql(
            engine,
            target,
            pgexec.disconnect_sql(f"datname = {literal(target.database)}"),
            database=target.maintenance_db,
        )
        reporter.warn(
            f"sessions kept tables of {target.database} busy for {LOCK_TIMEOUT_S} s: "
            f"disconnected {rows[0][0]} session(s)"
        )
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class DumpOptions:
    """pg_dump's own choices for a logical snapshot, checked once, where they are built."""

    # custom (pg_restore-able, parallel and selective) or plain (an SQL script).
    format: str = CUSTOM

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(
                f"the dump format must be one of {', '.join(FORMATS)}, not {self.format!r}"
            )


def snapshot_logical(
    ws: Workspace,
    target: PgTarget,
    options: SnapshotOptions,
    dump: DumpOptions = DumpOptions(),
    *,
    held: Held | None = None,
    meta: dict[str, object] | None = None,
) -> Snapshot:
    """pg_dump the target database with consistent row counts; returns the completed snapshot.

    With ``held`` (from ``hold_still``) the dump runs in that session's transaction, which the
    caller ends; ``meta`` is recorded with the snapshot (a safety snapshot's ``safety_for``).
    """
    engine, fmt, level = ws.engine, dump.format, options.level
    started = time.monotonic()
    app = held.app if held else f"{pgexec.APP_NAME}-{secrets.token_hex(4)}"
    in_container = pgexec.has_zstd(engine, target)
    session = held.session if held else PsqlSession(engine, target, target.database, app)
    try:
        version = session.query("SHOW server_version")[0][0]
        if held is None:
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        run = PgDumpRun(
            target,
            exported=session.query("SELECT pg_export_snapshot()")[0][0],
            # so that a failure ends pg_dump, not the held session
            app=f"{app}-dump" if held else app,
            format=fmt,
            level=level,
            in_container=in_container,
            lock_wait=held is not None,
        )
        began = lifecycle.begin(
            ws.store,
            ws.backup_dir,
            target.container,
            kind=KIND,
            name=options.name,
            volume=None,
            suffix=SUFFIXES[fmt],
            meta={"user": target.user, "level": level, **(meta or {})},
            database=target.database,
            format=fmt,
        )
        with lifecycle.recorded(ws.store, began) as snap:
            try:
                ws.reporter.step(
                    f"dumping database {target.database} of {target.container.name} ({fmt})"
                )
                counting = Background(lambda: pgexec.parse_counts(session.query(pgexec.COUNT_SQL)))
                result = _dump(engine, run, Path(snap.path), ws.reporter)
                tables = counting.result()
                meta_done = snap.meta
                meta_done.update(
                    {
                        "server_version": version,
                        "tables": tables,
                        "rows": sum(tables.values()),
                        "compressed_in": "container" if run.in_container else "host",
                    }
                )
                seconds = time.monotonic() - started
                return lifecycle.complete_dump(ws.store, snap, result, seconds, version, meta_done)
            except BaseException:
                pgexec.terminate_sessions(engine, target, run.app)
                raise
    finally:
        if held is None:
            session.close()


@dataclass(frozen=True)
class PgDumpRun:
    """One pg_dump in the container: what it dumps, as of which exported snapshot, and how."""

    target: PgTarget
    exported: str  # the snapshot pg_export_snapshot() gave the counting session
    app: str  # pg_dump's application_name (what a failure disconnects)
    format: str
    level: int
    in_container: bool  # zstd runs next to pg_dump; else the host compresses the raw dump
    lock_wait: bool  # a held session's locks: a queued writer must not keep pg_dump waiting

    def argv(self) -> list[str]:
        target = self.target
        argv = ["pg_dump", "-U", target.user, "-d", target.database, f"--snapshot={self.exported}"]
        if self.lock_wait:
            argv.append(f"--lock-wait-timeout={LOCK_TIMEOUT_S * 1000}")
        # Custom format would deflate its data itself: leave compression to zstd, much faster.
        if self.format == CUSTOM:
            return [*argv, "--format=custom", "--compress=0"]
        return [*argv, "--format=plain"]


def _dump(engine: Engine, run: PgDumpRun, dest: Path, reporter: Reporter) -> archive.ArchiveResult:
    script = pgexec.compressing(run.level) if run.in_container else 'exec "$@"'
    target = run.target
    stream = engine.exec_stream(
        target.container.id, pgexec.shell(run.argv(), script), **target.exec_options(run.app)
    )
    with stream, reporter.transfer("dumping", None) as advance:
        chunks = pgexec.checked_output(stream, "pg_dump")
        if not run.in_container:
            return archive.write_compressed(chunks, dest, level=run.level, progress=advance)
        sizes: list[int] = []
        return archive.write_precompressed(
            _checked_zstd_count(chunks, stream, sizes),
            dest,
            raw_size=lambda: sizes[0],
            progress=advance,
        )


_ZSTD_REPORT = re.compile(r"\( *(\d+) (?:B )?=> *(\d+) (?:B|bytes)")


def _checked_zstd_count(
    chunks: Iterator[bytes], stream: ExecStream, sizes: list[int]
) -> Iterator[bytes]:
    """The compressed stream; at its end, zstd's own count must match the bytes that arrived."""
    got = 0
    for chunk in chunks:
        got += len(chunk)
        yield chunk
    report = _ZSTD_REPORT.findall(stream.stderr)
    if not report:  # another zstd's wording: the uncompressed size stays unknown (0)
        sizes.append(0)
        return
    raw, packed = (int(n) for n in report[-1])
    if packed != got:
        raise IntegrityError(f"zstd in the container wrote {packed} bytes but {got} arrived")
    sizes.append(raw)
