"""Logical snapshots: pg_dump of a database in a running PostgreSQL container.

A psql session in the container opens a REPEATABLE READ transaction, exports its snapshot and
counts every user table's rows in it while ``pg_dump --snapshot`` dumps that same state, so the
recorded counts match the dump exactly. When the image has ``zstd`` it runs next to pg_dump and
the exec stream carries compressed bytes (the stream out of ``docker exec`` is the bottleneck, about
80 MB/s); otherwise the raw dump is compressed on the host. Either way the bytes are hashed and
their zstd frames walked on their way to ``<file>.partial``, which is renamed only once pg_dump
and zstd both exited 0 and zstd's own byte count matches what arrived.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from snapvol import archive, lifecycle, pgexec
from snapvol.background import Background
from snapvol.dumpfile import CUSTOM, FORMATS, PLAIN
from snapvol.engine import Engine, ExecStream
from snapvol.errors import IntegrityError, UsageError
from snapvol.names import validate_name
from snapvol.output import Reporter
from snapvol.pgexec import PgTarget
from snapvol.store import Snapshot, Store

KIND = "logical"
SUFFIXES = {CUSTOM: ".dump.zst", PLAIN: ".sql.zst"}


def snapshot_logical(
    engine: Engine,
    store: Store,
    backup_dir: Path,
    target: PgTarget,
    *,
    name: str | None = None,
    fmt: str = CUSTOM,
    level: int = 3,
    reporter: Reporter,
) -> Snapshot:
    """pg_dump the target database with consistent row counts; returns the completed snapshot."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    if not 1 <= level <= 19:
        raise UsageError("--level must be between 1 and 19")
    if name is not None:
        validate_name(name)
    started = time.monotonic()
    app = f"{pgexec.APP_NAME}-{secrets.token_hex(4)}"
    in_container = pgexec.has_zstd(engine, target)
    session = pgexec.PsqlSession(engine, target, target.database, app)
    try:
        version = session.query("SHOW server_version")[0][0]
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        exported = session.query("SELECT pg_export_snapshot()")[0][0]
        snap = lifecycle.begin(
            store,
            backup_dir,
            target.container,
            kind=KIND,
            name=name,
            volume=None,
            suffix=SUFFIXES[fmt],
            meta={"user": target.user, "level": level},
            database=target.database,
            format=fmt,
        )
        try:
            reporter.step(f"dumping database {target.database} of {target.container.name} ({fmt})")
            counting = Background(lambda: pgexec.parse_counts(session.query(pgexec.COUNT_SQL)))
            result = _dump(
                engine, target, exported, fmt, level, Path(snap.path), in_container, app, reporter
            )
            tables = counting.result()
            meta = snap.meta
            meta.update(
                {
                    "server_version": version,
                    "tables": tables,
                    "rows": sum(tables.values()),
                    "compressed_in": "container" if in_container else "host",
                }
            )
            return store.complete(
                snap.id,
                sha256=result.sha256,
                size_bytes=result.size_bytes,
                raw_bytes=result.raw_bytes or None,
                duration_s=round(time.monotonic() - started, 3),
                downtime_s=0.0,
                pg_version=version.split()[0],
                meta_json=json.dumps(meta),
            )
        except BaseException as err:
            pgexec.terminate_sessions(engine, target, app)
            lifecycle.fail(store, snap, err)
            raise
    finally:
        session.close()


def _dump(
    engine: Engine,
    target: PgTarget,
    exported: str,
    fmt: str,
    level: int,
    dest: Path,
    in_container: bool,
    app: str,
    reporter: Reporter,
) -> archive.ArchiveResult:
    argv = ["pg_dump", "-U", target.user, "-d", target.database, f"--snapshot={exported}"]
    # Custom format would deflate its data itself: leave compression to zstd, much faster.
    argv += ["--format=custom", "--compress=0"] if fmt == CUSTOM else ["--format=plain"]
    script = pgexec.compressing(level) if in_container else 'exec "$@"'
    stream = engine.exec_stream(
        target.container.id, pgexec.shell(argv, script), **target.exec_options(app)
    )
    with stream, reporter.transfer("dumping", None) as advance:
        if not in_container:
            chunks = pgexec.checked_output(stream, "pg_dump")
            return archive.write_compressed(chunks, dest, level=level, progress=advance)
        sizes: list[int] = []
        return archive.write_precompressed(
            _counted(pgexec.checked_output(stream, "pg_dump"), stream, sizes),
            dest,
            raw_size=lambda: sizes[0],
            progress=advance,
        )


_ZSTD_REPORT = re.compile(r"\( *(\d+) (?:B )?=> *(\d+) (?:B|bytes)")


def _counted(chunks: Iterator[bytes], stream: ExecStream, sizes: list[int]) -> Iterator[bytes]:
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
