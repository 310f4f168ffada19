"""The manifest store: every snapshot and its files, in SQLite through SQLModel.

This is the only module that imports SQLModel/SQLAlchemy. Each write is one transaction; the schema
is created and changed by named, ordered migrations (see ``MIGRATIONS``); the file is created
owner-only before SQLite ever opens it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, delete, event, insert, text, update
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from snapvol.errors import AmbiguousError, NotFoundError, StoreError, UsageError
from snapvol.names import MIN_ID_PREFIX
from snapvol.pipeline.members import Member, as_row, from_row

IN_PROGRESS = "in_progress"
COMPLETE = "complete"
FAILED = "failed"
# A copy that was complete, but whose restic snapshots are no longer in the repository (it was
# re-initialised, or they were forgotten by hand): the next `snapvol copy` makes it again.
LOST = "lost"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Snapshot(SQLModel, table=True):
    """One snapshot: what was archived, from where, where it lives, and how it went."""

    __tablename__ = "snapshots"

    id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    kind: str  # "volume" | "logical"
    status: str = Field(default=IN_PROGRESS, index=True)
    container: str
    container_id: str = ""
    volume: str | None = None
    image: str = ""
    image_id: str = ""
    path: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    raw_bytes: int | None = None
    file_count: int | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)
    completed_at: datetime | None = None
    duration_s: float | None = None
    downtime_s: float | None = None
    pid: int | None = None
    host: str | None = None
    error: str | None = None
    pg_version: str | None = None
    compose_project: str | None = None
    compose_service: str | None = None
    database: str | None = None
    format: str | None = None
    meta_json: str = "{}"
    # The last `snapvol verify` of this snapshot: when, and whether its archive was good.
    verified_at: datetime | None = None
    verify_ok: bool | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return dict(json.loads(self.meta_json or "{}"))

    def to_dict(self, copies: Sequence[Copy] = ()) -> dict[str, Any]:
        """The public JSON shape of a snapshot (``ls --json``, ``snapshot --json``), with
        its ``copies`` in restic repositories (pass ``store.copies(snapshot_id=...)``)."""
        dumped = self.model_dump(exclude={"meta_json", "pid", "host"})
        data = {key: dumped[key] for key in type(self).model_fields if key in dumped}
        for key in ("created_at", "completed_at", "verified_at"):
            if data[key] is not None:
                data[key] = iso_seconds(data[key])
        data["meta"] = self.meta
        data["copies"] = [c.to_dict() for c in copies]
        return data


class FileEntry(SQLModel, table=True):
    """One member of a volume archive, as it passed through the stream.

    The columns are ``members.as_row``'s (names kept exactly, nanoseconds, xattrs as JSON):
    that function and ``members.from_row`` are the only code that converts a ``Member``.
    """

    __tablename__ = "snapshot_files"

    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: str = Field(foreign_key="snapshots.id", index=True)
    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str = ""
    sha256: str | None = None
    mtime_nsec: int | None = None  # the nanoseconds within ``mtime`` (any time fits SQLite)
    xattrs: str | None = None
    devmajor: int | None = None
    devminor: int | None = None
    path_raw: bytes | None = None
    linkname_raw: bytes | None = None

    def member(self) -> Member:
        return from_row(self.model_dump())


class Copy(SQLModel, table=True):
    """One copy of a snapshot to a restic repository: its data and manifest restic snapshots.

    ``snapshot_id`` is no foreign key: a copy outlives the local snapshot it was taken from.
    ``repository_id`` is the repository's own id (``restic cat config``), ``repository`` its
    display form (never credentials).
    """

    __tablename__ = "copies"

    id: str = Field(primary_key=True)
    snapshot_id: str = Field(index=True)
    repository_id: str = Field(index=True)
    repository: str
    status: str = Field(default=IN_PROGRESS)
    data_snapshot: str | None = None
    manifest_snapshot: str | None = None
    raw_sha256: str | None = None  # SHA-256 of the uncompressed stream (a dump's copy)
    content_sha256: str | None = None  # a volume's tar stream: tarscan.ContentDigest
    raw_bytes: int | None = None
    bytes_added: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of a copy, as a snapshot's ``copies`` list shows it."""
        done = self.completed_at
        return {
            "repository": self.repository,
            "restic_snapshot": self.data_snapshot,
            "status": self.status,
            "completed_at": None if done is None else iso_seconds(done),
            "bytes_added": self.bytes_added,
        }


