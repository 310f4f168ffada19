"""Running PostgreSQL's own tools (psql, pg_dump, pg_restore) inside its container.

Every command runs through ``sh -c`` and takes PGPASSWORD from the container's own
POSTGRES_PASSWORD(_FILE) inside the container: no password is ever in a process's arguments.
Pipelines with zstd on either side fail unless both of their commands exit 0.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.adapters.exec_frames import ExecStream
from snapvol.errors import (
    IncompatibleError,
    NotFoundError,
    OperationFailed,
    SnapvolError,
    UsageError,
)
from snapvol.pg import cluster, dumpfile
from snapvol.pg.quoting import ident, literal

APP_NAME = "snapvol"

# Sourced before every command: the password comes from the container's environment, inside it.
_PASSWORD_FROM_ENV = (
    'if [ -z "${PGPASSWORD:-}" ]; then '
    'if [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "$POSTGRES_PASSWORD_FILE" ]; then '
    'PGPASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); else PGPASSWORD=${POSTGRES_PASSWORD:-}; fi; '
    'if [ -n "$PGPASSWORD" ]; then export PGPASSWORD; fi; fi; '
)


def pipeline(left: str, right: str, names: tuple[str, str]) -> str:
    """``left | right`` in POSIX sh, failing unless both exit 0 (sh has no pipefail)."""
    a, b = names
    return (
        "exec 3>&1; "
        f'codes=$( {{ {{ {left}; echo "{a}=$?" >&4; }} | '
        f'{{ {right} >&3; echo "{b}=$?" >&4; }}; }} 4>&1 ); '
        f'case "$codes" in *{a}=0*{b}=0*|*{b}=0*{a}=0*) exit 0;; esac; '
        'echo "snapvol: exit statuses:" $codes >&2; exit 1'
    )


def compressing(level: int) -> str:
    """The script that runs ``"$@"`` (pg_dump) with zstd compressing its output."""
    # -vv: zstd's last stderr line gives the exact sizes, "(<raw> B => <compressed> B, ...)".
    return pipeline('"$@"', f"zstd -vv -c -T0 -{level}", ("pg_dump", "zstd"))


def decompressing(tool: str) -> str:
    """The script that feeds ``"$@"`` (pg_restore, psql) what zstd decompresses from stdin."""
    return pipeline("zstd -q -d -c", '"$@"', ("zstd", tool))


def shell(argv: list[str], script: str = 'exec "$@"') -> list[str]:
    return ["sh", "-c", _PASSWORD_FROM_ENV + script, "snapvol", *argv]


def client_env(app: str = APP_NAME) -> dict[str, str]:
    return {"PGAPPNAME": app, "PGCONNECT_TIMEOUT": "15"}


def role_env(password: str) -> dict[str, str]:
    """What a client's environment adds when it logs in as a role of snapvol's own making: the
    password goes in the environment (never the arguments), and backslashes in strings stay
    literal as the script filter reads them."""
    return {
        "PGPASSWORD": password,
        "PGOPTIONS": "-c standard_conforming_strings=on",
    }


# psql honours \restrict (refusing every meta-command until \unrestrict with the same key) from
# these minor releases on (the August 2025 security releases); 18 and later always.
_RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


def psql_restricts(engine: Engine, target: PgTarget) -> bool:
    """Whether the container's psql knows ``\restrict``."""
    code, out, _ = engine.exec_run(target.container.id, ["psql", "--version"])
    match = re.search(rb"(\d+)\.(\d+)", out or b"")
    if code != 0 or match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return major >= 18 or minor >= _RESTRICT_SINCE.get(major, 1 << 30)


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


def parse_counts(rows: list[list[str]]) -> dict[str, int]:
    return {dumpfile.table_key(r[0], r[1]): int(r[2]) for r in rows if len(r) == 3}


# --- talking to PostgreSQL in the container -------------------------------------------------


@dataclass(frozen=True)
class PgTarget:
    """A database in a running PostgreSQL container, and the role snapvol connects as."""

    container: ContainerInfo
    database: str
    user: str
    # Who the tools run as in the container: the server's own OS user (the data directory's
    # owner) when known, so that the local ``peer`` authentication of packaged servers admits
    # them; "" is the container's default user.
    os_user: str = ""
    socket_dir: str | None = None  # the running server's socket directory and port, when known
    port: str | None = None

    @property
    def maintenance_db(self) -> str:
        """Where CREATE/ALTER/DROP DATABASE run from: never the database they change."""
        return "template1" if self.database == "postgres" else "postgres"

    def exec_options(self, app: str = APP_NAME) -> dict[str, Any]:
        """The ``user`` and ``env`` every client tool of ours runs with in the container."""
        env = client_env(app)
        if self.socket_dir:
            env["PGHOST"] = self.socket_dir
        if self.port:
            env["PGPORT"] = self.port
        return {"user": self.os_user, "env": env}


