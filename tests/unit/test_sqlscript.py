"""The psql script filter: meta-commands found by psql's rules, statements beyond the database
refused with their line, owners kept back, the rest passed on byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.pg.sqlscript import RefusedScript, RoleCheck, ScriptFilter

# Shaped like pg_dump 15.20's output (header, settings, a function with BEGIN ATOMIC, a
# plpgsql one, a view, COPY data with backslashes, owners, grants, the trailer).
DUMP = b'''--
-- PostgreSQL database dump
--

\\restrict sDUaiIDOPpnNiTPXoOs0lQFLvjg4FePL6A1ujx

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET row_security = off;

CREATE FUNCTION public.f() RETURNS integer
    LANGUAGE sql
    BEGIN ATOMIC
 SELECT 1;
END;


ALTER FUNCTION public.f() OWNER TO postgres;

CREATE FUNCTION public.g(i integer) RETURNS integer
    LANGUAGE plpgsql
    AS $_$begin return i; /* \\! not a command */ end$_$;

ALTER FUNCTION public.g(i integer) OWNER TO postgres;

SET default_table_access_method = heap;

CREATE TABLE public."Mixed ""Case""" (
    a text DEFAULT E'it\\'s \\\\ fine; \\\\! still a string',
    b integer
);

ALTER TABLE public."Mixed ""Case""" OWNER TO "App Owner";

CREATE VIEW public.v AS
 SELECT x.a
   FROM public."Mixed ""Case""" x
  WHERE (x.a ~~ '%;\\!%'::text);

ALTER TABLE public.v OWNER TO postgres;

COPY public."Mixed ""Case""" (a, b) FROM stdin;
\\! looks like a command but is data
a\\tb\t1
\\.x
\\.

CREATE INDEX i ON public."Mixed ""Case""" USING btree (length(a));

GRANT SELECT ON TABLE public.v TO PUBLIC;

--
-- PostgreSQL database dump complete
--

\\unrestrict sDUaiIDOPpnNiTPXoOs0lQFLvjg4FePL6A1ujx

