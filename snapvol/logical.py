"""Logical snapshots (pg_dump) of a database in a running PostgreSQL container, and their restores.

Snapshot: a psql session in the container opens a REPEATABLE READ transaction, exports its snapshot
and counts every user table's rows in it while ``pg_dump --snapshot`` dumps that same state, so
the recorded counts match the dump exactly. When the image has ``zstd`` it runs next to pg_dump and
the exec stream carries compressed bytes (the stream out of ``docker exec`` is the bottleneck, about
80 MB/s); otherwise the raw dump is compressed on the host. Either way the bytes are hashed and
their zstd frames walked on their way to ``<file>.partial``, which is renamed only once pg_dump
and zstd both exited 0 and zstd's own byte count matches what arrived.

Restore: into a new database (``<db>__snapvol_<token>``, from template0 with the current one's
owner, encoding and locale), checked (pg_restore/psql stop at the first error; the recorded tables
and row counts must be there), then swapped in by two renames in one transaction; the old database
is dropped only after that committed. Any failure before the swap drops the new database, so the
current one is never touched until a checked copy replaces it. What belongs to the database
itself, not to its contents (grants, settings, comment, connection limit: ``snapvol.dbprops``),
is given to the new one from the one it replaces.

Passwords: every command runs through ``sh -c`` and takes PGPASSWORD from the container's own
POSTGRES_PASSWORD(_FILE) inside the container: no password is ever in a process's arguments.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from snapvol import archive, dbprops, dumpfile, lifecycle, postgres
from snapvol.background import Background
from snapvol.dbprops import DatabaseProps
from snapvol.dumpfile import CUSTOM, FORMATS, PLAIN
from snapvol.engine import ContainerInfo, Engine, ExecStream
from snapvol.errors import (
    IncompatibleError,
    IntegrityError,
    NotFoundError,
    OperationFailed,
    SnapvolError,
    UsageError,
)
from snapvol.names import validate_name
from snapvol.output import Reporter
from snapvol.pgsql import ident, literal
from snapvol.store import Snapshot, Store

KIND = "logical"
SUFFIXES = {CUSTOM: ".dump.zst", PLAIN: ".sql.zst"}
APP_NAME = "snapvol"
_MAX_IDENT = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes

# Sourced before every command: the password comes from the container's environment, inside it.
_PASSWORD_FROM_ENV = (
    'if [ -z "${PGPASSWORD:-}" ]; then '
    'if [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "$POSTGRES_PASSWORD_FILE" ]; then '
    'PGPASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); else PGPASSWORD=${POSTGRES_PASSWORD:-}; fi; '
    'if [ -n "$PGPASSWORD" ]; then export PGPASSWORD; fi; fi; '
)


def _pipeline(left: str, right: str, names: tuple[str, str]) -> str:
    """``left | right`` in POSIX sh, failing unless both exit 0 (sh has no pipefail)."""
    a, b = names
    return (
        "exec 3>&1; "
        f'codes=$( {{ {{ {left}; echo "{a}=$?" >&4; }} | '
        f'{{ {right} >&3; echo "{b}=$?" >&4; }}; }} 4>&1 ); '
        f'case "$codes" in *{a}=0*{b}=0*|*{b}=0*{a}=0*) exit 0;; esac; '
        'echo "snapvol: exit statuses:" $codes >&2; exit 1'
    )


def _compressing(level: int) -> str:
    """The script that runs ``"$@"`` (pg_dump) with zstd compressing its output."""
    # -vv: zstd's last stderr line gives the exact sizes, "(<raw> B => <compressed> B, ...)".
    return _pipeline('"$@"', f"zstd -vv -c -T0 -{level}", ("pg_dump", "zstd"))


def _decompressing(tool: str) -> str:
    """The script that feeds ``"$@"`` (pg_restore, psql) what zstd decompresses from stdin."""
    return _pipeline("zstd -q -d -c", '"$@"', ("zstd", tool))


def _sh(argv: list[str], script: str = 'exec "$@"') -> list[str]:
    return ["sh", "-c", _PASSWORD_FROM_ENV + script, "snapvol", *argv]


def _env(app: str = APP_NAME) -> dict[str, str]:
    return {"PGAPPNAME": app, "PGCONNECT_TIMEOUT": "15"}


# Rows of every user table (not the catalogs, not extension members), counted in one statement so
# that in a REPEATABLE READ transaction they all come from the same snapshot.
COUNT_SQL = """SELECT n.nspname, c.relname,
  (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I',
    n.nspname, c.relname), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
    AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2"""


def _counts(rows: list[list[str]]) -> dict[str, int]:
    return {dumpfile.table_key(r[0], r[1]): int(r[2]) for r in rows if len(r) == 3}


# --- talking to PostgreSQL in the container -------------------------------------------------


@dataclass(frozen=True)
class PgTarget:
    """A database in a running PostgreSQL container, and the role snapvol connects as."""

    container: ContainerInfo
    database: str
    user: str

    @property
    def maintenance_db(self) -> str:
        """Where CREATE/ALTER/DROP DATABASE run from: never the database they change."""
        return "template1" if self.database == "postgres" else "postgres"


def resolve_target(
    engine: Engine, container_ref: str, database: str | None = None, user: str | None = None
) -> PgTarget:
    """The running PostgreSQL container, the database (POSTGRES_DB) and role (POSTGRES_USER)."""
    info = engine.container(container_ref)
    if not postgres.is_postgres(info):
        raise IncompatibleError(f"container {info.name} does not run PostgreSQL")
    if info.status != "running":
        raise OperationFailed(
            f"container {info.name} is {info.status}, not running: logical snapshots and "
            f"restores talk to the live server (start it with `docker start {info.name}`)"
        )
    user = user or info.env("POSTGRES_USER") or "postgres"
    database = database or info.env("POSTGRES_DB") or user
    for what, value in (("database", database), ("user", user)):
        if "=" in value or "://" in value or not value or "\x00" in value:
            raise UsageError(f"unsupported {what} name {value!r}")
    return PgTarget(info, database, user)


def _pg_message(stderr: str) -> str:
    """The server's or the tool's own words from a failed command's stderr, on one line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for marker in ("FATAL:", "ERROR:", "error:", "pg_restore:", "pg_dump:", "psql:"):
        found = [line for line in lines if marker in line]
        if found:
            return found[0][found[0].index(marker) :]
    return lines[-1] if lines else "no error message"


