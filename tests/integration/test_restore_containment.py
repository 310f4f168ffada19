"""A restored dump changes only its target database (issue 10, item 1).

Each attack is injected into a real pg_dump of the demo database (or built into a real database
and dumped in custom format). After every attempt: no shell ran, no role or password changed,
no other database changed, and the target is either restored or exactly as it was.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_helpers import PgContainer, databases
from tests.pgdata import fill_demo

pytestmark = pytest.mark.docker

PWNED = "/var/lib/postgresql/data/pwned"
BASE = {"postgres", "template0", "template1"}


@pytest.fixture
def demo(pg: PgContainer) -> Iterator[PgContainer]:
    """A fresh pc_db (the target) and otherdb (a bystander with a table of its own)."""
    for name in databases(pg) - BASE:
        pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)', database="postgres")
    pg.psql("CREATE DATABASE pc_db", database="postgres")
    pg.psql("CREATE DATABASE otherdb", database="postgres")
    pg.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (1), (2)", database="otherdb")
    pg.psql("CREATE TABLE IF NOT EXISTS keep (x int)", database="postgres")
    fill_demo(pg)
    pg.container.exec_run(["rm", "-f", PWNED])  # each attack is tried on its own
    yield pg


def cluster(pg: PgContainer) -> dict[str, Any]:
    """Everything outside pc_db an attack could change, and the proof of a shell."""
    code, _ = pg.container.exec_run(["test", "-e", PWNED])
    return {
        "roles": pg.psql(
            "SELECT rolname, rolsuper, rolcreaterole, rolpassword FROM pg_authid ORDER BY 1",
            database="postgres",
        ),
        "databases": databases(pg),
        "otherdb": pg.dump(database="otherdb"),
        "postgres": pg.dump(database="postgres"),
        "shell_ran": code == 0,
    }


def attempt(
    demo: PgContainer, cmd: Any, path: Path, exit_code: int, *extra: str
) -> tuple[str, bool]:
    """Restore ``path`` into pc_db; returns stderr and whether pc_db was restored."""
    before_target = demo.dump()
    before = cluster(demo)
    assert before["shell_ran"] is False
    result = cmd(
        "restore", "--file", str(path), "--container", demo.name, "--yes", *extra,
        exit_code=exit_code,
    )  # fmt: skip
    after = cluster(demo)
    assert after == before
    if exit_code != 0:
        assert demo.dump() == before_target  # exactly as it was
        assert "Error: " in result.stderr
    return result.stderr, exit_code == 0


def plain_with(demo: PgContainer, tmp_path: Path, text: str, after: str | None = None) -> Path:
    """A real plain dump of pc_db with ``text`` injected (after line ``after``, or before the
    data of pedidos), without pg_dump's ``\\restrict`` lines (an attacker leaves them out: psql
    would refuse meta-commands itself otherwise)."""
    dump = strip_restrict(demo.dump())
    marker = after or "COPY public.pedidos"
    assert marker in dump
    index = dump.index(marker)
    if after is not None:
        index += len(after)
    path = tmp_path / f"attack-{secrets.token_hex(3)}.sql"
    path.write_text(dump[:index] + text + dump[index:])
    return path


def strip_restrict(dump: str) -> str:
    lines = dump.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("\\restrict ", "\\unrestrict "))]
    assert len(kept) == len(lines) - 2
    return "".join(kept)


SHELL = f"\\! touch {PWNED}\n"


@pytest.mark.parametrize(
    "text",
    [
        SHELL,  # at the start of a line
        "    " + SHELL,  # indented
        "SELECT 1; " + SHELL,  # mid-line after a statement
        "/* looks harmless */ " + SHELL,  # after a comment on the same line
        "  \\connect otherdb\nDROP TABLE keep;\n",  # to another database, then a write
        "COMMIT; \\c postgres\nDROP TABLE keep;\n",
    ],
)
def test_meta_commands_in_a_plain_dump_are_refused_naming_the_line(
    demo: PgContainer, cmd: Any, tmp_path: Path, text: str
) -> None:
    path = plain_with(demo, tmp_path, text)
    dump = strip_restrict(demo.dump())
    line = dump[: dump.index("COPY public.pedidos")].count("\n") + 1
    stderr, _ = attempt(demo, cmd, path, 2)
    assert f"{path.name}, line {line}: psql meta-command" in stderr, stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ALTER ROLE postgres PASSWORD 'x';\n", "ALTER ROLE postgres"),
        ("CREATE ROLE evil SUPERUSER;\n", "CREATE ROLE evil"),
        ("  drop database otherdb;\n", "DROP DATABASE"),
        ("COMMIT; drop database otherdb;\n", "DROP DATABASE"),
        ("SET ROLE postgres;\n", "switch the session's role"),
        ("COPY public.usuarios TO PROGRAM 'touch /var/lib/postgresql/data/pwned';\n", "COPY"),
    ],
)
def test_statements_beyond_the_database_are_refused_before_anything_changes(
    demo: PgContainer, cmd: Any, tmp_path: Path, text: str, message: str
) -> None:
    stderr, _ = attempt(demo, cmd, plain_with(demo, tmp_path, text), 2)
    assert message in stderr and ", line " in stderr, stderr


# Runs only in snapvol's scratch database, so building the source database is harmless. An index
# needs an immutable function, which may not change anything itself: it calls a volatile one.
EVIL_FUNCTION = """
CREATE FUNCTION public.evil_inner(integer) RETURNS integer LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  IF current_database() LIKE '%\\_\\_snapvol\\_%' THEN
    EXECUTE 'ALTER ROLE postgres PASSWORD ''pwned''';
    EXECUTE 'CREATE ROLE evil SUPERUSER';
    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch /var/lib/postgresql/data/pwned''';
  END IF;
  RETURN $1;
END $f$;
CREATE FUNCTION public.evil(integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN RETURN public.evil_inner($1); END $f$;
"""


def test_a_function_called_by_an_index_cannot_reach_beyond_the_database(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    """No statement names a role: the privileges of the loading role contain it."""
    text = EVIL_FUNCTION + "CREATE INDEX evil_idx ON public.usuarios (public.evil(usuario_id));\n"
    path = plain_with(demo, tmp_path, text, after="\\.\n\n")  # after the first table's data
    stderr, _ = attempt(demo, cmd, path, 11)
    assert "permission denied" in stderr or "must be superuser" in stderr, stderr
    assert "was not changed" in stderr


def test_a_do_block_cannot_reach_beyond_the_database(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    text = "DO $$ BEGIN EXECUTE 'ALTER ROLE postgres PASSWORD ''pwned'''; END $$;\n"
    stderr, _ = attempt(demo, cmd, plain_with(demo, tmp_path, text), 11)
    assert "permission denied" in stderr or "must be superuser" in stderr, stderr


