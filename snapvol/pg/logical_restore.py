"""Logical restores: a snapshot's dump, or a dump file, into a database of a running container.

Into a new database (``<db>__snapvol_<token>``, from template0 with the current one's owner,
encoding and locale), checked (pg_restore/psql stop at the first error; the recorded tables and row
counts must be there), then swapped in by two renames in one transaction; the old database is
dropped only after that committed. Any failure before the swap drops the new database, so the
current one is never touched until a checked copy replaces it. What belongs to the database
itself, not to its contents (grants, settings, comment, connection limit: ``snapvol.pg.dbprops``),
is given to the new one from the one it replaces.

The way back is a safety snapshot: a logical snapshot of the current database, recorded like any
other (meta ``safety_for``), taken after the new copy was checked and right before the swap, in a
session that holds the current database's tables so that writes wait from the dump to the swap
(which disconnects them): it is the database exactly as the restore replaced it, and
``snapvol restore <safety>`` undoes the restore. Taken earlier, writes made during the load would
be in neither database. If it fails, the new copy is dropped and nothing was changed.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from snapvol import lifecycle
from snapvol.adapters.engine import Engine
from snapvol.adapters.exec_frames import ExecStream
from snapvol.adapters.store import Snapshot
from snapvol.errors import (
    IncompatibleError,
    IntegrityError,
    OperationFailed,
    SnapvolError,
    UsageError,
)
from snapvol.options import SnapshotOptions
from snapvol.pg import dbprops, dumpfile, logical, pgexec, sqlscript
from snapvol.pg.dbprops import DatabaseProps
from snapvol.pg.dumpfile import CUSTOM
from snapvol.pg.logical import KIND
from snapvol.pg.pgexec import PgTarget
from snapvol.pg.quoting import ident, literal
from snapvol.pipeline import archive
from snapvol.workspace import Workspace

_MAX_IDENT = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes


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
    roles: list[tuple[str, str]] = field(default_factory=list)  # roles allowed: (role, SQL)
    # A plain file's extensions, found when it was checked (None: read from the script's start).
    extensions: list[sqlscript.Extension] | None = None

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
            return archive.file_chunks(self.path), pgexec.decompressing(tool), self.size_bytes
        return self.chunks(), 'exec "$@"', self.raw_bytes


@dataclass(frozen=True)
class RestoreOptions:
    """What a logical restore may do besides loading the dump as it is."""

    # Skip the dump's owners and privileges (a dump from a server whose roles do not exist
    # here): the database's owner gets every object. Only pg_restore can: custom format only.
    no_owner: bool = False
    # Snapshot the current database right before the swap: the way back.
    safety: bool = True
    # A plain SQL dump file may create the roles it needs (never superusers, never a change
    # to an existing role).
    allow_roles: bool = False
    # A partial restore (custom format, into a database that does not exist yet): only these
    # tables (pg_restore --table: by name, in any schema) and the tables of these schemas.
    tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()


def snapshot_source(ws: Workspace, snapshot: Snapshot) -> DumpSource:
    """A logical snapshot as a restore source, after its SHA-256 was verified."""
    if snapshot.kind != KIND:
        raise UsageError(f"snapshot {snapshot.id} is a {snapshot.kind} snapshot, not a logical one")
    lifecycle.check_archive(snapshot, ws.reporter)
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


def file_source(
    ws: Workspace, target: PgTarget, path: Path, options: RestoreOptions = RestoreOptions()
) -> DumpSource:
    """A dump file as a restore source, validated whole before anything is changed (a plain
    script is read here once, to its end; then only by the load)."""
    reporter = ws.reporter
    reporter.step(f"checking {path}")
    with reporter.transfer("checking", Path(path).stat().st_size if path.exists() else None) as adv:
        dump = dumpfile.inspect_file(path, adv, allow_roles=options.allow_roles)
    source = DumpSource(**{f.name: getattr(dump, f.name) for f in fields(dump)})
    if source.format == CUSTOM:
        check_custom(ws, target, source)
    return source


def _run_with_dump(
    ws: Workspace, target: PgTarget, argv: list[str], source: DumpSource, label: str
) -> tuple[int, str]:
    """Run ``argv`` with the whole dump on its stdin; returns its exit code and stderr
    (``_finish_fed`` raises for a corrupt source or a short read)."""
    engine = ws.engine
    chunks, script, expected = source.feed_plan(pgexec.has_zstd(engine, target), argv[0])
    with (
        engine.exec_stream(
            target.container.id, pgexec.shell(argv, script), stdin=True, **target.exec_options()
        ) as st,
        ws.reporter.transfer(label, expected) as advance,
    ):
        st.feed(chunks, advance)
        return _finish_fed(st, argv[0], source.path.name, expected)


def _finish_fed(
    st: ExecStream, tool: str, what: str, expected: int | None = None
) -> tuple[int, str]:
    """Wait for a command being fed ``what`` on its stdin (``tool``: its name): its output read
    to the end, its stdin written, its exit code; returns the code and its stderr.

    Raised here, for every command a restore feeds: a corrupt source (what the feed read
    raised), and a command that exits 0 although it stopped reading before the end, or read
    other than the ``expected`` number of bytes.
    """
    st.drain()
    error = st.join_feed()
    code = st.exit_code()
    if isinstance(error, SnapvolError):
        raise error
    if code == 0 and error is not None:
        raise OperationFailed(f"{tool} stopped reading {what}: {error}")
    if code == 0 and expected is not None and st.fed_bytes != expected:
        raise OperationFailed(f"{tool} read {st.fed_bytes} bytes of {what}, expected {expected}")
    return code, st.stderr


def check_custom(ws: Workspace, target: PgTarget, source: DumpSource) -> None:
    """pg_restore must read the file's table of contents and then every byte of its data."""
    engine, name = ws.engine, source.path.name
    with engine.exec_stream(
        target.container.id,
        pgexec.shell(["pg_restore", "--list"]),
        stdin=True,
        **target.exec_options(),
    ) as stream:
        listing: list[bytes] = []
        stream.feed(source.chunks())
        for chunk in stream.chunks():
            listing.append(chunk)
        stream.stop_feed()  # its output ended: it read the table of contents and no more
        error = stream.join_feed()
        code = stream.exit_code()
    if isinstance(error, SnapvolError):
        raise error
    if code != 0:
        raise IntegrityError(
            f"{name} is not readable by pg_restore --list: {pgexec.pg_message(stream.stderr)}"
        )
    source.header, source.listed = parse_listing(b"".join(listing).decode("utf-8", "replace"))
    ws.reporter.step(f"reading all of {name} with pg_restore")
    code, stderr = _run_with_dump(
        ws, target, ["pg_restore", "--file=/dev/null"], source, "checking"
    )
    if code != 0:
        raise IntegrityError(
            f"{name} is damaged or truncated (pg_restore cannot read it to the end: "
            f"{pgexec.pg_message(stderr)}); nothing was changed"
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
    closed: bool = False  # a killed restore left it closed to sessions: this one opens it


@dataclass
class LogicalRestorePlan:
    source: DumpSource
    target: PgTarget
    current: CurrentDb
    server_version: str
    server_version_num: int
    no_owner: bool = False  # every object owned by the database's owner; no GRANTs from the dump
    safety: bool = True  # snapshot the current database before the swap (if there is one)
    allow_roles: bool = False  # the dump may create the roles it needs (never superusers)
    new_roles: list[str] = field(default_factory=list)  # the roles the dump will create
    existing_roles: list[str] = field(default_factory=list)  # its roles already here: kept as is
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    warnings: list[str] = field(default_factory=list)
    # The dump's extensions, created as the superuser before the load (untrusted ones need it),
    # and the schemas made for them (given to the load role; the dump's CREATE SCHEMA skipped).
    extensions: list[sqlscript.Extension] = field(default_factory=list)
    schemas_made: list[str] = field(default_factory=list)
    only_tables: tuple[str, ...] = ()  # a partial restore: these tables (any schema)...
    only_schemas: tuple[str, ...] = ()  # ... and these schemas' (none: the whole dump)
    # Recorded with the safety snapshot besides ``safety_for``: where it was taken, when the
    # target is not a container of the engine's (a Kubernetes pod's).
    safety_meta: dict[str, object] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.only_tables or self.only_schemas)

    def selects(self, table: str) -> bool:
        """Whether the restore brings ``table`` (``schema.table``, as the store names it)."""
        if not self.partial:
            return True
        schema, _, name = table.partition(".")
        return name in self.only_tables or schema in self.only_schemas

    @property
    def db_owner(self) -> str:
        """Who owns the database after the restore: the current one's owner (or our role)."""
        return self.current.owner or self.target.user

    @property
    def scratch(self) -> str:
        return _derived_name(self.target.database, f"__snapvol_{self.token}")

    @property
    def retired(self) -> str:
        return _derived_name(self.target.database, f"__snapvol_old_{self.token}")

    @property
    def takes_safety(self) -> bool:
        """A new database replaces nothing: it needs no way back."""
        return self.safety and self.current.exists

    @property
    def safety_for(self) -> str:
        """What the safety snapshot is recorded as being for: the snapshot's id or the file."""
        return self.source.snapshot.id if self.source.snapshot else self.source.path.name

    @property
    def app(self) -> str:
        """The application_name of this restore's sessions."""
        return f"{pgexec.APP_NAME}-{self.token}"