def resolve_pg_target(
    engine: Engine, container_ref: str, database: str | None = None, user: str | None = None
) -> PgTarget:
    """The running PostgreSQL container (whatever started the server), the database and role.

    Defaults: POSTGRES_DB and POSTGRES_USER when the container sets them (the official image's
    names), else the data directory's owner (initdb's default superuser is the OS user that ran
    it), else ``postgres``; the database defaults to the role's name, as psql's does.
    """
    info = engine.container(container_ref)
    if info.status != "running":
        raise OperationFailed(
            f"container {info.name} is {info.status}, not running: logical snapshots and "
            f"restores talk to the live server (start it with `docker start {info.name}`)"
        )
    server = cluster.detect(engine, info)
    if server is None:
        raise IncompatibleError(
            f"container {info.name} does not run PostgreSQL (no postgres or postmaster process)"
        )
    found = server.cluster
    owner = found.owner_name if found is not None else None
    user = user or info.env("POSTGRES_USER") or owner or "postgres"
    database = database or info.env("POSTGRES_DB") or user
    check_names(database, user)
    if found is None:
        return PgTarget(info, database, user)
    sockets = found.socket_dir if server.running and found.socket_dir else None
    return PgTarget(
        info,
        database,
        user,
        os_user=found.owner_uid if found.owner_uid not in (None, "0") else "",
        socket_dir=sockets if sockets and sockets.startswith("/") else None,
        port=found.port if server.running else None,
    )


def check_names(database: str, user: str) -> None:
    """Names psql and pg_dump take as names (never as connection strings)."""
    for what, value in (("database", database), ("user", user)):
        if "=" in value or "://" in value or not value or "\x00" in value:
            raise UsageError(f"unsupported {what} name {value!r}")


def pg_message(stderr: str) -> str:
    """The server's or the tool's own words from a failed command's stderr, on one line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for marker in ("FATAL:", "ERROR:", "error:", "pg_restore:", "pg_dump:", "psql:"):
        found = [line for line in lines if marker in line]
        if found:
            return found[0][found[0].index(marker) :]
    return lines[-1] if lines else "no error message"


def pg_error(stderr: str, what: str, target: PgTarget, database: str) -> SnapvolError:
    message = pg_message(stderr)
    if re.search(r'database ".*" does not exist', message):
        return NotFoundError(
            f"database {database!r} does not exist in container {target.container.name}"
        )
    if "Connection refused" in message or "No such file or directory" in message:
        return OperationFailed(
            f"PostgreSQL in {target.container.name} does not accept connections: {message}"
        )
    return OperationFailed(f"{what} failed: {message}")


def _psql_argv(target: PgTarget, database: str) -> list[str]:
    """psql without ~/.psqlrc, stopping at the first error, printing bare tab-separated rows."""
    flags = ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    return ["psql", *flags, "-U", target.user, "-d", database]


def script_argv(user: str, database: str) -> list[str]:
    """psql running a whole script as one transaction, stopping at its first error."""
    flags = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-o", "/dev/null"]
    return ["psql", *flags, "-U", user, "-d", database]


def psql(
    engine: Engine,
    target: PgTarget,
    statements: str | list[str],
    database: str | None = None,
    *,
    on_failure: str | None = None,
) -> list[list[str]]:
    """Run statements (each its own ``-c``) through psql in the container; returns the rows.

    ``on_failure``: a statement run next, in the container, when psql fails: it runs even if
    snapvol is gone by then (an interrupted ``docker exec`` runs on)."""
    database = database or target.database
    argv = _psql_argv(target, database)
    for statement in [statements] if isinstance(statements, str) else statements:
        argv += ["-c", statement]
    script = 'exec "$@"'
    if on_failure is not None:
        again = shlex.join([*_psql_argv(target, database), "-c", on_failure])
        script = f'"$@"; code=$?; [ "$code" -eq 0 ] || {again} >/dev/null 2>&1; exit "$code"'
    code, out, err = engine.exec_run(
        target.container.id, shell(argv, script), **target.exec_options()
    )
    if code != 0:
        raise pg_error(err.decode("utf-8", "replace"), "psql", target, database)
    text = out.decode("utf-8", "replace")
    return [line.split("\t") for line in text.splitlines() if line]


class PsqlSession:
    """A psql kept open in the container: statements go in on stdin, rows come back on stdout."""

    def __init__(self, engine: Engine, target: PgTarget, database: str, app: str) -> None:
        self.target = target
        self.database = database
        self._marker = f"__snapvol_{secrets.token_hex(6)}__"
        self.stream = engine.exec_stream(
            target.container.id,
            shell(_psql_argv(target, database)),
            stdin=True,
            **target.exec_options(app),
        )

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
        return pg_error(self.stream.stderr, "psql", self.target, self.database)

    def close(self) -> None:
        """End the session: psql sees the end of its input and rolls back an open transaction."""
        self.stream.close_stdin()
        self.stream.close()


def checked_output(stream: ExecStream, what: str) -> Iterator[bytes]:
    """The command's stdout; raises at its end unless the command exited 0."""
    yield from stream.chunks()
    code = stream.exit_code()
    if code != 0:
        raise OperationFailed(f"{what} failed (exit {code}): {pg_message(stream.stderr)}")