def test_a_custom_dump_with_such_a_function_is_contained(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    demo.psql(EVIL_FUNCTION + "CREATE INDEX evil_idx ON usuarios (public.evil(usuario_id));")
    code, out = demo.container.exec_run(["pg_dump", "-U", "postgres", "-d", "pc_db", "-Fc"])
    assert code == 0
    path = tmp_path / "evil.dump"
    path.write_bytes(out)
    demo.psql("DROP INDEX evil_idx; DROP FUNCTION public.evil(integer), public.evil_inner(integer)")
    stderr, _ = attempt(demo, cmd, path, 11)
    assert "permission denied" in stderr or "must be superuser" in stderr, stderr


def test_a_custom_dump_is_restored_with_its_owners_and_grants(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    """The load role gives every object back to the owner the dump names, grants kept."""
    role = f"dueno_{secrets.token_hex(3)}"
    demo.psql(f"CREATE ROLE {role}", database="postgres")
    demo.psql(
        "CREATE SCHEMA extra; CREATE TABLE extra.t (x int); INSERT INTO extra.t VALUES (7);"
        f"ALTER SCHEMA extra OWNER TO {role}; ALTER TABLE extra.t OWNER TO {role};"
        f"GRANT SELECT ON pedidos TO {role}; CREATE VIEW v AS SELECT 1 AS one;"
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA extra GRANT SELECT ON TABLES "
        "TO PUBLIC;"
    )
    code, out = demo.container.exec_run(["pg_dump", "-U", "postgres", "-d", "pc_db", "-Fc"])
    assert code == 0
    expected = demo.dump()
    path = tmp_path / "owned.dump"
    path.write_bytes(out)
    demo.psql("DROP SCHEMA extra CASCADE; DELETE FROM pedidos")
    attempt(demo, cmd, path, 0)
    assert demo.dump() == expected  # owners and grants as dumped (pg_dump prints them)
    roles = demo.psql("SELECT rolname FROM pg_roles", database="postgres").split()
    assert not [r for r in roles if r.startswith("snapvol_restore_")]


def test_allow_roles_creates_the_roles_a_dump_needs_and_nothing_more(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    role = f"app_{secrets.token_hex(3)}"
    header = (
        f"CREATE ROLE {role};\n"
        f"ALTER ROLE {role} WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN "
        "NOREPLICATION NOBYPASSRLS PASSWORD 'secreto';\n"
    )
    owned = f"ALTER TABLE public.productos OWNER TO {role};\n"
    path = plain_with(demo, tmp_path, header + owned)
    stderr, _ = attempt(demo, cmd, path, 2)
    assert "--allow-roles" in stderr

    bad = plain_with(demo, tmp_path, header + "ALTER ROLE postgres PASSWORD 'x';\n")
    stderr, _ = attempt(demo, cmd, bad, 2, "--allow-roles")
    assert "ALTER ROLE postgres" in stderr

    result = cmd("restore", "--file", str(path), "--container", demo.name, "--yes", "--allow-roles")
    assert "the dump creates role(s): " + role in result.stderr
    assert (
        demo.psql(
            f"SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = '{role}'",
            database="postgres",
        )
        == "f|t"
    )
    assert demo.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'productos'") == role


# Scripts where a reader that does not follow psql's rules would disagree with psql about what is
# a meta-command. (script, psql runs \echo MARK): the filter must refuse every script in which
# psql runs a meta-command, and passes the others.
PARITY = [
    ("SELECT E'\\' \\echo MARK ';\n", False),
    ("SELECT '\\' \\echo MARK\n;\n", True),
    ("SELECT 1 AS a$b$ \\echo MARK\n;\n", True),
    ("SELECT $q$ \\echo MARK $q$;\n", False),
    ("SELECT 12a$x$ \\echo MARK $x$;\n", True),
    ("SELECT 'a' -- \\echo MARK\n;\n", False),
    ("/* \\echo MARK /* nested */ \\echo MARK */ SELECT 1;\n", False),
    ('SELECT "a\\" \\echo MARK\n;\n', True),
    ("SELECT U&'\\' \\echo MARK\n;\n", True),
    ("SELECT xE'\\' \\echo MARK\n;\n", True),
    ("SELECT 'it''s' \\echo MARK\n;\n", True),
    ("SELECT $a$ $b$ \\echo MARK $a$;\n", False),
    (
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; "
        "\\echo MARK\nEND;\n",
        True,
    ),
]


def test_the_filter_sees_every_meta_command_the_real_psql_runs(pg: PgContainer) -> None:
    from snapvol.pg.sqlscript import RefusedScript, ScriptFilter

    for script, psql_runs_it in PARITY:
        _, out = pg.container.exec_run(
            [
                "sh",
                "-c",
                f"cat > /tmp/parity.sql <<'SNAPVOL_EOF'\n{script}SNAPVOL_EOF\n"
                "psql -X -q -U postgres -d postgres -f /tmp/parity.sql",
            ]
        )
        ran = re.search(rb"^MARK", out, re.M) is not None  # \echo prints its line
        assert ran == psql_runs_it, (script, out)
        reader = ScriptFilter("parity.sql")
        try:
            reader.feed(script.encode())
            reader.close()
            refused = False
        except RefusedScript:
            refused = True
        assert refused == psql_runs_it, script


# --- extensions, and who may restore (issue: restores at the seams) ---------------------------

UNTRUSTED = """
CREATE EXTENSION dblink;
CREATE SCHEMA ext;
CREATE EXTENSION postgres_fdw SCHEMA ext;
CREATE TABLE public.files (pg_ls_dir text, lo_import int);
INSERT INTO public.files VALUES ('a', 1), ('b', 2);
"""


def test_a_database_with_untrusted_extensions_round_trips(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    """dblink and postgres_fdw need a superuser to be created: snapvol creates them before the
    load; columns named like server functions are only names."""
    demo.psql(UNTRUSTED)
    before = demo.dump()
    assert "CREATE EXTENSION IF NOT EXISTS postgres_fdw WITH SCHEMA ext" in before
    snap = cmd.json("snapshot", "--logical", "--container", demo.name, "--database", "pc_db")
    demo.psql("DROP EXTENSION dblink; DELETE FROM public.files; DROP SCHEMA ext CASCADE")
    result = cmd.json("restore", snap["id"], "--yes")
    assert sorted(result["extensions"]) == ["dblink", "postgres_fdw"]
    assert demo.dump() == before

    path = tmp_path / "with-extensions.sql"
    path.write_text(before)
    demo.psql("DELETE FROM public.files WHERE lo_import = 1")
    changed = demo.dump()
    result = cmd.json("restore", "--file", str(path), "--container", demo.name, "--yes")
    assert demo.dump() == before
    # Its safety snapshot (of a database with extensions, taken by the restore) restores too.
    cmd.json("restore", result["safety_snapshot"]["id"], "--yes")
    assert demo.dump() == changed


EXTENSION_AT_TOP = "SET row_security = off;\n"


def test_an_extension_the_server_lacks_is_refused_before_anything_changes(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    text = "CREATE EXTENSION IF NOT EXISTS no_such_ext WITH SCHEMA public;\n"
    path = plain_with(demo, tmp_path, text, after=EXTENSION_AT_TOP)
    stderr, _ = attempt(demo, cmd, path, 8)
    assert "extension(s) no_such_ext, not installed" in stderr, stderr


def test_an_extension_created_for_a_dump_gives_it_nothing_beyond_the_database(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    """file_fdw is created (by the superuser) but the load role still cannot read a file."""
    extension = "CREATE EXTENSION IF NOT EXISTS file_fdw WITH SCHEMA public;\n"
    reader = (
        "CREATE SERVER f FOREIGN DATA WRAPPER file_fdw;\n"
        "CREATE FOREIGN TABLE public.pw (l text) SERVER f OPTIONS (filename '/etc/passwd');\n"
        "CREATE TABLE public.stolen AS SELECT * FROM public.pw;\n"
    )
    dump = strip_restrict(demo.dump())
    top = dump.index(EXTENSION_AT_TOP) + len(EXTENSION_AT_TOP)
    data = dump.index("COPY public.pedidos")
    path = tmp_path / "file-fdw.sql"
    path.write_text(dump[:top] + extension + dump[top:data] + reader + dump[data:])
    stderr, _ = attempt(demo, cmd, path, 11)
    assert "permission denied for foreign-data wrapper file_fdw" in stderr, stderr

    late = plain_with(demo, tmp_path, extension)  # after objects: not created before the load
    stderr, _ = attempt(demo, cmd, late, 2)
    assert "CREATE EXTENSION file_fdw comes after the dump's first objects" in stderr, stderr
    calls = plain_with(demo, tmp_path, "SELECT pg_catalog.pg_ls_dir /* x */ ('.');\n")
    stderr, _ = attempt(demo, cmd, calls, 2)
    assert "it calls pg_ls_dir" in stderr, stderr


def test_a_restore_as_a_role_that_is_not_a_superuser_is_refused_clearly(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    demo.psql(
        "DROP ROLE IF EXISTS loader; CREATE ROLE loader LOGIN CREATEDB CREATEROLE",
        database="postgres",
    )
    try:
        path = tmp_path / "plain.sql"
        path.write_text(demo.dump())
        stderr, _ = attempt(demo, cmd, path, 2, "--user", "loader")
        assert "a logical restore needs a superuser to restore as: role loader is not one" in stderr
        assert stderr.rstrip().endswith("nothing was changed (retry with --user ROLE)"), stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
    finally:
        demo.psql("DROP ROLE loader", database="postgres")
