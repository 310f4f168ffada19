"""What a drill checks on its restored server: every database's pages and indexes
(pg_amcheck), the tables and their rows, and a query of the user's."""

from __future__ import annotations

from collections.abc import Mapping

from snapvol.adapters.engine import Engine
from snapvol.errors import IntegrityError, OperationFailed
from snapvol.pg import cluster, pgexec
from snapvol.pg.pgexec import PgTarget

Counts = dict[str, dict[str, int]]  # rows per table (schema.table) per database

# pg_amcheck (14 and later) on PATH or in a server's bin directory, checking every database's
# heap and B-tree indexes (every index entry must point at a heap tuple, and --heapallindexed:
# every heap tuple must have its index entries); --install-missing: the amcheck extension is
# created in each database of the throwaway server.
_AMCHECK = (
    cluster.find_program("c", "pg_amcheck")
    + '; command -v "$c" >/dev/null 2>&1 || { echo "pg_amcheck: not found (PostgreSQL 14 or '
    'later has it)" >&2; exit 127; }; exec "$c" --all --install-missing --heapallindexed '
    '"$@"'
)


def amcheck(engine: Engine, target: PgTarget) -> None:
    """pg_amcheck on every database; IntegrityError naming what it found."""
    argv = pgexec.shell(["-U", target.user], _AMCHECK)
    code, out, err = engine.exec_run(target.container.id, argv, **target.exec_options())
    if code == 0:
        return
    found, failed = _lines(out), _lines(err)
    if code == 127:
        raise OperationFailed(f"pg_amcheck is not in the drill's image: {'; '.join(failed)}")
    if found:  # its reports of corruption are on stdout
        raise IntegrityError(f"pg_amcheck found corruption: {'; '.join(found[:3])}")
    raise IntegrityError(f"pg_amcheck failed (exit {code}): {'; '.join(failed[:3]) or '-'}")


def _lines(output: bytes) -> list[str]:
    return [s for line in output.decode("utf-8", "replace").splitlines() if (s := line.strip())]


def databases(engine: Engine, target: PgTarget) -> list[str]:
    """The databases a client can connect to, templates left out."""
    rows = pgexec.psql(
        engine,
        target,
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        database=target.maintenance_db,
    )
    return [row[0] for row in rows]


def count_all(engine: Engine, target: PgTarget) -> Counts:
    """Exact rows of every user table of every database."""
    return {db: pgexec.table_counts(engine, target, db) for db in databases(engine, target)}


def compare(expected: Mapping[str, Mapping[str, int]], found: Counts, recorded_by: str) -> None:
    """``found`` must hold every database and table of ``expected`` with as many rows, and no
    table ``expected`` lacks in a database it names; IntegrityError listing the differences."""
    problems: list[str] = []
    for db, tables in sorted(expected.items()):
        got = found.get(db)
        if got is None:
            problems.append(f"database {db} is missing")
            continue
        for table, rows in sorted(tables.items()):
            if table not in got:
                problems.append(f"table {table} of {db} is missing")
            elif got[table] != rows:
                problems.append(
                    f"{db}.{table} has {got[table]} rows, {recorded_by} recorded {rows}"
                )
        problems += [f"table {t} of {db} was not recorded" for t in sorted(set(got) - set(tables))]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise IntegrityError(
            f"the restored tables do not match {recorded_by}: {'; '.join(problems[:3])}{more}"
        )


def check_sql(engine: Engine, target: PgTarget, database: str, sql: str) -> None:
    """The user's query must return exactly one value, and that value true."""
    try:
        rows = pgexec.psql(engine, target, sql, database=database)
    except OperationFailed as err:
        raise IntegrityError(f"the check query failed: {err.message}") from err
    if rows != [["t"]]:
        shown = "no rows" if not rows else repr("\n".join("\t".join(r) for r in rows)[:80])
        raise IntegrityError(f"the check query returned {shown}, not true")