def _pg_error(stderr: str, what: str, target: PgTarget, database: str) -> SnapvolError:
    message = _pg_message(stderr)
    if re.search(r'database ".*" does not exist', message):
        return NotFoundError(
            f"database {database!r} does not exist in container {target.container.name}"
        )
    if "Connection refused" in message or "No such file or directory" in message:
        return OperationFailed(
            f"PostgreSQL in {target.container.name} does not accept connections: {message}"
        )
    return OperationFailed(f"{what} failed: {message}")


def psql(
    engine: Engine, target: PgTarget, statements: str | list[str], database: str | None = None
) -> list[list[str]]:
    """Run statements (each its own ``-c``) through psql in the container; returns the rows."""
    database = database or target.database
    argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    argv += ["-U", target.user, "-d", database]
    for statement in [statements] if isinstance(statements, str) else statements:
        argv += ["-c", statement]
    code, out, err = engine.exec_run(target.container.id, _sh(argv), env=_env())
    if code != 0:
        raise _pg_error(err.decode("utf-8", "replace"), "psql", target, database)
    text = out.decode("utf-8", "replace")
    return [line.split("\t") for line in text.splitlines() if line]


class PsqlSession:
    """A psql kept open in the container: statements go in on stdin, rows come back on stdout."""

    def __init__(self, engine: Engine, target: PgTarget, database: str, app: str) -> None:
        self.target = target
        self.database = database
        self._marker = f"__snapvol_{secrets.token_hex(6)}__"
        argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-U", target.user, "-d", database]
        self.stream = engine.exec_stream(target.container.id, _sh(argv), stdin=True, env=_env(app))

    def query(self, sql: str) -> list[list[str]]:
        try:
            self.stream.send(f"{sql};\n\\echo {self._marker}\n".encode())
        except OperationFailed:
            self.stream.drain()
            raise self._error() from None
        rows: list[list[str]] = []
        while (line := self.stream.read_line()) is not None:
            text = line.decode("utf-8", "replace")
            if text == self._marker:
                return rows
            rows.append(text.split("\t"))
        raise self._error()

    def _error(self) -> SnapvolError:
        return _pg_error(self.stream.stderr, "psql", self.target, self.database)

    def close(self) -> None:
        """End the session: psql sees the end of its input and rolls back an open transaction."""
        self.stream.close_stdin()
        self.stream.close()