_HAS_ZSTD: dict[str, bool] = {}


def has_zstd(engine: Engine, target: PgTarget) -> bool:
    """Whether the container has ``zstd``: asked once per container (a restore's check, load
    and safety snapshot all need the answer)."""
    known = _HAS_ZSTD.get(target.container.id)
    if known is None:
        code, _, _ = engine.exec_run(target.container.id, ["sh", "-c", "command -v zstd"])
        known = _HAS_ZSTD[target.container.id] = code == 0
    return known


def table_counts(engine: Engine, target: PgTarget, database: str) -> dict[str, int]:
    """Exact rows of every user table of ``database``."""
    return parse_counts(psql(engine, target, COUNT_SQL, database=database))


def disconnect_sql(where: str) -> str:
    """A statement that ends every other server session ``where`` selects (a condition on
    ``pg_stat_activity``) and returns how many it ended."""
    return (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE {where} AND pid <> pg_backend_pid()"
    )


def dollar_tag() -> str:
    """A dollar-quoting tag no text inside it can close: ``$snapvol_<random hex>$``."""
    return f"$snapvol_{secrets.token_hex(4)}$"


def allow_connections_sql(database: str, allowed: bool = True) -> str:
    """The statement that lets sessions into ``database`` again (or keeps new ones out)."""
    return f"ALTER DATABASE {ident(database)} ALLOW_CONNECTIONS {'true' if allowed else 'false'}"


def end_sessions_sql(database: str, keep_pid: int | None = None, within_s: float = 5.0) -> str:
    """A statement that ends every other session of ``database`` (but ``keep_pid``) and returns
    only once they are gone (``pg_terminate_backend`` only signals), or fails after ``within_s``.

    Sessions still starting up are not in ``pg_stat_activity`` yet, but hold a lock on the
    database from before they check that it takes connections until they are listed: they are
    found in ``pg_locks``."""
    tag = dollar_tag()
    rounds = max(1, int(within_s / 0.02))
    name = literal(database)
    kept = f" AND pid <> {int(keep_pid)}" if keep_pid is not None else ""
    return f"""DO {tag}
DECLARE
  alive int;
BEGIN
  FOR round IN 1..{rounds} LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(pg_terminate_backend(pid)) INTO alive FROM (
      SELECT pid FROM pg_stat_activity WHERE datname = {name}
      UNION
      SELECT pid FROM pg_locks WHERE locktype = 'object'
        AND classid = 'pg_database'::regclass
        AND objid = (SELECT oid FROM pg_database WHERE datname = {name})
    ) s WHERE pid IS NOT NULL AND pid <> pg_backend_pid(){kept};
    EXIT WHEN alive = 0;
    PERFORM pg_sleep(0.02);
  END LOOP;
  IF alive > 0 THEN
    RAISE EXCEPTION 'sessions that would not end: %', alive;
  END IF;
END {tag}"""


def terminate_sessions(engine: Engine, target: PgTarget, app: str) -> None:
    """Best effort: end the server sessions of our own aborted pg_dump (it would run on)."""
    with contextlib.suppress(Exception):
        psql(
            engine,
            target,
            disconnect_sql(f"application_name = {literal(app)}"),
            database=target.maintenance_db,
        )