def _derived_name(database: str, suffix: str) -> str:
    """``<database><suffix>`` cut to PostgreSQL's 63 bytes (the suffix, with its token, kept)."""
    room = _MAX_IDENT - len(suffix.encode())
    base = database.encode()[:room].decode("utf-8", "ignore")
    return base + suffix


def current_db(engine: Engine, target: PgTarget) -> CurrentDb:
    rows = pgexec.psql(
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
    current = CurrentDb(
        exists=True,
        owner=owner,
        encoding=encoding,
        create_options=_create_options(attrs),
        size_bytes=int(size),
        sessions=int(sessions),
        props=DatabaseProps.from_json(props),
    )
    if not attrs.get("datallowconn", True):
        if not _left_closed(engine, target):
            raise OperationFailed(
                f"database {target.database} does not allow connections (ALLOW_CONNECTIONS "
                "false); nothing was changed"
            )
        current.closed = True  # by a killed swap: the restore opens it first (no estimates)
        return current
    estimates = pgexec.psql(
        engine,
        target,
        "SELECT schemaname, relname, n_live_tup FROM pg_stat_user_tables ORDER BY 1, 2",
    )
    current.tables = pgexec.parse_counts(estimates)
    return current


def _create_options(attrs: dict[str, Any]) -> list[str]:
    """The locale of the database (its ``pg_database`` row) as CREATE DATABASE options."""
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
    return options


def plan_restore(
    ws: Workspace,
    target: PgTarget,
    source: DumpSource,
    options: RestoreOptions = RestoreOptions(),
) -> LogicalRestorePlan:
    """What the restore will replace, looked at before anything is changed; refuses
    ``options`` that do not fit the source."""
    engine = ws.engine
    if target.database in ("template0", "template1"):
        raise UsageError(f"refusing to replace the template database {target.database}")
    if options.no_owner and source.format != CUSTOM:
        raise UsageError(
            "skipping the dump's owners needs a custom-format dump: a plain SQL script sets its "
            "owners itself"
        )
    if options.allow_roles and (source.format == CUSTOM or source.snapshot is not None):
        raise UsageError(
            "letting a dump create roles goes with a plain SQL dump file, not a custom-format "
            "dump or a snapshot: pg_dump's own dumps never create roles"
        )
    version, version_num, superuser = pgexec.psql(
        engine,
        target,
        [
            "SHOW server_version",
            "SHOW server_version_num",
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        ],
        database=target.maintenance_db,
    )
    if superuser != ["t"]:
        raise UsageError(
            f"a logical restore needs a superuser to restore as: role {target.user} is not one "
            "(snapvol loads the dump as a temporary role of its own and then gives the objects "
            "their owners); nothing was changed",
            retry_with={"user": ""},
        )
    plan = LogicalRestorePlan(
        source=source,
        target=target,
        current=current_db(engine, target),
        server_version=version[0].split()[0],
        server_version_num=int(version_num[0]),
        no_owner=options.no_owner,
        safety=options.safety,
        allow_roles=options.allow_roles,
        only_tables=options.tables,
        only_schemas=options.schemas,
    )
    if plan.current.closed:
        plan.warnings.append(
            f"database {target.database} was left closed to new sessions by an interrupted "
            "restore: this restore opens it again first"
        )
    if plan.partial:
        _check_partial(plan)
    names = list(dict.fromkeys(name for name, _ in source.roles))
    if names:
        present = {
            row[0]
            for row in pgexec.psql(
                engine,
                target,
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(ARRAY["
                + ", ".join(literal(n) for n in names)
                + "]::text[])",
                database=target.maintenance_db,
            )
        }
        plan.new_roles = [n for n in names if n not in present]
        plan.existing_roles = [n for n in names if n in present]
    _plan_extensions(engine, plan)
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
            + (" (their writes wait from the safety snapshot on)" if plan.takes_safety else "")
        )
    return plan


def _check_partial(plan: LogicalRestorePlan) -> None:
    """A partial restore reads a custom-format dump and makes a new database: it never
    replaces a database with a part of one. What it selects must be in the dump."""
    if plan.source.format != CUSTOM:
        raise UsageError("--table and --schema need a custom-format dump (pg_restore's)")
    if plan.current.exists:
        raise UsageError(
            f"a partial restore creates a new database, and {plan.target.database} exists: "
            "name a new one with --database; nothing was changed"
        )
    known = set(plan.source.tables or {}) | set(plan.source.listed or [])
    if known and not any(plan.selects(t) for t in known):
        raise UsageError(
            "the dump holds no table that --table / --schema select "
            f"(it holds {', '.join(sorted(known)[:5])}{'...' if len(known) > 5 else ''})"
        )


def _plan_extensions(engine: Engine, plan: LogicalRestorePlan) -> None:
    """The dump's extensions (a checked file's, else read from the start of its script: pg_dump
    writes them before any object), each of which must be installed on the server; found out
    before anything changes."""
    extensions = plan.source.extensions
    if extensions is None:
        extensions = _read_extensions(engine, plan)
    if not extensions:
        return
    names = sorted({e.name for e in extensions})
    available = {
        row[0]
        for row in pgexec.psql(
            engine,
            plan.target,
            "SELECT name FROM pg_available_extensions WHERE name = ANY(ARRAY["
            + ", ".join(literal(n) for n in names)
            + "]::text[])",
            database=plan.target.maintenance_db,
        )
    }
    missing = [n for n in names if n not in available]
    if missing:
        raise IncompatibleError(
            f"the dump needs extension(s) {', '.join(missing)}, not installed on the server in "
            f"container {plan.target.container.name}; nothing was changed"
        )
    plan.extensions = extensions
    plan.schemas_made = list(
        dict.fromkeys(
            e.schema
            for e in extensions
            if e.schema is not None and e.schema not in ("public", "pg_catalog")
        )
    )


def _read_extensions(engine: Engine, plan: LogicalRestorePlan) -> list[sqlscript.Extension]:
    """The CREATE EXTENSION statements at the start of the script psql will be given."""
    script = sqlscript.ScriptFilter(plan.source.path.name, allow_role=roles_allowed(plan))
    for chunk in _script_start(engine, plan):
        script.feed(chunk)
        if not script.prologue:
            break
    return script.extensions


def _script_start(engine: Engine, plan: LogicalRestorePlan) -> Iterator[bytes]:
    """The script psql will be given, from its start, for as long as it is read."""
    if plan.source.format != CUSTOM:
        yield from plan.source.chunks()
        return
    with _pg_restore_script(engine, plan) as (src, chunks, _):
        src.feed(chunks)
        try:
            yield from src.chunks()
        finally:
            src.close()
            src.join_feed()


@contextlib.contextmanager
def _pg_restore_script(
    engine: Engine, plan: LogicalRestorePlan
) -> Iterator[tuple[ExecStream, Iterable[bytes], int | None]]:
    """``pg_restore -f -`` started in the container: the stream of the script a custom archive's
    entries make, with the archive's bytes to feed it and how many there are."""
    source, target = plan.source, plan.target
    chunks, shell_script, expected = source.feed_plan(pgexec.has_zstd(engine, target), "pg_restore")
    argv = ["pg_restore", "-f", "-"]
    if plan.no_owner:
        argv += ["--no-owner", "--no-privileges"]
    argv += [f"--table={t}" for t in plan.only_tables]
    argv += [f"--schema={n}" for n in plan.only_schemas]
    with engine.exec_stream(
        target.container.id,
        pgexec.shell(argv, shell_script),
        stdin=True,
        **target.exec_options(plan.app),
    ) as src:
        yield src, chunks, expected


def _major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


@dataclass
class LogicalRestoreResult:
    plan: LogicalRestorePlan
    tables: dict[str, int]
    duration_s: float
    retired_kept: str | None  # the replaced database's name when it could not be dropped
    safety: Snapshot | None = None  # the way back: restoring it undoes this restore


def _drop(engine: Engine, plan: LogicalRestorePlan, name: str) -> None:
    force = " WITH (FORCE)" if plan.server_version_num >= 130000 else ""
    pgexec.psql(
        engine,
        plan.target,
        f"DROP DATABASE IF EXISTS {ident(name)}{force}",
        database=plan.target.maintenance_db,
    )


_LEFTOVER = re.compile(r"(?P<base>.*)__snapvol_(?:old_)?[0-9a-f]{8}")


def drop_leftovers(ws: Workspace, plan: LogicalRestorePlan) -> list[str]:
    """Drop the scratch or replaced copies of this database that a killed restore left behind.

    Safe because the caller holds the container's lock: no other restore is running on it.
    """
    engine = ws.engine
    dropped = []
    rows = pgexec.psql(
        engine, plan.target, "SELECT datname FROM pg_database", database=plan.target.maintenance_db
    )
    for row in rows:
        match = _LEFTOVER.fullmatch(row[0])
        if match and match["base"] and plan.target.database.startswith(match["base"]):
            _drop(engine, plan, row[0])
            ws.reporter.warn(f"dropped database {row[0]}, left by an interrupted restore")
            dropped.append(row[0])
    return dropped


def restore_logical(ws: Workspace, plan: LogicalRestorePlan) -> LogicalRestoreResult:
    """Restore into a new database, check it, take the safety snapshot, swap the new one in.

    Any failure before the swap (the safety snapshot's included) leaves the current one as is.
    """
    engine, reporter = ws.engine, ws.reporter
    started = time.monotonic()
    target, current = plan.target, plan.current
    owner = plan.db_owner
    if current.closed and not reopen_if_interrupted(engine, target):  # before its copy goes
        raise OperationFailed(
            f"database {target.database} does not allow connections; nothing was changed"
        )
    drop_leftovers(ws, plan)
    if plan.takes_safety:
        _check_backup_dir(ws.backup_dir)  # before the load, not after it
    create = f"CREATE DATABASE {ident(plan.scratch)} TEMPLATE template0 OWNER {ident(owner)}"
    if current.encoding:
        create += f" ENCODING {literal(current.encoding)} " + " ".join(current.create_options)
    reporter.step(f"creating database {plan.scratch}")
    pgexec.psql(engine, target, create, database=target.maintenance_db)
    held: logical.Held | None = None
    safety: Snapshot | None = None
    try:
        reporter.step(f"restoring {plan.source.path.name} into {plan.scratch}")
        _load(ws, plan)
        reporter.step("checking the restored tables and row counts")
        counts = pgexec.table_counts(engine, target, plan.scratch)
        check_counts(plan.source, counts, plan.selects)
        if current.exists:  # after the load, so no setting of the database's can hinder it
            reporter.step(f"giving {plan.scratch} the grants and settings of {target.database}")
            _give_props(engine, plan, current.props.statements(plan.scratch, owner))
        if plan.takes_safety:
            held, safety = _safety_snapshot(ws, plan)
        reporter.step(f"swapping {plan.scratch} in as {target.database}")
        _swap(engine, plan, held)  # which ends the held session last
    except BaseException as err:
        with contextlib.suppress(Exception):
            _drop(engine, plan, plan.scratch)
        note = f"database {target.database} was not changed (the new copy was dropped)"
        if isinstance(err, SnapvolError):
            raise type(err)(
                f"restore failed: {err.message}; {note}", retry_with=err.retry_with
            ) from err
        if isinstance(err, Exception):
            raise OperationFailed(f"restore failed: {type(err).__name__}: {err}; {note}") from err
        raise
    finally:
        if held is not None:
            with contextlib.suppress(Exception):
                held.release()
    kept: str | None = None
    if current.exists:
        try:
            _drop(engine, plan, plan.retired)
        except SnapvolError as err:
            kept = plan.retired
            with contextlib.suppress(SnapvolError):  # the swap had closed it
                pgexec.psql(
                    engine,
                    target,
                    pgexec.allow_connections_sql(kept),
                    database=target.maintenance_db,
                )
            reporter.warn(
                f"the replaced database was kept as {plan.retired} ({err}); drop it when done"
            )
    return LogicalRestoreResult(plan, counts, time.monotonic() - started, kept, safety)


def _check_backup_dir(backup_dir: Path) -> None:
    """The safety snapshot must have somewhere to go; found out before an hour-long load."""
    try:
        archive.ensure_private_dir(backup_dir)
    except OSError as err:
        raise OperationFailed(
            f"cannot write the safety snapshot into {backup_dir}: {err.strerror or err}; "
            "nothing was changed"
        ) from err


_WITHOUT = " (a restore can go without a safety snapshot, and then without a way back)"
_GO_WITHOUT = {"safety_snapshot": "false"}


def _safety_snapshot(ws: Workspace, plan: LogicalRestorePlan) -> tuple[logical.Held, Snapshot]:
    """Stop writes to the current database and snapshot it: what the swap will replace.

    The held session stays open (writes keep waiting) until the swap disconnects it.
    """
    engine, reporter = ws.engine, ws.reporter
    target = plan.target
    reporter.step(f"holding writes to {target.database} for its safety snapshot")
    try:
        held = logical.hold_still(engine, target, plan.app, reporter)
    except SnapvolError as err:
        raise type(err)(
            f"no safety snapshot: {err.message}{_WITHOUT}",
            retry_with={**err.retry_with, **_GO_WITHOUT},
        ) from err
    name = lifecycle.unique_name(ws.store, None, target.container.name, "safety")
    try:
        safety = logical.snapshot_logical(
            ws,
            target,
            SnapshotOptions(name=name),
            held=held,
            meta={**plan.safety_meta, "safety_for": plan.safety_for},
        )
    except BaseException as err:
        held.release()
        if isinstance(err, SnapvolError):
            raise type(err)(
                f"the safety snapshot failed: {err.message}{_WITHOUT}",
                retry_with={**err.retry_with, **_GO_WITHOUT},
            ) from err
        raise
    reporter.step(f"safety snapshot {safety.id} ({safety.name}) taken")
    return held, safety


def _give_props(engine: Engine, plan: LogicalRestorePlan, statements: list[str]) -> None:
    """Run the statements through psql's stdin: settings may hold secrets (PostgREST keeps its
    JWT secret in ``ALTER DATABASE … SET``), which must never be in a process's arguments."""
    if not statements:
        return
    session = pgexec.PsqlSession(engine, plan.target, plan.target.maintenance_db, plan.app)
    try:
        for statement in statements:
            session.query(statement)
    finally:
        session.close()


LOAD_ROLE_PREFIX = "snapvol_restore_"
_LEFTOVER_ROLE = re.compile(re.escape(LOAD_ROLE_PREFIX) + r"[0-9a-f]{8}")


@dataclass(frozen=True)
class LoadRole:
    """The role a dump is loaded as: it owns the new database and nothing else, and may not
    create roles or databases, read server files or become anyone else (not a superuser)."""

    name: str
    password: str = field(repr=False)


def _load(ws: Workspace, plan: LogicalRestorePlan) -> None:
    """Load the dump into the new database as a temporary role without superuser rights.

    Every script psql runs (a plain dump, or what ``pg_restore -f -`` makes of a custom one)
    passes through ``sqlscript.ScriptFilter`` on the host: meta-commands and statements that
    reach beyond the database are refused, naming their line, and the ``ALTER … OWNER TO``
    statements are kept back. After the load they are applied as the superuser, whatever the
    role still owns goes to the database's owner, and the role is dropped.
    """
    engine, reporter = ws.engine, ws.reporter
    _drop_leftover_roles(engine, plan)
    role = LoadRole(LOAD_ROLE_PREFIX + plan.token, secrets.token_urlsafe(24))
    created: list[str] = []
    try:
        _as_superuser(
            engine,
            plan,
            plan.target.maintenance_db,
            [
                f"CREATE ROLE {ident(role.name)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                f"NOREPLICATION NOBYPASSRLS PASSWORD {literal(role.password)}",
                f"ALTER DATABASE {ident(plan.scratch)} OWNER TO {ident(role.name)}",
            ],
        )
        login = _login_options(engine, plan, role)
        _create_extensions(ws, plan, role)
        created = _create_roles(ws, plan)
        script = sqlscript.ScriptFilter(
            plan.source.path.name,
            keep_owners=not plan.no_owner,
            allow_role=roles_allowed(plan),
            extensions_made=frozenset(e.name for e in plan.extensions),
            schemas_made=frozenset(plan.schemas_made),
        )
        restrict = secrets.token_hex(16) if pgexec.psql_restricts(engine, plan.target) else None
        if plan.source.format == CUSTOM:
            _load_custom(ws, plan, login, script, restrict)
        else:
            _load_plain(ws, plan, login, script, restrict)
        _check_database_untouched(engine, plan)
        if script.owner_statements:
            reporter.step(f"giving {len(script.owner_statements)} objects their owners")
        owner = plan.db_owner
        _as_superuser(
            engine,
            plan,
            plan.scratch,
            [
                "SELECT pg_catalog.set_config('search_path', '', false)",
                *script.owner_statements,
                f"REASSIGN OWNED BY {ident(role.name)} TO {ident(owner)}",
                f"DROP OWNED BY {ident(role.name)}",
            ],
        )
    except BaseException:
        with contextlib.suppress(Exception):
            _drop(engine, plan, plan.scratch)  # before the roles: they may own things in it
        for name in created:
            with contextlib.suppress(Exception):
                _as_superuser(
                    engine, plan, plan.target.maintenance_db, [f"DROP ROLE IF EXISTS {ident(name)}"]
                )
        raise
    finally:
        try:
            _as_superuser(
                engine,
                plan,
                plan.target.maintenance_db,
                [f"DROP ROLE IF EXISTS {ident(role.name)}"],
            )
        except SnapvolError as err:
            reporter.warn(f"could not drop the restore's role {role.name} ({err}); drop it")


# How a server says no to a login (not: it is down, or the database is missing).
_AUTH_FAILED = (
    "authentication failed",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
)


def _login_options(engine: Engine, plan: LogicalRestorePlan, role: LoadRole) -> dict[str, Any]:
    """How psql logs in as the load role: over the server's socket, else (``peer``-only local
    authentication, as Debian's packages set up: there is no OS user of the role's name) over
    TCP to 127.0.0.1 with its password. Found out with ``SELECT 1`` before the load."""
    options = plan.target.exec_options(plan.app)
    socket = {**options, "env": {**options["env"], **pgexec.role_env(role.password)}}
    tcp = {
        **socket,
        "env": {**socket["env"], "PGHOST": "127.0.0.1", "PGPORT": plan.target.port or "5432"},
    }
    argv = ["psql", "-X", "-q", "-A", "-t", "-U", role.name, "-d", plan.scratch, "-c", "SELECT 1"]
    failures = []
    for how, opts in (("the local socket", socket), ("127.0.0.1", tcp)):
        code, _, err = engine.exec_run(plan.target.container.id, pgexec.shell(argv), **opts)
        if code == 0:
            return opts
        message = pgexec.pg_message(err.decode("utf-8", "replace"))
        if how == "the local socket" and not any(m in message for m in _AUTH_FAILED):
            raise OperationFailed(f"the restore's role {role.name} cannot log in: {message}")
        failures.append(message)
    raise OperationFailed(
        f"the restore's temporary role cannot log in ({'; '.join(failures)}): snapvol loads a "
        "dump as a role of its own with a password, so pg_hba.conf must allow password login "
        "on the local socket or from 127.0.0.1 (e.g. 'host all all 127.0.0.1/32 scram-sha-256')"
    )


def _create_extensions(ws: Workspace, plan: LogicalRestorePlan, role: LoadRole) -> None:
    """The dump's extensions, created as the superuser in the new database before the load:
    nothing of the dump exists there yet that an extension's script could be fooled by. A
    schema one goes into is made here (empty) and given to the load role."""
    if not plan.extensions:
        return
    ws.reporter.step(f"creating extension(s) {', '.join(e.name for e in plan.extensions)}")
    _as_superuser(
        ws.engine,
        plan,
        plan.scratch,
        [
            *(
                f"CREATE SCHEMA {ident(schema)} AUTHORIZATION {ident(role.name)}"
                for schema in plan.schemas_made
            ),
            *(extension.sql() for extension in plan.extensions),
        ],
    )


def roles_allowed(plan: LogicalRestorePlan) -> sqlscript.RoleCheck | None:
    """With ``allow_roles``, the check that takes the dump's role statements out of the load
    (they ran before it); without, None: the filter refuses them."""
    return sqlscript.RoleCheck() if plan.allow_roles else None


def _create_roles(ws: Workspace, plan: LogicalRestorePlan) -> list[str]:
    """``allow_roles``: the roles the dump creates, made before the load, as the superuser;
    a role that already exists is left exactly as it is (its ALTER ROLE statements skipped)."""
    if not plan.new_roles:
        return []
    ws.reporter.step(f"creating role(s) {', '.join(plan.new_roles)}")
    statements = [sql for name, sql in plan.source.roles if name in plan.new_roles]
    _as_superuser(ws.engine, plan, plan.target.maintenance_db, statements)
    return list(plan.new_roles)


def _as_superuser(
    engine: Engine, plan: LogicalRestorePlan, database: str, statements: list[str]
) -> None:
    """Statements through psql's stdin (a password or a setting never in an argument), in one
    transaction; statement logging is off for it (a role's password is in one)."""
    session = pgexec.PsqlSession(engine, plan.target, database, plan.app)
    try:
        session.query("SET log_statement = 'none'")
        session.query("BEGIN")
        for statement in statements:
            session.query(statement)
        session.query("COMMIT")
    finally:
        session.close()


def _drop_leftover_roles(engine: Engine, plan: LogicalRestorePlan) -> None:
    """Drop the load roles a killed restore left (their databases went with drop_leftovers)."""
    rows = pgexec.psql(
        engine,
        plan.target,
        f"SELECT rolname FROM pg_roles WHERE rolname LIKE {literal(LOAD_ROLE_PREFIX + '%')}",
        database=plan.target.maintenance_db,
    )
    for name, *_rest in rows:
        if _LEFTOVER_ROLE.fullmatch(name):
            with contextlib.suppress(SnapvolError):
                _as_superuser(
                    engine, plan, plan.target.maintenance_db, [f"DROP ROLE IF EXISTS {ident(name)}"]
                )


def _filtered(
    chunks: Iterator[bytes], script: sqlscript.ScriptFilter, restrict: str | None
) -> Iterator[bytes]:
    """The script psql is given: checked on the way, restricted to no meta-command at all."""
    if restrict is not None:
        yield f"\\restrict {restrict}\n".encode()
    for chunk in chunks:
        out = script.feed(chunk)
        if out:
            yield out
    yield script.close()


def _run_psql(
    engine: Engine,
    plan: LogicalRestorePlan,
    login: dict[str, Any],
    script: Iterator[bytes],
) -> None:
    """psql as the load role (``login``: its exec options), one transaction, with ``script`` on
    its stdin."""
    argv = pgexec.script_argv(LOAD_ROLE_PREFIX + plan.token, plan.scratch)
    with engine.exec_stream(
        plan.target.container.id, pgexec.shell(argv), stdin=True, **login
    ) as st:
        st.feed(script)
        code, stderr = _finish_fed(st, "psql", "the script")
    if code != 0:
        raise OperationFailed(f"psql failed (exit {code}): {pgexec.pg_message(stderr)}")


def _load_plain(
    ws: Workspace,
    plan: LogicalRestorePlan,
    login: dict[str, Any],
    script: sqlscript.ScriptFilter,
    restrict: str | None,
) -> None:
    with ws.reporter.transfer("restoring", plan.source.raw_bytes) as advance:
        _run_psql(ws.engine, plan, login, _filtered(plan.source.chunks(advance), script, restrict))


def _load_custom(
    ws: Workspace,
    plan: LogicalRestorePlan,
    login: dict[str, Any],
    script: sqlscript.ScriptFilter,
    restrict: str | None,
) -> None:
    """``pg_restore -f -`` turns the archive into the script its entries make, in the
    container; that script goes through the same filter as a plain dump's, into psql."""
    engine, reporter = ws.engine, ws.reporter
    with (
        _pg_restore_script(engine, plan) as (src, chunks, expected),
        reporter.transfer("restoring", expected) as advance,
    ):
        src.feed(chunks, advance)
        try:
            _run_psql(engine, plan, login, _filtered(src.chunks(), script, restrict))
        except BaseException:
            src.close()  # pg_restore stops at its next write
            src.join_feed()
            raise
        code, stderr = _finish_fed(src, "pg_restore", plan.source.path.name, expected)
    if code != 0:
        raise OperationFailed(f"pg_restore failed (exit {code}): {pgexec.pg_message(stderr)}")


def _check_database_untouched(engine: Engine, plan: LogicalRestorePlan) -> None:
    """The load role owned the new database: it must not have changed its grants, settings,
    comment or connection limit (no statement of the dump may; a function it ran could)."""
    rows = pgexec.psql(
        engine,
        plan.target,
        "SELECT d.datacl IS NULL, d.datconnlimit, shobj_description(d.oid, 'pg_database') IS "
        "NULL, (SELECT count(*) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), "
        "d.datistemplate, d.datallowconn FROM pg_database d "
        f"WHERE datname = {literal(plan.scratch)}",
        database=plan.target.maintenance_db,
    )
    if rows != [["t", "-1", "t", "0", "f", "t"]]:
        raise OperationFailed(
            f"the dump changed the grants or settings of database {plan.scratch} itself, "
            "which a restore never carries"
        )


def check_counts(
    source: DumpSource, counts: dict[str, int], selects: Callable[[str], bool] = lambda _t: True
) -> None:
    """The restored copy must hold every recorded table it ``selects`` (a partial restore's),
    with the recorded number of rows."""
    what = f"snapshot {source.snapshot.id}" if source.snapshot else source.path.name
    problems: list[str] = []
    for table, rows in sorted((source.tables or {}).items()):
        if not selects(table):
            continue
        if table not in counts:
            problems.append(f"table {table} is missing")
        elif counts[table] != rows:
            problems.append(f"table {table} has {counts[table]} rows, {what} recorded {rows}")
    if source.tables is None:
        present = {_listing_form(t) for t in counts}
        problems += [
            f"table {t} is missing"
            for t in source.listed or []
            if selects(t) and _listing_form(t) not in present
        ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise IntegrityError(
            f"the restored copy does not match {what}: {'; '.join(problems[:3])}{more}"
        )


def _listing_form(table: str) -> str:
    """A table's name compared with what ``parse_listing`` read: pg_restore --list separates
    schema, name and owner by spaces only, so a name with spaces in it is read split at another
    space than the schema's end ("Odd Schema"."T" is listed as Odd.Schema T)."""
    return table.replace(" ", ".")


def _swap(engine: Engine, plan: LogicalRestorePlan, held: logical.Held | None) -> None:
    """Two renames in one transaction, once nobody can write to the current database any more.

    In one psql, so that a killed snapvol does not stop it halfway: the database stops taking
    new sessions (``ALLOW_CONNECTIONS false``, which binds superusers too), its sessions are ended
    while ``held`` still holds their writes back, then ``held`` itself, and only then is it
    renamed away. Ending ``held`` first, or letting sessions in after it, would let a write land
    in the database being replaced, after its safety snapshot: acknowledged, then dropped. A
    failure before the renames committed lets sessions in again.
    """
    target, current = plan.target, plan.current
    statements = [_swap_lock(target)]
    if current.exists:
        statements.append(pgexec.allow_connections_sql(target.database, allowed=False))
        if held is not None:
            statements.append(pgexec.end_sessions_sql(target.database, keep_pid=held.pid))
        statements.append(pgexec.end_sessions_sql(target.database))
    statements.append("BEGIN")
    if current.exists:
        statements.append(
            f"ALTER DATABASE {ident(target.database)} RENAME TO {ident(plan.retired)}"
        )
    statements += [
        f"ALTER DATABASE {ident(plan.scratch)} RENAME TO {ident(target.database)}",
        "COMMIT",
    ]
    # Should the psql fail, the database takes sessions again: from the container, so even when
    # snapvol was killed meanwhile (the renames come last: on any failure none committed).
    reopen = pgexec.allow_connections_sql(target.database) if current.exists else None
    try:
        pgexec.psql(engine, target, statements, database=target.maintenance_db, on_failure=reopen)
    except BaseException:
        if current.exists:
            with contextlib.suppress(SnapvolError):
                reopen_if_interrupted(engine, target)
        if _swapped(engine, plan):  # the answer was lost, not the commit
            return
        raise


def _swap_lock(target: PgTarget) -> str:
    """Held by the swap's psql until it exits: what lets a database in again waits for it
    (an interrupted snapvol does not interrupt the psql running in the container)."""
    key = literal(f"snapvol swap {target.database}")
    return f"SELECT pg_advisory_lock(hashtext({key}))"


_SCRATCH_SUFFIX = "__snapvol_00000000"  # the shape of a new copy's suffix (its token)


def _copy_left_sql(target: PgTarget) -> str:
    """A condition: a new copy of ``target``'s database (``plan.scratch``'s name) is left."""
    base = literal(_derived_name(target.database, _SCRATCH_SUFFIX)[: -len(_SCRATCH_SUFFIX)])
    return (
        f"EXISTS (SELECT 1 FROM pg_database WHERE left(datname, length({base})) = {base} "
        f"AND substr(datname, length({base}) + 1) ~ '^__snapvol_[0-9a-f]{{8}}$')"
    )


def _left_closed(engine: Engine, target: PgTarget) -> bool:
    """Whether a new copy of the (closed) database is left: a swap closed it and was killed."""
    rows = pgexec.psql(
        engine, target, f"SELECT {_copy_left_sql(target)}", database=target.maintenance_db
    )
    return rows == [["t"]]


def reopen_if_interrupted(engine: Engine, target: PgTarget) -> bool:
    """Let sessions into ``target``'s database again if a swap closed it and did not finish (a
    new copy of it is left); waits for a swap still running. Whether it takes sessions now."""
    tag = pgexec.dollar_tag()
    db = literal(target.database)
    rows = pgexec.psql(
        engine,
        target,
        [
            _swap_lock(target),
            f"""DO {tag}
BEGIN
  IF EXISTS (SELECT 1 FROM pg_database WHERE datname = {db} AND NOT datallowconn)
     AND {_copy_left_sql(target)} THEN
    EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS true', {db});
  END IF;
END {tag}""",
            f"SELECT datallowconn FROM pg_database WHERE datname = {db}",
        ],
        database=target.maintenance_db,
    )
    return rows == [["t"]]


def _swapped(engine: Engine, plan: LogicalRestorePlan) -> bool:
    with contextlib.suppress(SnapvolError):
        names = {
            row[0]
            for row in pgexec.psql(
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