def iso_seconds(value: datetime) -> str:
    """A time as the JSON output shows it: UTC, whole seconds, ``Z``."""
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


class RepoCheck(SQLModel, table=True):
    """One `snapvol verify --repo`: which repository, how deep, when, and what it found."""

    __tablename__ = "repo_checks"

    id: int | None = Field(default=None, primary_key=True)
    repository_id: str = Field(index=True)  # restic's repository id (stable if the URL changes)
    repository: str  # the display form: never credentials
    scope: str  # "structure", "read-data" or "read-data-subset N%"
    ok: bool
    problems: str = ""  # restic's lines, when not ok
    checked_at: datetime = Field(default_factory=utcnow, index=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "repository_id": self.repository_id,
            "scope": self.scope,
            "ok": self.ok,
            "problems": self.problems.splitlines(),
            "checked_at": iso_seconds(self.checked_at),
        }


class Drill(SQLModel, table=True):
    """One `snapvol drill`: a snapshot restored into a throwaway server and checked there.

    ``ok`` is None while it runs (``pid`` and ``host`` say whose run it is); ``counts`` are the
    rows per table per database the drilled server held (JSON), ``detail`` what was checked.
    """

    __tablename__ = "drills"

    id: str = Field(primary_key=True)
    snapshot_id: str = Field(index=True)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    ok: bool | None = None
    error: str | None = None
    counts_json: str | None = None
    detail: str = ""
    pid: int | None = None
    host: str | None = None

    @property
    def counts(self) -> dict[str, dict[str, int]] | None:
        return None if self.counts_json is None else dict(json.loads(self.counts_json))

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of a drill (``drill --json``, ``ls --json``'s ``last_drill``)."""
        done = self.finished_at
        return {
            "id": self.id,
            "snapshot_id": self.snapshot_id,
            "started_at": iso_seconds(self.started_at),
            "finished_at": None if done is None else iso_seconds(done),
            "ok": self.ok,
            "error": self.error,
            "detail": self.detail,
            "counts": self.counts,
        }


def _file_row(snapshot_id: str, m: Member) -> dict[str, Any]:
    return {"snapshot_id": snapshot_id, **as_row(m)}


# --- migrations ------------------------------------------------------------------------------
# Named and ordered; each runs once, in its own transaction, and is recorded in snapvol_migrations.
# Never edit one that has shipped: add a new one.


def _m001_initial(conn: Connection) -> None:
    conn.execute(
        text("""
        CREATE TABLE snapshots (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            container TEXT NOT NULL,
            container_id TEXT NOT NULL DEFAULT '',
            volume TEXT,
            image TEXT NOT NULL DEFAULT '',
            image_id TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL DEFAULT '',
            sha256 TEXT,
            size_bytes INTEGER,
            raw_bytes INTEGER,
            file_count INTEGER,
            created_at DATETIME NOT NULL,
            completed_at DATETIME,
            duration_s FLOAT,
            downtime_s FLOAT,
            pid INTEGER,
            host TEXT,
            error TEXT,
            pg_version TEXT,
            compose_project TEXT,
            compose_service TEXT,
            database TEXT,
            format TEXT,
            meta_json TEXT NOT NULL DEFAULT '{}'
        )""")
    )
    conn.execute(text("CREATE INDEX ix_snapshots_created_at ON snapshots (created_at)"))
    conn.execute(text("CREATE INDEX ix_snapshots_status ON snapshots (status)"))
    conn.execute(
        text("""
        CREATE TABLE snapshot_files (
            id INTEGER PRIMARY KEY,
            snapshot_id TEXT NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            type TEXT NOT NULL,
            size INTEGER NOT NULL,
            mode INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            gid INTEGER NOT NULL,
            mtime INTEGER NOT NULL,
            linkname TEXT NOT NULL DEFAULT '',
            sha256 TEXT
        )""")
    )
    conn.execute(text("CREATE INDEX ix_snapshot_files_snapshot_id ON snapshot_files (snapshot_id)"))


def _m002_verify_result(conn: Connection) -> None:
    """Each snapshot's last verification, which retention uses to keep the newest good one."""
    conn.execute(text("ALTER TABLE snapshots ADD COLUMN verified_at DATETIME"))
    conn.execute(text("ALTER TABLE snapshots ADD COLUMN verify_ok BOOLEAN"))


def _m003_fidelity(conn: Connection) -> None:
    """Nanosecond times, exact byte names, extended attributes and device numbers."""
    for column in (
        "mtime_nsec INTEGER",
        "xattrs TEXT",
        "devmajor INTEGER",
        "devminor INTEGER",
        "path_raw BLOB",
        "linkname_raw BLOB",
    ):
        conn.execute(text(f"ALTER TABLE snapshot_files ADD COLUMN {column}"))


def _m004_copies(conn: Connection) -> None:
    """Copies of snapshots in restic repositories (no foreign key: a copy outlives its local
    snapshot)."""
    conn.execute(
        text("""
        CREATE TABLE copies (
            id TEXT PRIMARY KEY,
            snapshot_id TEXT NOT NULL,
            repository_id TEXT NOT NULL,
            repository TEXT NOT NULL,
            status TEXT NOT NULL,
            data_snapshot TEXT,
            manifest_snapshot TEXT,
            raw_sha256 TEXT,
            raw_bytes INTEGER,
            bytes_added INTEGER,
            created_at DATETIME NOT NULL,
            completed_at DATETIME,
            error TEXT,
            pid INTEGER,
            host TEXT
        )""")
    )
    conn.execute(text("CREATE INDEX ix_copies_snapshot_id ON copies (snapshot_id)"))
    conn.execute(text("CREATE INDEX ix_copies_repository_id ON copies (repository_id)"))


def _m005_repo_checks(conn: Connection) -> None:
    """The results of `snapvol verify --repo` (restic check of a repository)."""
    conn.execute(
        text("""
        CREATE TABLE repo_checks (
            id INTEGER PRIMARY KEY,
            repository_id TEXT NOT NULL,
            repository TEXT NOT NULL,
            scope TEXT NOT NULL,
            ok BOOLEAN NOT NULL,
            problems TEXT NOT NULL DEFAULT '',
            checked_at DATETIME NOT NULL
        )""")
    )
    conn.execute(text("CREATE INDEX ix_repo_checks_repository_id ON repo_checks (repository_id)"))
    conn.execute(text("CREATE INDEX ix_repo_checks_checked_at ON repo_checks (checked_at)"))


def _m006_drills(conn: Connection) -> None:
    """The results of `snapvol drill` (restore drills), which retention also keeps by."""
    conn.execute(
        text("""
        CREATE TABLE drills (
            id TEXT PRIMARY KEY,
            snapshot_id TEXT NOT NULL,
            started_at DATETIME NOT NULL,
            finished_at DATETIME,
            ok BOOLEAN,
            error TEXT,
            counts_json TEXT,
            detail TEXT NOT NULL DEFAULT '',
            pid INTEGER,
            host TEXT
        )""")
    )
    conn.execute(text("CREATE INDEX ix_drills_snapshot_id ON drills (snapshot_id)"))


def _m007_copy_content_digest(conn: Connection) -> None:
    """A volume copy's check is its tar stream's content digest, not the stream's SHA-256."""
    conn.execute(text("ALTER TABLE copies ADD COLUMN content_sha256 TEXT"))


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_verify_result", _m002_verify_result),
    ("003_fidelity", _m003_fidelity),
    ("004_copies", _m004_copies),
    ("005_repo_checks", _m005_repo_checks),
    ("006_drills", _m006_drills),
    ("007_copy_content_digest", _m007_copy_content_digest),
]