'''
OWNERS = [
    "ALTER FUNCTION public.f() OWNER TO postgres;",
    "ALTER FUNCTION public.g(i integer) OWNER TO postgres;",
    'ALTER TABLE public."Mixed ""Case""" OWNER TO "App Owner";',
    "ALTER TABLE public.v OWNER TO postgres;",
]


def run(data: bytes, step: int = 0, **kwargs: object) -> tuple[bytes, ScriptFilter]:
    script = ScriptFilter("dump.sql", **kwargs)  # type: ignore[arg-type]
    if step:
        out = b"".join(script.feed(data[i : i + step]) for i in range(0, len(data), step))
    else:
        out = script.feed(data)
    return out + script.close(), script


def refused(data: bytes, **kwargs: object) -> str:
    with pytest.raises(RefusedScript) as err:
        run(data, **kwargs)
    return str(err.value)


def test_a_real_dump_passes_without_its_restrict_lines_and_owners() -> None:
    out, script = run(DUMP)
    assert script.owner_statements == OWNERS
    expected = DUMP
    for line in [b"\\restrict sDUaiIDOPpnNiTPXoOs0lQFLvjg4FePL6A1ujx", *map(str.encode, OWNERS)]:
        expected = expected.replace(line, b"")
    expected = expected.replace(b"\\unrestrict sDUaiIDOPpnNiTPXoOs0lQFLvjg4FePL6A1ujx", b"")
    assert out == expected
    assert out.count(b"\n") == DUMP.count(b"\n")  # psql's line numbers stay the file's


def test_no_owner_drops_the_owner_statements_without_keeping_them() -> None:
    out, script = run(DUMP, keep_owners=False)
    assert script.owner_statements == []
    assert b"OWNER TO" not in out


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=97))
def test_any_chunking_gives_the_same_result(step: int) -> None:
    whole, script = run(DUMP)
    out, chunked = run(DUMP, step=step)
    assert out == whole and chunked.owner_statements == script.owner_statements


def inject(text: str, after: str = "SET row_security = off;\n") -> bytes:
    """DUMP with ``text`` injected after the line ``after``."""
    assert after.encode() in DUMP
    return DUMP.replace(after.encode(), after.encode() + text.encode(), 1)


SHELL = "\\! touch /var/lib/postgresql/data/pwned\n"


@pytest.mark.parametrize(
    "text",
    [
        SHELL,
        "   " + SHELL,
        "\t" + SHELL,
        "SELECT 1; " + SHELL,
        "SELECT 1;" + SHELL,
        "/* a comment */ " + SHELL,
        "SELECT 'a;b' " + SHELL,
        "SELECT (1 + " + SHELL + ");\n",
        "SELECT $$x$$ " + SHELL,
        "SELECT E'\\'' " + SHELL,
        "SELECT 'it''s' " + SHELL,
        'SELECT "a""b" ' + SHELL,
        "/* /* nested */ still */ " + SHELL,
        "\\connect other\n",
        "  \\c other\n",
        "COMMIT; \\connect postgres\n",
        "\\i /etc/passwd\n",
        "\\o /tmp/x\n",
        "\\set x 1\n",
        "SELECT 'x' \\gexec\n",
        "\\copy public.t from program 'id'\n",
        "\\.\n",
        "\\\\\n",
        "SELECT 1 \\restrict abc\n",
    ],
)
def test_meta_commands_are_found_by_psqls_rules(text: str) -> None:
    message = refused(inject(text))
    assert "dump.sql, line 15" in message or "line 16" in message, message
    assert "psql meta-command" in message


def test_the_line_named_is_the_meta_commands_own() -> None:
    message = refused(inject("SELECT 1;\n\n\n  SELECT 2; \\! id\n"))
    assert "dump.sql, line 18: psql meta-command \\! is not allowed" in message


@pytest.mark.parametrize(
    "text",
    [
        "-- \\! in a line comment\n",
        "/* \\! in a block comment\n \\connect x */\n",
        "SELECT '\\! in a string\n\\connect x';\n",
        "SELECT E'\\' \\! still inside';\n",
        "SELECT $x$ \\! $$ \\connect $x$;\n",
        'SELECT 1 AS "\\!";\n',
        "SELECT 'a' -- \\!\n;\n",
        "SELECT 1::text, a$b$ FROM (SELECT 1 AS a$b$) s;\n",
        "SELECT $1$$ok$$;\n".replace("$1", "1 +"),
    ],
)
def test_backslashes_in_quotes_and_comments_are_not_commands(text: str) -> None:
    out, _ = run(inject(text))
    assert text.encode() in out


BEYOND = [
    ("ALTER ROLE postgres PASSWORD 'x';\n", "ALTER ROLE postgres changes the server's roles"),
    ("CREATE ROLE evil SUPERUSER;\n", "CREATE ROLE evil"),
    ("create role evil superuser;\n", "CREATE ROLE evil"),
    ("  alter user postgres with password 'x';\n", "ALTER USER postgres"),
    ("DROP ROLE app;\n", "DROP ROLE"),
    ("drop database other;\n", "DROP DATABASE reaches beyond"),
    ("    drop  database\n other;\n", "DROP DATABASE reaches beyond"),
    ("COMMIT; drop database other;\n", "DROP DATABASE reaches beyond"),
    ("SELECT 1;drop database other;\n", "DROP DATABASE reaches beyond"),
    ("/* x */ DROP DATABASE other;\n", "DROP DATABASE"),
    ('DROP "database" other;\n', None),  # not the keyword: a harmless syntax error
    ("CREATE DATABASE other;\n", "CREATE DATABASE"),
    ("ALTER DATABASE pc_db SET search_path = evil;\n", "ALTER DATABASE"),
    ("CREATE TABLESPACE t LOCATION '/tmp';\n", "CREATE TABLESPACE"),
    ("ALTER SYSTEM SET fsync = off;\n", "ALTER SYSTEM"),
    ("GRANT pg_read_server_files TO app;\n", "GRANT of a role's membership"),
    ("revoke pg_monitor from app;\n", "REVOKE of a role's membership"),
    ("GRANT CONNECT ON DATABASE other TO PUBLIC;\n", "acts on a database"),
    ("COMMENT ON ROLE postgres IS 'x';\n", "acts on a role"),
    ("GRANT SET ON PARAMETER work_mem TO app;\n", "acts on a parameter"),
    ("SET ROLE postgres;\n", "the session's role"),
    ("set local role postgres;\n", "the session's role"),
    ("SET SESSION AUTHORIZATION postgres;\n", "the session's role"),
    ("RESET ROLE;\n", "the session's role"),
    ('SET "role" = postgres;\n', "the session's role"),
    ("SET session_authorization = postgres;\n", "the session's role"),
    ("SELECT set_config('role', 'postgres', false);\n", "set_config()"),
    ("select pg_catalog.set_config('session_authorization', 'x', false);\n", "set_config()"),
    ("SELECT set_config(x, 'postgres', false) FROM s;\n", "set_config()"),
    ("COPY public.t TO '/tmp/x';\n", "only COPY"),
    ("COPY public.t FROM PROGRAM 'touch /tmp/x';\n", "only COPY"),
    ("copy public.t from '/etc/passwd';\n", "only COPY"),
    ("COPY (SELECT 1) TO STDOUT;\n", "only COPY"),
    ("SELECT pg_read_file('/etc/passwd');\n", "pg_read_file"),
    ("SELECT lo_import('/etc/passwd');\n", "lo_import"),
    ("SELECT pg_catalog.lo_export(1, '/tmp/x');\n", "lo_export"),
    ("SELECT dblink_exec('dbname=other', 'DROP TABLE t');\n", "dblink_exec"),
    ("SET standard_conforming_strings = off;\n", "standard_conforming_strings"),
    ("SET client_encoding = 'SJIS';\n", "client encoding SJIS"),
    ("SET client_encoding TO sjis;\n", "client encoding SJIS"),
    ("SELECT :DBNAME;\n", ":DBNAME"),
    ("SELECT :'USER';\n", ":USER"),
    ("SELECT 1abc$x$ \\! $x$;\n", "runs into the word"),
    ("REASSIGN OWNED BY app TO postgres;\n", "REASSIGN OWNED"),
    ("DROP OWNED BY app;\n", "DROP OWNED"),
    ("LOAD 'evil';\n", "LOAD"),
    ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f();\n", "EVENT TRIGGER"),
    ("PREPARE TRANSACTION 'x';\n", "prepared transactions"),
    ("CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p;\n", "CREATE SUBSCRIPTION"),
    ("SELECT 1 \x00;\n", "NUL byte"),
]


@pytest.mark.parametrize(("text", "message"), BEYOND)
def test_statements_beyond_the_database_are_refused_with_their_line(
    text: str, message: str | None
) -> None:
    data = inject(text)
    if message is None:
        run(data)
        return
    got = refused(data)
    assert message in got, got
    assert "dump.sql, line 15" in got, got


def test_statements_in_a_routine_body_split_as_psql_splits_them() -> None:
    body = (
        "CREATE FUNCTION public.h() RETURNS integer LANGUAGE sql\n"
        "BEGIN ATOMIC\n SELECT CASE WHEN true THEN 1 END;\n SELECT 2;\nEND;\n"
    )
    out, _ = run(inject(body))
    assert body.encode() in out
    # COPY FROM stdin inside a statement psql has not ended: psql would not read data.
    assert "only COPY" in refused(
        inject("CREATE FUNCTION public.h() LANGUAGE sql BEGIN ATOMIC COPY x FROM stdin;\n")
    ) or "inside" in refused(
        inject("CREATE FUNCTION public.h() LANGUAGE sql BEGIN ATOMIC COPY x FROM stdin;\n")
    )
    assert "ALTER ROLE" in refused(inject("SELECT (1; ALTER ROLE postgres PASSWORD 'x');\n"))


def test_copy_data_ends_only_at_a_line_of_exactly_backslash_dot() -> None:
    text = "COPY public.t (a) FROM stdin;\n\\.x\n\\! data\n\\.\n"
    out, _ = run(inject(text))
    assert text.encode() in out
    assert "carriage return" in refused(inject("COPY public.t (a) FROM stdin;\n\\.\r\n"))
    assert "text follows COPY" in refused(inject("COPY public.t (a) FROM stdin; \\! id\n"))
    assert "ends inside COPY data" in refused(b"COPY public.t (a) FROM stdin;\n1\n")


def test_a_script_ending_inside_a_string_or_statement_is_refused() -> None:
    assert "inside a quoted string" in refused(b"SELECT 'abc;\n")
    assert "inside a quoted string" in refused(b"SELECT 1; /* abc\n")
    assert "has no ';'" in refused(b"SELECT 1\n")


def test_allow_roles_lets_a_dump_create_harmless_roles_only() -> None:
    roles = RoleCheck()
    text = (
        "CREATE ROLE app;\n"
        "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION "
        "NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc' CONNECTION LIMIT -1;\n"
        "CREATE USER \"Lector\" PASSWORD NULL VALID UNTIL '2030-01-01';\n"
    )
    out, _ = run(inject(text), allow_role=roles)
    assert roles.names == ["app", "Lector"]
    assert b"CREATE ROLE" not in out and len(roles.statements) == 3
    with pytest.raises(RefusedScript) as refusal:
        run(inject(text))
    assert refusal.value.retry_with == {"allow_roles": "true"}  # allowing roles gets past it
    with pytest.raises(RefusedScript) as refusal:
        run(inject("CREATE ROLE evil SUPERUSER;\n"), allow_role=RoleCheck())
    assert refusal.value.retry_with == {}  # allowed or not, never a superuser
    for bad in (
        "CREATE ROLE evil SUPERUSER;\n",
        "CREATE ROLE evil CREATEROLE;\n",
        "CREATE ROLE evil IN ROLE pg_read_server_files;\n",
        "ALTER ROLE postgres PASSWORD 'x';\n",
        "CREATE ROLE app; ALTER ROLE app SUPERUSER;\n",
        "CREATE ROLE app; ALTER ROLE app SET search_path = x;\n",
        "CREATE GROUP g;\n",
    ):
        assert "changes the server's roles" in refused(inject(bad), allow_role=RoleCheck()), bad


def test_inserts_are_read_whole_only_when_nothing_in_them_can_fool_the_reader() -> None:
    simple = "INSERT INTO public.t VALUES (1, 'a;\\! x', NULL, -1), (2, 'b''c', true);\n"
    out, _ = run(inject(simple))
    assert simple.encode() in out
    e_string = "INSERT INTO public.t VALUES (E'\\' ); \\! id ');\n"  # \! is inside the string
    out, _ = run(inject(e_string))
    assert e_string.encode() in out
    plain = "INSERT INTO public.t VALUES ('\\' ); \\! id\n"  # the string ended: \! is a command
    assert "psql meta-command \\!" in refused(inject(plain))
    glued = "INSERT INTO public.t VALUES (xE'\\' ); \\! id\n"  # xE is a word: a plain string
    assert "psql meta-command \\!" in refused(inject(glued))


def test_default_privileges_for_another_role_are_kept_back_like_owners() -> None:
    text = (
        "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES "
        "TO lector;\n"
    )
    out, script = run(inject(text))
    assert b"DEFAULT PRIVILEGES" not in out
    assert script.owner_statements[0] == text.strip()
    odd = "ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO x; SELECT 'a';\n"
    out, script = run(inject(odd))
    assert script.owner_statements[0].endswith("TO x;")


def filtered(text: bytes, **options: object) -> tuple[ScriptFilter, bytes]:
    script = ScriptFilter("x.sql", **options)  # type: ignore[arg-type]
    return script, script.feed(text) + script.close()


@pytest.mark.parametrize(
    "text",
    [
        b"CREATE TABLE public.files (pg_ls_dir text, lo_export int);\n",
        b"COPY public.t (id, lo_import) FROM stdin;\n1\t2\n\\.\n",
        b"CREATE EXTENSION IF NOT EXISTS dblink WITH SCHEMA public;\n",
        b"SELECT pg_ls_dir FROM public.files WHERE dblink = 'x';\n",
        b"COMMENT ON COLUMN public.files.pg_ls_dir IS 'pg_ls_dir(\"/\")';\n",
    ],
)
def test_a_server_functions_name_that_is_not_called_is_only_a_name(text: bytes) -> None:
    _, out = filtered(text)
    assert out.replace(b"\n", b"") in text.replace(b"\n", b"")


@pytest.mark.parametrize(
    "text",
    [
        b"SELECT pg_ls_dir('.');\n",
        b"SELECT pg_catalog.pg_read_file ('/etc/passwd');\n",
        b"SELECT pg_catalog . lo_import /* c */\n -- d\n ('/etc/passwd');\n",
        b'SELECT "pg_catalog"."lo_export"(1, \'/tmp/x\');\n',
        b"CREATE TABLE t AS SELECT dblink_exec('host=elsewhere', 'DROP TABLE x');\n",
        b"CREATE INDEX i ON t ((pg_terminate_backend(1)));\n",
    ],
)
def test_a_call_of_a_server_function_is_refused(text: bytes) -> None:
    with pytest.raises(RefusedScript, match="it calls "):
        filtered(text)


PROLOGUE = b"""SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);
CREATE SCHEMA ext;
ALTER SCHEMA ext OWNER TO postgres;
CREATE EXTENSION IF NOT EXISTS dblink WITH SCHEMA public;
COMMENT ON EXTENSION dblink IS 'connect to other PostgreSQL databases';
CREATE EXTENSION IF NOT EXISTS postgres_fdw WITH SCHEMA ext VERSION '1.1' CASCADE;
CREATE TABLE public.t (a int);
"""


def test_extensions_are_taken_out_with_their_comments_and_schemas_made_for_them() -> None:
    script, out = filtered(PROLOGUE)
    assert [(e.name, e.schema, e.version, e.cascade) for e in script.extensions] == [
        ("dblink", "public", None, False),
        ("postgres_fdw", "ext", "1.1", True),
    ]
    assert script.extensions[1].sql() == (
        'CREATE EXTENSION IF NOT EXISTS "postgres_fdw" SCHEMA "ext" VERSION \'1.1\' CASCADE'
    )
    assert b"EXTENSION" not in out and out.count(b"\n") == PROLOGUE.count(b"\n")
    assert b"CREATE SCHEMA ext;" in out and b"CREATE TABLE public.t" in out
    made = frozenset({"dblink", "postgres_fdw"})
    script, out = filtered(PROLOGUE, extensions_made=made, schemas_made=frozenset({"ext"}))
    assert b"CREATE SCHEMA" not in out and script.owner_statements == [
        "ALTER SCHEMA ext OWNER TO postgres;"
    ]
    with pytest.raises(RefusedScript, match="CREATE EXTENSION postgres_fdw comes after"):
        filtered(PROLOGUE, extensions_made=frozenset({"dblink"}))


@pytest.mark.parametrize(
    "text",
    [
        b"CREATE TABLE t (a int);\nCREATE EXTENSION dblink;\n",  # after an object
        b"CREATE EXTENSION dblink SCHEMA public SCHEMA ext;\n",
        b"CREATE EXTENSION dblink FROM unpackaged;\n",
        b"CREATE EXTENSION dblink CASCADE CASCADE;\n",
        b"CREATE EXTENSION dblink WITH SCHEMA 'public';\n",
        b"CREATE EXTENSION dblink VERSION (SELECT 1);\n",
    ],
)
def test_anything_but_a_plain_create_extension_at_the_top_is_refused(text: bytes) -> None:
    with pytest.raises(RefusedScript, match="EXTENSION"):
        filtered(text)