def _checked_output(stream: ExecStream, what: str) -> Iterator[bytes]:
    """The command's stdout; raises at its end unless the command exited 0."""
    yield from stream.chunks()
    code = stream.exit_code()
    if code != 0:
        raise OperationFailed(f"{what} failed (exit {code}): {_pg_message(stream.stderr)}")


def has_zstd(engine: Engine, target: PgTarget) -> bool:
    code, _, _ = engine.exec_run(target.container.id, ["sh", "-c", "command -v zstd"])
    return code == 0


def table_counts(engine: Engine, target: PgTarget, database: str) -> dict[str, int]:
    """Exact rows of every user table of ``database``."""
    return _counts(psql(engine, target, COUNT_SQL, database=database))


def _terminate(engine: Engine, target: PgTarget, app: str) -> None:
    """Best effort: end the server sessions of our own aborted pg_dump (it would run on)."""
    with contextlib.suppress(Exception):
        psql(
            engine,
            target,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE application_name = {literal(app)} AND pid <> pg_backend_pid()",
            database=target.maintenance_db,
        )


# --- snapshot ------------------------------------------------------------------------------------


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
    app = f"{APP_NAME}-{secrets.token_hex(4)}"
    in_container = has_zstd(engine, target)
    session = PsqlSession(engine, target, target.database, app)
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
            counting = Background(lambda: _counts(session.query(COUNT_SQL)))
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
            _terminate(engine, target, app)
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
    script = _compressing(level) if in_container else 'exec "$@"'
    stream = engine.exec_stream(target.container.id, _sh(argv, script), env=_env(app))
    with stream, reporter.transfer("dumping", None) as advance:
        if not in_container:
            chunks = _checked_output(stream, "pg_dump")
            return archive.write_compressed(chunks, dest, level=level, progress=advance)
        sizes: list[int] = []
        return archive.write_precompressed(
            _counted(_checked_output(stream, "pg_dump"), stream, sizes),
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


# --- restore -------------------------------------------------------------------------------------


@dataclass
class DumpSource:
    """What a logical restore reads: a stored snapshot's archive, or a dump file."""

    path: Path
    format: str
    compressed: bool
    size_bytes: int | None
    raw_bytes: int | None
    snapshot: Snapshot | None = None
    tables: dict[str, int] | None = None  # rows per table the restored copy must hold
    listed: list[str] | None = None  # tables a custom file holds data for (pg_restore --list)
    header: dict[str, str] = field(default_factory=dict)  # a custom file's archive header

    def chunks(self, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The uncompressed dump, chunk by chunk (IntegrityError on corrupt zstd data)."""
        raw = archive.file_chunks(self.path)
        data = archive.unzstd(raw, self.path.name) if self.compressed else raw
        for chunk in data:
            if progress is not None:
                progress(len(chunk))
            yield chunk

    def feed_plan(
        self, zstd_in_container: bool, tool: str
    ) -> tuple[Iterator[bytes], str, int | None]:
        """What to send a command's stdin, the script that runs it, and how many bytes to expect.

        Compressed bytes go into the container when it has zstd: a quarter of the bytes through
        Docker's stdin stream, which makes restores about twice as fast.
        """
        if self.compressed and zstd_in_container:
            return archive.file_chunks(self.path), _decompressing(tool), self.size_bytes
        return self.chunks(), 'exec "$@"', self.raw_bytes


def snapshot_source(snapshot: Snapshot, reporter: Reporter) -> DumpSource:
    """A logical snapshot as a restore source, after its SHA-256 was verified."""
    if snapshot.kind != KIND:
        raise UsageError(f"snapshot {snapshot.id} is a {snapshot.kind} snapshot, not a logical one")
    lifecycle.check_archive(snapshot, reporter)
    tables = snapshot.meta.get("tables")
    return DumpSource(
        path=Path(snapshot.path),
        format=snapshot.format or CUSTOM,
        compressed=True,
        size_bytes=snapshot.size_bytes,
        raw_bytes=snapshot.raw_bytes,
        snapshot=snapshot,
        tables={str(k): int(v) for k, v in tables.items()} if isinstance(tables, dict) else None,
    )


def file_source(engine: Engine, target: PgTarget, path: Path, reporter: Reporter) -> DumpSource:
    """A dump file as a restore source, validated whole before anything is changed."""
    reporter.step(f"checking {path}")
    with reporter.transfer("checking", Path(path).stat().st_size if path.exists() else None) as adv:
        dump = dumpfile.inspect_file(path, adv)
    source = DumpSource(
        path=dump.path,
        format=dump.format,
        compressed=dump.compressed,
        size_bytes=dump.size_bytes,
        raw_bytes=dump.raw_bytes,
        tables=dump.tables,
    )
    if source.format == CUSTOM:
        check_custom(engine, target, source, reporter)
    return source


def _fed(
    engine: Engine,
    target: PgTarget,
    argv: list[str],
    source: DumpSource,
    reporter: Reporter,
    label: str,
    app: str = APP_NAME,
) -> tuple[int, str]:
    """Run ``argv`` with the whole dump on its stdin; returns its exit code and stderr.

    A corrupt source (zstd decompressed on the host) is raised, and so is a command that stopped
    reading before the end while claiming success.
    """
    chunks, script, expected = source.feed_plan(has_zstd(engine, target), argv[0])
    with (
        engine.exec_stream(target.container.id, _sh(argv, script), stdin=True, env=_env(app)) as st,
        reporter.transfer(label, expected) as advance,
    ):
        st.feed(chunks, advance)
        st.drain()
        error = st.join_feed()
        code = st.exit_code()
    if isinstance(error, SnapvolError):
        raise error
    if code == 0 and (error is not None or (expected is not None and st.fed_bytes != expected)):
        raise OperationFailed(
            f"{argv[0]} read {st.fed_bytes} bytes of {source.path.name}, expected {expected}"
            + (f" ({error})" if error else "")
        )
    return code, st.stderr


def check_custom(engine: Engine, target: PgTarget, source: DumpSource, reporter: Reporter) -> None:
    """pg_restore must read the file's table of contents and then every byte of its data."""
    name = source.path.name
    with engine.exec_stream(
        target.container.id, _sh(["pg_restore", "--list"]), stdin=True, env=_env()
    ) as stream:
        listing: list[bytes] = []
        stream.feed(source.chunks())
        for chunk in stream.chunks():
            listing.append(chunk)
        error = stream.join_feed()
        code = stream.exit_code()
    if isinstance(error, SnapvolError):
        raise error
    if code != 0:
        raise IntegrityError(
            f"{name} is not readable by pg_restore --list: {_pg_message(stream.stderr)}"
        )
    source.header, source.listed = parse_listing(b"".join(listing).decode("utf-8", "replace"))
    reporter.step(f"reading all of {name} with pg_restore")
    code, stderr = _fed(
        engine, target, ["pg_restore", "--file=/dev/null"], source, reporter, "checking"
    )
    if code != 0:
        raise IntegrityError(
            f"{name} is damaged or truncated (pg_restore cannot read it to the end: "
            f"{_pg_message(stderr)}); nothing was changed"
        )


_HEADER_FIELDS = {
    "dbname": "database",
    "Archive created at": "created",
    "Dumped from database version": "server_version",
    "Dumped by pg_dump version": "pg_dump_version",
    "TOC Entries": "entries",
}


def parse_listing(text: str) -> tuple[dict[str, str], list[str]]:
    """pg_restore --list output: its header fields, and the tables it holds data for."""
    header: dict[str, str] = {}
    tables: list[str] = []
    for line in text.splitlines():
        if line.startswith(";"):
            body = line.lstrip(";").strip()
            for label, key in _HEADER_FIELDS.items():
                if body.startswith(label):
                    header[key] = body[len(label) :].lstrip(": ").strip()
            continue
        _, sep, entry = line.partition("; ")
        if not sep:
            continue
        words = entry.split(" ", 2)  # "<oid> <oid> TABLE DATA schema name owner"
        if len(words) < 3 or not words[2].startswith("TABLE DATA "):
            continue
        rest = words[2][len("TABLE DATA ") :].split(" ")
        if len(rest) >= 3:
            tables.append(dumpfile.table_key(rest[0], " ".join(rest[1:-1])))
    return header, tables


@dataclass
class CurrentDb:
    """The database a restore replaces, as it is now."""

    exists: bool
    owner: str | None = None
    encoding: str | None = None
    create_options: list[str] = field(default_factory=list)  # locale and provider of it
    size_bytes: int | None = None
    tables: dict[str, int] = field(default_factory=dict)  # estimated live rows
    sessions: int = 0
    props: DatabaseProps = field(default_factory=DatabaseProps)  # grants, settings, comment


@dataclass
class LogicalRestorePlan:
    source: DumpSource
    target: PgTarget
    current: CurrentDb
    server_version: str
    server_version_num: int
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    warnings: list[str] = field(default_factory=list)

    @property
    def scratch(self) -> str:
        return _derived_name(self.target.database, f"__snapvol_{self.token}")

    @property
    def retired(self) -> str:
        return _derived_name(self.target.database, f"__snapvol_old_{self.token}")


def _derived_name(database: str, suffix: str) -> str:
    """``<database><suffix>`` cut to PostgreSQL's 63 bytes (the suffix, with its token, kept)."""
    room = _MAX_IDENT - len(suffix.encode())
    base = database.encode()[:room].decode("utf-8", "ignore")
    return base + suffix


def current_db(engine: Engine, target: PgTarget) -> CurrentDb:
    rows = psql(
        engine,
        target,
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), pg_database_size(oid), "
        "to_jsonb(d), (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid), "
        f"{dbprops.COLUMN} FROM pg_database d WHERE datname = {literal(target.database)}",
        database=target.maintenance_db,
    )
    if not rows:
        return CurrentDb(exists=False)
    owner, encoding, size, raw, sessions, props = rows[0]
    attrs = json.loads(raw)
    options = [
        f"LC_COLLATE {literal(attrs['datcollate'])}",
        f"LC_CTYPE {literal(attrs['datctype'])}",
    ]
    # PostgreSQL 15+ may use ICU, 17+ its builtin provider (17 renamed daticulocale datlocale).
    locale = attrs.get("datlocale") or attrs.get("daticulocale") or ""
    if attrs.get("datlocprovider") == "i":
        options += ["LOCALE_PROVIDER icu", f"ICU_LOCALE {literal(locale)}"]
    elif attrs.get("datlocprovider") == "b":
        options += ["LOCALE_PROVIDER builtin", f"BUILTIN_LOCALE {literal(locale)}"]
    estimates = psql(
        engine,
        target,
        "SELECT schemaname, relname, n_live_tup FROM pg_stat_user_tables ORDER BY 1, 2",
    )
    return CurrentDb(
        exists=True,
        owner=owner,
        encoding=encoding,
        create_options=options,
        size_bytes=int(size),
        tables=_counts(estimates),
        sessions=int(sessions),
        props=DatabaseProps.from_json(props),
    )


def plan_restore(
    engine: Engine, target: PgTarget, source: DumpSource, reporter: Reporter
) -> LogicalRestorePlan:
    """What the restore will replace, looked at before anything is changed."""
    if target.database in ("template0", "template1"):
        raise UsageError(f"refusing to replace the template database {target.database}")
    version, version_num = psql(
        engine,
        target,
        ["SHOW server_version", "SHOW server_version_num"],
        database=target.maintenance_db,
    )
    plan = LogicalRestorePlan(
        source=source,
        target=target,
        current=current_db(engine, target),
        server_version=version[0].split()[0],
        server_version_num=int(version_num[0]),
    )
    dumped = (source.snapshot.pg_version if source.snapshot else None) or source.header.get(
        "server_version"
    )
    if dumped and _major(dumped) > _major(plan.server_version):
        plan.warnings.append(
            f"the dump comes from PostgreSQL {dumped.split()[0]} and the server runs "
            f"{plan.server_version}: it may not restore (nothing changes if it does not)"
        )
    snap = source.snapshot
    if snap is not None and snap.database and snap.database != target.database:
        plan.warnings.append(
            f"restoring into database {target.database}, not the snapshot's own {snap.database}"
        )
    if plan.current.sessions:
        plan.warnings.append(
            f"{plan.current.sessions} session(s) connected to {target.database} will be "
            "disconnected at the swap"
        )
    return plan


def _major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


@dataclass
class LogicalRestoreResult:
    plan: LogicalRestorePlan
    tables: dict[str, int]
    duration_s: float
    retired_kept: str | None  # the replaced database's name when it could not be dropped


def _drop(engine: Engine, plan: LogicalRestorePlan, name: str) -> None:
    force = " WITH (FORCE)" if plan.server_version_num >= 130000 else ""
    psql(
        engine,
        plan.target,
        f"DROP DATABASE IF EXISTS {ident(name)}{force}",
        database=plan.target.maintenance_db,
    )


_LEFTOVER = re.compile(r"(?P<base>.*)__snapvol_(?:old_)?[0-9a-f]{8}")


def drop_leftovers(engine: Engine, plan: LogicalRestorePlan, reporter: Reporter) -> list[str]:
    """Drop the scratch or replaced copies of this database that a killed restore left behind.

    Safe because the caller holds the container's lock: no other restore is running on it.
    """
    dropped = []
    rows = psql(
        engine, plan.target, "SELECT datname FROM pg_database", database=plan.target.maintenance_db
    )
    for row in rows:
        match = _LEFTOVER.fullmatch(row[0])
        if match and match["base"] and plan.target.database.startswith(match["base"]):
            _drop(engine, plan, row[0])
            reporter.warn(f"dropped database {row[0]}, left by an interrupted restore")
            dropped.append(row[0])
    return dropped


def restore_logical(
    engine: Engine, plan: LogicalRestorePlan, *, reporter: Reporter
) -> LogicalRestoreResult:
    """Restore into a new database, check it, swap it in; a failure leaves the current one as is."""
    started = time.monotonic()
    target, current = plan.target, plan.current
    owner = current.owner or target.user
    drop_leftovers(engine, plan, reporter)
    create = f"CREATE DATABASE {ident(plan.scratch)} TEMPLATE template0 OWNER {ident(owner)}"
    if current.encoding:
        create += f" ENCODING {literal(current.encoding)} " + " ".join(current.create_options)
    reporter.step(f"creating database {plan.scratch}")
    psql(engine, target, create, database=target.maintenance_db)
    try:
        reporter.step(f"restoring {plan.source.path.name} into {plan.scratch}")
        _load(engine, plan, reporter)
        reporter.step("checking the restored tables and row counts")
        counts = table_counts(engine, target, plan.scratch)
        check_counts(plan.source, counts)
        if current.exists:  # after the load, so no setting of the database's can hinder it
            reporter.step(f"giving {plan.scratch} the grants and settings of {target.database}")
            statements = current.props.statements(plan.scratch, owner)
            if statements:
                psql(engine, target, statements, database=target.maintenance_db)
        reporter.step(f"swapping {plan.scratch} in as {target.database}")
        _swap(engine, plan)
    except BaseException as err:
        with contextlib.suppress(Exception):
            _drop(engine, plan, plan.scratch)
        note = f"database {target.database} was not changed (the new copy was dropped)"
        if isinstance(err, SnapvolError):
            raise type(err)(f"restore failed: {err.message}; {note}") from err
        if isinstance(err, Exception):
            raise OperationFailed(f"restore failed: {type(err).__name__}: {err}; {note}") from err
        raise
    kept: str | None = None
    if current.exists:
        try:
            _drop(engine, plan, plan.retired)
        except SnapvolError as err:
            kept = plan.retired
            reporter.warn(
                f"the replaced database was kept as {plan.retired} ({err}); drop it when done"
            )
    return LogicalRestoreResult(plan, counts, time.monotonic() - started, kept)


def _load(engine: Engine, plan: LogicalRestorePlan, reporter: Reporter) -> None:
    target, source = plan.target, plan.source
    if source.format == CUSTOM:
        argv = ["pg_restore", "--exit-on-error", "-U", target.user, "-d", plan.scratch]
    else:
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        argv += ["-o", "/dev/null", "-U", target.user, "-d", plan.scratch]
    app = f"{APP_NAME}-{plan.token}"
    code, stderr = _fed(engine, target, argv, source, reporter, "restoring", app)
    if code != 0:
        raise OperationFailed(f"{argv[0]} failed (exit {code}): {_pg_message(stderr)}")


def check_counts(source: DumpSource, counts: dict[str, int]) -> None:
    """The restored copy must hold every recorded table, with the recorded number of rows."""
    what = f"snapshot {source.snapshot.id}" if source.snapshot else source.path.name
    problems: list[str] = []
    for table, rows in sorted((source.tables or {}).items()):
        if table not in counts:
            problems.append(f"table {table} is missing")
        elif counts[table] != rows:
            problems.append(f"table {table} has {counts[table]} rows, {what} recorded {rows}")
    if source.tables is None:
        problems += [f"table {t} is missing" for t in source.listed or [] if t not in counts]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise IntegrityError(
            f"the restored copy does not match {what}: {'; '.join(problems[:3])}{more}"
        )


def _swap(engine: Engine, plan: LogicalRestorePlan) -> None:
    """Two renames in one transaction, after disconnecting the current database's sessions.

    Renaming takes the database's lock, so sessions arriving meanwhile wait, then find it gone;
    one that slips in between the disconnect and the lock makes the rename fail: try again.
    """
    target = plan.target
    statements: list[str] = []
    if plan.current.exists:
        statements.append(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = {literal(target.database)} AND pid <> pg_backend_pid()"
        )
    statements.append("BEGIN")
    if plan.current.exists:
        statements.append(
            f"ALTER DATABASE {ident(target.database)} RENAME TO {ident(plan.retired)}"
        )
    statements += [
        f"ALTER DATABASE {ident(plan.scratch)} RENAME TO {ident(target.database)}",
        "COMMIT",
    ]
    for attempt in range(5):
        try:
            psql(engine, target, statements, database=target.maintenance_db)
            return
        except SnapvolError as err:
            if _swapped(engine, plan):  # the answer was lost, not the commit
                return
            if "being accessed by other users" not in str(err) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _swapped(engine: Engine, plan: LogicalRestorePlan) -> bool:
    with contextlib.suppress(SnapvolError):
        names = {
            row[0]
            for row in psql(
                engine,
                plan.target,
                "SELECT datname FROM pg_database WHERE datname IN "
                f"({literal(plan.scratch)}, {literal(plan.retired)}, "
                f"{literal(plan.target.database)})",
                database=plan.target.maintenance_db,
            )
        }
        return plan.scratch not in names and plan.target.database in names
    return False


__all__ = [
    "KIND",
    "SUFFIXES",
    "DumpSource",
    "LogicalRestorePlan",
    "LogicalRestoreResult",
    "PgTarget",
    "file_source",
    "plan_restore",
    "resolve_target",
    "restore_logical",
    "snapshot_logical",
    "snapshot_source",
]