_MARKER_TABLE = "snapvol_migrations"


def _missing(path: Path) -> bool:
    """Whether nothing at all is at ``path`` (a dangling symbolic link is something)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    return False


def _refuse_link(path: Path) -> None:
    """The store is opened by its own path, never through a symbolic link."""
    if path.is_symlink():
        raise StoreError(
            f"the manifest store {path} is a symbolic link (to {os.readlink(path)}); "
            "give the store's real path (snapvol never opens or creates it through a link)"
        )


def _create_private(path: Path) -> None:
    """Create the store file owner-only; SQLite gives its -wal/-shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(FileExistsError):  # another run was faster: _tighten checks it
        os.close(os.open(path, flags, 0o600))


def _tighten(path: Path) -> None:
    """Make an existing store (and its -wal/-shm files) owner-only, without following a link:
    tightened if it is ours, refused if another user's store is readable by others."""
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            fd = os.open(each, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise StoreError(f"cannot open the manifest store {each}: {err.strerror}") from None
        try:
            info = os.fstat(fd)
            loose = stat.S_IMODE(info.st_mode) & 0o077
            if loose and info.st_uid != os.geteuid():
                raise StoreError(
                    f"the manifest store {each} is mode {stat.S_IMODE(info.st_mode):04o} and "
                    "not yours; make it owner-only (chmod 600) or use another store"
                )
            if loose:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def _check_is_store(path: Path) -> None:
    """Refuse (without writing) a file that is not SQLite or is SQLite but not ours."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise StoreError(
            f"{path} is not a snapvol manifest store ({err}); left untouched"
        ) from None
    if names and _MARKER_TABLE not in names:
        raise StoreError(
            f"{path} is an SQLite database but not a snapvol manifest store; left untouched"
        )


def peek_refs(path: Path) -> list[tuple[str, str, str]]:
    """The snapshots of the store at ``path``, newest first, as (id, name, what it is), read
    without writing anything (for shell completion): no store is created, tightened or
    migrated, and a missing, linked or unreadable one has none.

    Read as an immutable file: SQLite then creates no -wal or -shm file beside it, and what
    a running snapvol has not checkpointed yet (its store closed) is not seen."""
    if path.is_symlink() or not path.is_file():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            rows = conn.execute(
                "SELECT id, name, kind, status, container, created_at FROM snapshots "
                "ORDER BY created_at DESC"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [
        (sid, name, f"{kind} of {container}, {str(created)[:16]} UTC, {status}")
        for sid, name, kind, status, container, created in rows
    ]


def _set_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Store:
    """The manifest store. Open with ``Store.open(path)``; close when done."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self.engine = engine
        self.created = False

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        """Open the store at ``path``; create it (owner-only) only when ``create`` is given.

        A symbolic link is refused; an existing store is made owner-only (see ``_tighten``).
        ``store.created`` says whether this call created it.
        """
        path = Path(path)
        _refuse_link(path)
        created = _missing(path)
        if created and not create:
            raise StoreError(
                f"no manifest store at {path}: `snapvol snapshot` creates it "
                "(or give --db / SNAPVOL_DB)"
            )
        _check_is_store(path)
        try:
            if created:
                _create_private(path)
            _tighten(path)
        except OSError as err:
            raise StoreError(f"cannot create the manifest store {path}: {err.strerror}") from None
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})
        event.listen(engine, "connect", _set_pragmas)
        store = cls(path, engine)
        store.created = created
        with store._errors():
            store._migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlalchemy.exc.DatabaseError as err:
            raise StoreError(f"manifest store {self.path}: {err.orig}") from None
        except sqlalchemy.exc.OperationalError as err:
            raise StoreError(f"manifest store {self.path}: {err.orig}") from None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._errors(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {_MARKER_TABLE} "
                    "(name TEXT PRIMARY KEY, applied_at DATETIME NOT NULL)"
                )
            )
            done = {r[0] for r in conn.execute(text(f"SELECT name FROM {_MARKER_TABLE}"))}
        known = {name for name, _ in MIGRATIONS}
        if done - known:
            raise StoreError(
                f"manifest store {self.path} was written by a newer snapvol "
                f"(unknown migrations: {', '.join(sorted(done - known))})"
            )
        for name, migration in MIGRATIONS:
            if name in done:
                continue
            with self.engine.begin() as conn:
                migration(conn)
                conn.execute(
                    text(f"INSERT INTO {_MARKER_TABLE} (name, applied_at) VALUES (:n, :t)"),
                    {"n": name, "t": utcnow()},
                )

    # --- snapshots ----------------------------------------------------------------------------

    def add(self, snapshot: Snapshot, meta: Mapping[str, object] | None = None) -> Snapshot:
        """Insert a new record; ``meta``, when given, becomes its ``meta`` mapping."""
        if meta is not None:
            snapshot.meta_json = json.dumps(dict(meta))
        with self._session() as session:
            if session.exec(select(Snapshot).where(Snapshot.name == snapshot.name)).first():
                raise UsageError(f"a snapshot named {snapshot.name!r} already exists")
            session.add(snapshot)
            session.commit()
            return snapshot

    def update(self, snapshot_id: str, **fields: Any) -> Snapshot:
        with self._session() as session:
            snap = session.get(Snapshot, snapshot_id)
            if snap is None:
                raise NotFoundError(f"no snapshot {snapshot_id}")
            for key, value in fields.items():
                setattr(snap, key, value)
            session.add(snap)
            session.commit()
            return snap

    def complete(
        self,
        snapshot_id: str,
        members: Sequence[Member] = (),
        *,
        meta: Mapping[str, object] | None = None,
        **fields: Any,
    ) -> Snapshot:
        """Mark complete and record per-file entries, in one transaction; ``meta``, when given,
        replaces the record's ``meta`` mapping."""
        if meta is not None:
            fields["meta_json"] = json.dumps(dict(meta))
        with self._session() as session:
            snap = session.get(Snapshot, snapshot_id)
            if snap is None:
                raise NotFoundError(f"no snapshot {snapshot_id}")
            if members:
                session.execute(
                    insert(FileEntry),
                    [_file_row(snapshot_id, m) for m in members],
                )
            for key, value in fields.items():
                setattr(snap, key, value)
            snap.status = COMPLETE
            snap.completed_at = utcnow()
            snap.pid = None
            session.add(snap)
            session.commit()
            return snap

    def fail(self, snapshot_id: str, error: str) -> None:
        self.update(snapshot_id, status=FAILED, error=error, pid=None)

    def import_snapshot(self, snapshot: Snapshot, members: Sequence[Member] = ()) -> Snapshot:
        """Insert a record made elsewhere (a repository's manifest) as it is, with its per-file
        entries, in one transaction."""
        with self._session() as session:
            if session.exec(select(Snapshot).where(Snapshot.name == snapshot.name)).first():
                raise UsageError(f"a snapshot named {snapshot.name!r} already exists")
            session.add(snapshot)
            session.flush()
            if members:
                session.execute(insert(FileEntry), [_file_row(snapshot.id, m) for m in members])
            session.commit()
            session.refresh(snapshot)
            return snapshot

    def record_verification(self, snapshot_id: str, ok: bool) -> None:
        """Record the result of verifying a snapshot now (one deleted meanwhile: nothing to do)."""
        with self._session() as session:
            session.execute(
                update(Snapshot)
                .where(col(Snapshot.id) == snapshot_id)
                .values(verified_at=utcnow(), verify_ok=ok)
            )
            session.commit()

    def delete(self, snapshot_id: str) -> None:
        """Forget a snapshot and its per-file entries, in one transaction."""
        with self._session() as session:
            session.execute(delete(FileEntry).where(col(FileEntry.snapshot_id) == snapshot_id))
            session.execute(delete(Snapshot).where(col(Snapshot.id) == snapshot_id))
            session.commit()

    def get(self, snapshot_id: str) -> Snapshot | None:
        with self._session() as session:
            return session.get(Snapshot, snapshot_id)

    def snapshots(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        container: str | None = None,
        kind: str | None = None,
    ) -> list[Snapshot]:
        """Snapshots, newest first; only those with the given status, container and kind."""
        with self._session() as session:
            query = select(Snapshot).order_by(col(Snapshot.created_at).desc())
            for column, value in (
                (Snapshot.status, status),
                (Snapshot.container, container),
                (Snapshot.kind, kind),
            ):
                if value is not None:
                    query = query.where(column == value)
            if limit is not None:
                query = query.limit(limit)
            return list(session.exec(query).all())

    def name_exists(self, name: str) -> bool:
        with self._session() as session:
            return (
                session.exec(select(Snapshot.id).where(Snapshot.name == name)).first() is not None
            )

    def id_exists(self, snapshot_id: str) -> bool:
        return self.get(snapshot_id) is not None

    def resolve(self, ref: str) -> Snapshot:
        """Find a snapshot by id, name, or unique id prefix of at least MIN_ID_PREFIX hex digits."""
        with self._session() as session:
            exact = session.get(Snapshot, ref)
            if exact is not None:
                return exact
            by_name = session.exec(select(Snapshot).where(Snapshot.name == ref)).first()
            if by_name is not None:
                return by_name
            if len(ref) < MIN_ID_PREFIX:
                raise NotFoundError(
                    f"no snapshot with id or name {ref!r} "
                    f"(an id prefix needs {MIN_ID_PREFIX} or more hex digits; see `snapvol ls`)"
                )
            escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            matches = session.exec(
                select(Snapshot).where(col(Snapshot.id).like(f"{escaped}%", escape="\\")).limit(6)
            ).all()
        if not matches:
            raise NotFoundError(f"no snapshot with id or name {ref!r} (see `snapvol ls`)")
        if len(matches) > 1:
            ids = ", ".join(m.id for m in matches[:5])
            raise AmbiguousError(f"{ref!r} matches several snapshots ({ids}); type more of the id")
        return matches[0]

    def members(self, snapshot_id: str) -> list[Member]:
        with self._session() as session:
            rows = session.exec(
                select(FileEntry)
                .where(FileEntry.snapshot_id == snapshot_id)
                .order_by(col(FileEntry.id))
            ).all()
            return [row.member() for row in rows]

    # --- copies in restic repositories -------------------------------------------------------

    def add_copy(self, copy: Copy) -> Copy:
        """Record a copy (normally ``in_progress``, with this run's pid and host)."""
        with self._session() as session:
            session.add(copy)
            session.commit()
            return copy

    def complete_copy(self, copy_id: str, **fields: Any) -> Copy:
        """Mark a copy complete now, setting ``fields`` (data_snapshot, manifest_snapshot...)."""
        with self._session() as session:
            copy = session.get(Copy, copy_id)
            if copy is None:
                raise NotFoundError(f"no copy {copy_id}")
            for key, value in fields.items():
                setattr(copy, key, value)
            copy.status = COMPLETE
            copy.completed_at = utcnow()
            copy.error = None
            copy.pid = None
            session.add(copy)
            session.commit()
            return copy

    def fail_copy(self, copy_id: str, error: str) -> bool:
        """Mark a copy that is still in progress failed with ``error``; whether it was. A copy
        completed meanwhile (its process finished between a recovery's look and this) or
        deleted stays as it is."""
        return self._move_copy(copy_id, IN_PROGRESS, status=FAILED, error=error, pid=None)

    def _move_copy(self, copy_id: str, was: str, **values: Any) -> bool:
        """Set ``values`` on copy ``copy_id`` if its status ``was`` that (in one statement:
        a run that changed it meanwhile wins); whether it was."""
        with self._session() as session:
            result = session.execute(
                update(Copy)
                .where(col(Copy.id) == copy_id, col(Copy.status) == was)
                .values(**values)
            )
            session.commit()
            return bool(getattr(result, "rowcount", 0))

    def lose_copy(self, copy_id: str, error: str) -> bool:
        """Mark a complete copy lost (its restic snapshots are gone) with ``error``; whether
        it was complete."""
        return self._move_copy(copy_id, COMPLETE, status=LOST, error=error)

    def find_copy(self, copy_id: str) -> bool:
        """Mark a lost copy complete again (its repository is back, both its restic snapshots
        in it); whether it was lost."""
        return self._move_copy(copy_id, LOST, status=COMPLETE, error=None)

    def copies(
        self,
        *,
        snapshot_id: str | None = None,
        repository_id: str | None = None,
        status: str | None = None,
    ) -> list[Copy]:
        """Copies, newest first; only those of the given snapshot, repository and status."""
        with self._session() as session:
            query = select(Copy).order_by(col(Copy.created_at).desc(), col(Copy.id))
            for column, value in (
                (Copy.snapshot_id, snapshot_id),
                (Copy.repository_id, repository_id),
                (Copy.status, status),
            ):
                if value is not None:
                    query = query.where(column == value)
            return list(session.exec(query).all())

    def delete_copy(self, copy_id: str) -> None:
        """Forget the record of a copy (after its restic snapshots were forgotten)."""
        with self._session() as session:
            session.execute(delete(Copy).where(col(Copy.id) == copy_id))
            session.commit()

    # --- repository checks --------------------------------------------------------------------

    def record_repo_check(self, check: RepoCheck) -> RepoCheck:
        """Record one `verify --repo` result."""
        with self._session() as session:
            session.add(check)
            session.commit()
            return check

    def repo_checks(self, *, repository_id: str | None = None) -> list[RepoCheck]:
        """Recorded repository checks, newest first."""
        with self._session() as session:
            query = select(RepoCheck).order_by(
                col(RepoCheck.checked_at).desc(), col(RepoCheck.id).desc()
            )
            if repository_id is not None:
                query = query.where(RepoCheck.repository_id == repository_id)
            return list(session.exec(query).all())

    # --- restore drills -----------------------------------------------------------------------

    def add_drill(self, drill: Drill) -> Drill:
        """Record a drill as it starts (``ok`` None, with this run's pid and host)."""
        with self._session() as session:
            session.add(drill)
            session.commit()
            session.refresh(drill)
            return drill

    def finish_drill(
        self,
        drill_id: str,
        *,
        ok: bool,
        error: str | None = None,
        counts: Mapping[str, Mapping[str, int]] | None = None,
        detail: str = "",
    ) -> Drill:
        """Record how drill ``drill_id`` ended, now."""
        with self._session() as session:
            drill = session.get(Drill, drill_id)
            if drill is None:
                raise NotFoundError(f"no drill {drill_id}")
            drill.ok, drill.error, drill.detail = ok, error, detail
            drill.counts_json = None if counts is None else json.dumps(counts, sort_keys=True)
            drill.finished_at = utcnow()
            drill.pid = None
            session.add(drill)
            session.commit()
            session.refresh(drill)
            return drill

    def drills(self, *, snapshot_id: str | None = None, running: bool | None = None) -> list[Drill]:
        """Drills, newest first; only those of ``snapshot_id``, and (``running``) those still
        unfinished or finished."""
        with self._session() as session:
            query = select(Drill).order_by(col(Drill.started_at).desc(), col(Drill.id))
            if snapshot_id is not None:
                query = query.where(Drill.snapshot_id == snapshot_id)
            if running is not None:
                finished = col(Drill.finished_at)
                query = query.where(finished.is_(None) if running else finished.is_not(None))
            return list(session.exec(query).all())

    def last_drills(self) -> dict[str, Drill]:
        """Each snapshot's last finished drill, by snapshot id."""
        last: dict[str, Drill] = {}
        for drill in self.drills(running=False):
            last.setdefault(drill.snapshot_id, drill)
        return last
