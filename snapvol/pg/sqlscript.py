"""psql scripts read the way psql reads them, so that a restored dump changes only its database.

A streaming lexer for the scripts ``psql`` runs (a plain pg_dump, or what ``pg_restore -f -``
makes of a custom one). It tracks what psql tracks: single-quoted, ``E''`` and dollar-quoted
strings, double-quoted identifiers, ``--`` and nested ``/* */`` comments, parentheses and
``BEGIN ATOMIC`` bodies (where a ``;`` does not end a statement), and the data of
``COPY ... FROM stdin`` (which ends at a line ``\\.``). Outside quotes and comments a backslash
starts a meta-command anywhere in a line, as in psql; the only ones allowed are pg_dump's own
``\\restrict KEY`` and ``\\unrestrict KEY`` lines, which are taken out (snapvol restricts psql with
a key of its own). Statements that reach beyond the database are refused, naming their line: roles,
databases, tablespaces, cluster settings, switching the session's role, COPY to or from a program
or a server file, server-file and large-object file functions. ``ALTER ... OWNER TO`` statements
are taken out of the stream and handed back, checked to be exactly that, for snapvol to apply
after the load (the load runs as a role that cannot give objects away).

This is one of two walls: the load also runs as a temporary role without superuser rights, so
what a check here cannot see (a function the dump creates and an index calls) cannot reach
beyond the database either. Pure logic: no Docker, no PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from snapvol.errors import UsageError
from snapvol.pg.quoting import ident, literal

_MAX_PENDING = 64 << 20  # one statement, or one line of COPY data, held at most

# psql's own variables: ``:NAME`` is replaced by its value (any other ``:name`` is left as is).
PSQL_VARIABLES = frozenset(
    [
        "AUTOCOMMIT",
        "COMP_KEYWORD_CASE",
        "DBNAME",
        "ECHO",
        "ECHO_HIDDEN",
        "ENCODING",
        "ERROR",
        "FETCH_COUNT",
        "HIDE_TABLEAM",
        "HIDE_TOAST_COMPRESSION",
        "HISTCONTROL",
        "HISTFILE",
        "HISTSIZE",
        "HOST",
        "IGNOREEOF",
        "LASTOID",
        "LAST_ERROR_MESSAGE",
        "LAST_ERROR_SQLSTATE",
        "ON_ERROR_ROLLBACK",
        "ON_ERROR_STOP",
        "PORT",
        "PROMPT1",
        "PROMPT2",
        "PROMPT3",
        "QUIET",
        "ROW_COUNT",
        "SERVER_VERSION_NAME",
        "SERVER_VERSION_NUM",
        "SHOW_ALL_RESULTS",
        "SHOW_CONTEXT",
        "SINGLELINE",
        "SINGLESTEP",
        "SQLSTATE",
        "USER",
        "VERBOSITY",
        "VERSION",
        "VERSION_NAME",
        "VERSION_NUM",
    ]
)

# Functions that read or write server files, connect elsewhere or signal other sessions: a call of
# one (its name, maybe schema-qualified or quoted, then ``(``) is refused; the name alone (a
# column, an extension) is not. The load role could not misuse most of them anyway.
DENIED_FUNCTIONS = frozenset(
    [
        "PG_READ_FILE",
        "PG_READ_BINARY_FILE",
        "PG_LS_DIR",
        "PG_STAT_FILE",
        "PG_FILE_WRITE",
        "PG_FILE_RENAME",
        "PG_FILE_UNLINK",
        "PG_FILE_SYNC",
        "PG_LOGDIR_LS",
        "PG_LS_LOGDIR",
        "PG_LS_WALDIR",
        "PG_LS_TMPDIR",
        "PG_LS_ARCHIVE_STATUSDIR",
        "LO_IMPORT",
        "LO_EXPORT",
        "DBLINK",
        "DBLINK_EXEC",
        "DBLINK_CONNECT",
        "DBLINK_CONNECT_U",
        "DBLINK_SEND_QUERY",
        "PG_TERMINATE_BACKEND",
        "PG_CANCEL_BACKEND",
        "PG_RELOAD_CONF",
        "PG_ROTATE_LOGFILE",
        "PG_PROMOTE",
        "PG_SWITCH_WAL",
        "PG_CREATE_RESTORE_POINT",
    ]
)

# Client encodings in which a byte of a multibyte character may look like a backslash or a quote:
# psql reads those differently, so a script may not switch to them.
_UNSAFE_ENCODINGS = frozenset({"SJIS", "SHIFTJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"})

_ROLE_OBJECTS = frozenset({"ROLE", "USER", "GROUP"})
_CLUSTER_OBJECTS = frozenset({"DATABASE", "TABLESPACE", "SUBSCRIPTION"})
_ROLE_SETTINGS = frozenset({"ROLE", "SESSION_AUTHORIZATION"})

_TOKEN = re.compile(
    rb"""
 (?P<ws>[ \t\r\f\v]+)
|(?P<nl>\n)
|(?P<dash>--)
|(?P<cstart>/\*)
|(?P<ident>[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9$]*)
|(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)
|(?P<dolq>\$(?:[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\$)
|(?P<param>\$[0-9]+)
|(?P<dolfail>\$[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)
|(?P<squote>')
|(?P<dquote>")
|(?P<backslash>\\)
|(?P<semi>;)
|(?P<lpar>\()
|(?P<rpar>\))
|(?P<cast>::)
|(?P<var>:(?:'[A-Za-z\x80-\xff_0-9]+'|"[A-Za-z\x80-\xff_0-9]+"|[A-Za-z\x80-\xff_0-9]+))
|(?P<other>.)
""",
    re.X | re.S,
)
# A run of tokens that cannot change psql's state (no quote, comment, dollar, backslash,
# semicolon, parenthesis or colon; no identifier right before a quote, which could be E'; no
# number running into a word). Inside a long statement (INSERTs of a --inserts dump) such runs are
# skipped whole once the statement and its part are known to be of a harmless kind.
_FAST = re.compile(
    rb"""(?:[ \t\r\n]++
|[A-Za-z_\x80-\xff][A-Za-z_0-9\x80-\xff$]*+(?!')
|[0-9]++(?:\.[0-9]++)?(?![A-Za-z_\x80-\xff$0-9.])
|[,.=<>+*%&|!~@#^`?\[\]{}]
)+""",
    re.X,
)
# A whole INSERT of pg_dump --inserts whose every byte is accounted for: a table name, columns,
# and rows of plain strings, numbers and words (no call, no cast, no comment, no nesting): read in
# one match. Anything else is read token by token.
_NAME = rb'(?:[A-Za-z_][A-Za-z_0-9]*+(?![\'$])|"(?:[^"]|"")*+")'
_VALUES = rb"\((?:'(?:[^']|'')*+'|[A-Za-z_0-9.]++(?![\'$])|[ ,+*<>=]|-(?!-))*+\)"
_SIMPLE_INSERT = re.compile(
    rb"INSERT INTO " + _NAME + rb"(?:\." + _NAME + rb")?"
    rb"(?: \("
    + _NAME
    + rb"(?:, "
    + _NAME
    + rb")*\))? VALUES "
    + _VALUES
    + rb"(?:,\s*"
    + _VALUES
    + rb")*;"
)
# Words checked wherever they are: they end a skipped run.
_WATCHED = re.compile(
    rb"(?<![A-Za-z_0-9\x80-\xff$])(?:ON|SET_CONFIG|PG_|LO_|DBLINK)",
    re.I,
)
# Statements (and parts of them) whose every token is looked at.
_NOT_FAST = frozenset(
    {"ALTER", "CREATE", "DROP", "COPY", "SET", "RESET", "GRANT", "REVOKE", "COMMENT", "SECURITY"}
)
_IDENT_CHAR = re.compile(rb"[A-Za-z\x80-\xff_0-9$]")
_SQUOTE_BODY = re.compile(rb"(?:[^']+|'')*")
_EQUOTE_BODY = re.compile(rb"(?:[^'\\]+|''|\\.)*", re.S)
_DQUOTE_BODY = re.compile(rb'(?:[^"]+|"")*')
_COMMENT_MARK = re.compile(rb"/\*|\*/")
_RESTRICT = re.compile(rb"\\(?:un)?restrict [A-Za-z0-9]+[ \t\r]*\n")
_META_NAME = re.compile(rb"\\([A-Za-z]+|.?)", re.S)

# Modes between tokens.
_SQL, _SQUOTE, _EQUOTE, _DQUOTE, _DOLLAR, _COMMENT, _COPY = range(7)


@dataclass
class Token:
    kind: str  # "word" (a keyword or identifier), "quoted" (identifier), "string" or "punct"
    value: str


@dataclass
class Statement:
    """One statement as psql would send it: where it starts and its tokens (quotes undone)."""

    line: int
    tokens: list[Token] = field(default_factory=list)
    truncated: bool = False  # longer than the tokens kept

    def words(self, n: int) -> list[str]:
        """The first ``n`` tokens' values (identifiers upper-cased)."""
        return [t.value for t in self.tokens[:n]]


class RefusedScript(UsageError):
    """The script would reach beyond the database it is restored into."""


class ScriptFilter:
    """Checks a psql script chunk by chunk and returns what psql may be given of it.

    ``feed`` returns the bytes to send on (the script without its ``\\restrict`` lines, its
    ``ALTER ... OWNER TO`` and ``ALTER DEFAULT PRIVILEGES FOR ROLE`` statements, line count
    kept); ``close`` raises unless the script ended between statements. ``owner_statements``
    collects the statements taken out, for the superuser to apply after the load.
    ``allow_role`` decides, for a CREATE/ALTER ROLE statement, whether it is let through.
    """

    def __init__(
        self,
        what: str,
        *,
        keep_owners: bool = True,
        allow_role: Callable[[Statement, bytes], bool] | None = None,
        extensions_made: frozenset[str] | None = None,
        schemas_made: frozenset[str] = frozenset(),
    ) -> None:
        self.what = what
        self.keep_owners = keep_owners
        self.allow_role = allow_role
        # The extensions snapvol created before the load (None: none yet, only collect them);
        # the schemas it made for them, whose ``CREATE SCHEMA name;`` is taken out.
        self.extensions_made = extensions_made
        self.schemas_made = schemas_made
        self.extensions: list[Extension] = []  # the CREATE EXTENSION statements taken out
        self.prologue = True  # no statement but settings, schemas and extensions read so far
        self.owner_statements: list[str] = []
        self.line = 1  # of the next byte to read
        self._buf = b""
        self._mode = _SQL
        self._tag = b""  # the dollar quote's delimiter
        self._depth = 0  # of nested /* */ comments
        self._out: list[bytes] = []
        self._held = bytearray()  # the current statement's text, until it is known harmless
        self._holding = True
        self._hold_decided = False  # _may_hold was asked (its answer holds for the statement)
        self._stmt = Statement(line=1)
        self._fragment: list[Token] = []  # tokens since the last ';' at any depth
        self._fragment_line = 1
        self._paren = 0
        self._begin = 0
        self._idents: list[str] = []  # psql's heuristic for CREATE FUNCTION ... BEGIN ATOMIC
        self._ident_count = 0
        self._stmt_semis = 0  # semicolons inside the current statement (in parentheses, ...)
        self._quoted = bytearray()  # the start of the quoted text being read
        self._fast = False  # runs of harmless tokens may be skipped (see _FAST)
        self._prev: Token | None = None  # the last token read (a call is a name, then "(")

    # --- public ---

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else bytes(data)
        nul = buf.find(b"\x00")
        if nul >= 0:  # psql would read the line only up to it
            raise self._refuse(self.line + buf.count(b"\n", 0, nul), "it holds a NUL byte")
        end = buf.rfind(b"\n") + 1  # whole lines only: psql reads line by line
        if end:
            self._scan(buf, end)
        self._buf = buf[end:]
        if len(self._buf) > _MAX_PENDING or len(self._held) > _MAX_PENDING:
            raise self._refuse(self.line, "a line or statement is over 64 MiB")
        return self._take()

    def close(self) -> bytes:
        if self._buf:
            buf = self._buf + b"\n"  # psql reads a last line without its newline as a line
            self._buf = b""
            self._scan(buf, len(buf))
        if self._mode == _COPY:
            raise self._refuse(self.line, "it ends inside COPY data")
        if self._mode != _SQL:
            raise self._refuse(self.line, "it ends inside a quoted string or a comment")
        if self._stmt.tokens:
            raise self._refuse(self._stmt.line, "its last statement has no ';'")
        self._flush_held()
        return self._take()

    # --- scanning ---

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _emit(self, data: bytes) -> None:
        if self._holding:
            self._held += data
        else:
            self._out.append(data)

    def _flush_held(self) -> None:
        if self._held:
            self._out.append(bytes(self._held))
            self._held.clear()

    def _scan(self, buf: bytes, end: int) -> None:
        pos = 0
        while pos < end:
            mode = self._mode
            if mode == _COPY:
                pos = self._copy_data(buf, pos, end)
            elif mode == _SQL:
                pos = self._sql_token(buf, pos, end)
            else:
                pos = self._inside(buf, pos, end)

    def _advance(self, buf: bytes, start: int, stop: int) -> None:
        self._emit(buf[start:stop])
        self.line += buf.count(b"\n", start, stop)

    def _copy_data(self, buf: bytes, pos: int, end: int) -> int:
        """COPY data is sent on as is, to the line ``\\.`` (psql's test: exactly that line)."""
        search = pos
        while True:
            if search == pos and buf.startswith(b"\\.", pos):
                found = pos
            else:
                found = buf.find(b"\n\\.", search - 1 if search > pos else pos, end)
                found = -1 if found < 0 else found + 1
            if found < 0:
                self._out.append(buf[pos:end])
                self.line += buf.count(b"\n", pos, end)
                return end
            after = buf[found + 2 : found + 3]
            if after == b"\n":
                stop = found + 3
                self._out.append(buf[pos:stop])
                self.line += buf.count(b"\n", pos, stop)
                self._mode = _SQL
                return stop
            if after == b"\r":  # psql and the server disagree on where such data ends
                line = self.line + buf.count(b"\n", pos, found)
                raise self._refuse(line, "a COPY data line is '\\.' ended by a carriage return")
            search = found + 2

    def _inside(self, buf: bytes, pos: int, end: int) -> int:
        """Inside a quoted string, a quoted identifier, a dollar quote or a block comment."""
        mode = self._mode
        if mode == _COMMENT:
            while True:
                match = _COMMENT_MARK.search(buf, pos, end)
                if match is None:
                    self._advance(buf, pos, end)
                    return end
                self._depth += 1 if match.group() == b"/*" else -1
                self._advance(buf, pos, match.end())
                pos = match.end()
                if self._depth == 0:
                    self._mode = _SQL
                    return pos
        if mode == _DOLLAR:
            found = buf.find(self._tag, pos, end)
            if found < 0:
                self._advance(buf, pos, end)
                return end
            self._advance(buf, pos, found + len(self._tag))
            self._mode = _SQL
            self._token("string", "")
            return found + len(self._tag)
        body = {_SQUOTE: _SQUOTE_BODY, _EQUOTE: _EQUOTE_BODY, _DQUOTE: _DQUOTE_BODY}[mode]
        stop = body.match(buf, pos, end).end()  # type: ignore[union-attr]
        if stop >= end:
            self._advance(buf, pos, end)
            self._quoted += buf[pos : min(end, pos + 256)]
            return end
        self._quoted += buf[pos : min(stop, pos + 256)]
        self._advance(buf, pos, stop + 1)
        self._mode = _SQL
        text = bytes(self._quoted).decode("utf-8", "replace")
        if mode == _DQUOTE:
            self._token("quoted", text.replace('""', '"'))
        else:
            self._token("string", text.replace("''", "'"))
        return stop + 1

    def _sql_token(self, buf: bytes, pos: int, end: int) -> int:
        if not self._stmt.tokens and buf.startswith(b"INSERT INTO ", pos):
            insert = _SIMPLE_INSERT.match(buf, pos, end)
            if insert is not None and not self._paren and not self._begin:
                self._flush_held()
                self._out.append(insert.group())
                self.line += insert.group().count(b"\n")
                return insert.end()
        if self._fast:
            run = _FAST.match(buf, pos, end)
            if run is not None:
                watched = _WATCHED.search(buf, pos, run.end())
                stop = watched.start() if watched else run.end()
                if stop > pos:
                    self._advance(buf, pos, stop)
                    return stop
        match = _TOKEN.match(buf, pos, end)
        assert match is not None  # "other" matches any byte
        kind, stop = match.lastgroup, match.end()
        text = match.group()
        if kind in ("ws", "nl"):
            self._advance(buf, pos, stop)
            return stop
        if kind == "dash":
            nl = buf.find(b"\n", pos, end)
            stop = end if nl < 0 else nl
            self._advance(buf, pos, stop)
            return stop
        if kind == "backslash":
            return self._meta(buf, pos, end)
        self._advance(buf, pos, stop)
        if kind == "cstart":
            self._mode, self._depth = _COMMENT, 1
        elif kind == "squote":
            self._mode, self._quoted = _SQUOTE, bytearray()
        elif kind == "dquote":
            self._mode, self._quoted = _DQUOTE, bytearray()
        elif kind == "dolq":
            self._mode, self._tag = _DOLLAR, text
        elif kind == "ident":
            if text in (b"E", b"e") and buf[stop : stop + 1] == b"'":
                self._advance(buf, stop, stop + 1)
                self._mode, self._quoted = _EQUOTE, bytearray()
                return stop + 1
            self._ident(text.decode("utf-8", "replace"))
        elif kind in ("num", "param"):
            if _IDENT_CHAR.match(buf, stop, end):
                raise self._refuse(self.line, f"{text.decode()!r} runs into the word after it")
            self._token("punct", text.decode())
        elif kind == "var":
            name = text[1:].strip(b"'\"").decode("utf-8", "replace")
            if name in PSQL_VARIABLES:
                raise self._refuse(self.line, f"psql would replace :{name} with its variable")
            self._token("punct", text.decode("utf-8", "replace"))
        elif kind == "semi":
            self._semicolon()
            if self._mode == _COPY:  # psql reads the data from the next line on
                nl = buf.find(b"\n", stop, end)
                if buf[stop:nl].strip():
                    raise self._refuse(self.line, "text follows COPY ... FROM stdin; on its line")
                self._out.append(buf[stop : nl + 1])
                self.line += 1
                return nl + 1
        else:
            if kind == "lpar":
                self._paren += 1
            elif kind == "rpar" and self._paren > 0:
                self._paren -= 1
            self._token("punct", text.decode("utf-8", "replace"))
        return stop

    def _meta(self, buf: bytes, pos: int, end: int) -> int:
        """A backslash outside quotes and comments: psql runs the meta-command it starts."""
        at_line_start = pos == 0 or buf[pos - 1 : pos] == b"\n"
        allowed = _RESTRICT.match(buf, pos, end)
        if allowed and at_line_start and not self._stmt.tokens:
            self.line += 1
            self._emit(b"\n")  # keeps psql's line numbers those of the file
            return allowed.end()
        name = _META_NAME.match(buf, pos, end)
        command = name.group().decode("utf-8", "replace") if name else "\\"
        raise self._refuse(self.line, f"psql meta-command {command} is not allowed")

    # --- statements ---

    def _ident(self, word: str) -> None:
        """psql's own heuristic: in CREATE [OR REPLACE] FUNCTION|PROCEDURE, BEGIN ... END
        (and CASE ... END inside it) hold semicolons that do not end the statement."""
        lower = word.lower()
        if self._ident_count < 4:
            first = (
                lower[0] if lower in ("create", "function", "procedure", "or", "replace") else ""
            )
            self._idents.append(first)
        self._ident_count += 1
        ids = ([*self._idents, "", "", "", ""])[:4]
        in_routine = ids[0] == "c" and (
            ids[1] in ("f", "p") or (ids[1] == "o" and ids[2] == "r" and ids[3] in ("f", "p"))
        )
        if in_routine and self._paren == 0:
            if lower == "begin" or (lower == "case" and self._begin >= 1):
                self._begin += 1
            elif lower == "end" and self._begin > 0:
                self._begin -= 1
        self._token("word", word.upper())

    def _token(self, kind: str, value: str) -> None:
        if not self._stmt.tokens:
            self._stmt.line = self.line
        if not self._fragment:
            self._fragment_line = self.line
        token = Token(kind, value)
        if len(self._stmt.tokens) < 256:
            self._stmt.tokens.append(token)
        else:
            self._stmt.truncated = True
        if len(self._fragment) < 64:
            self._fragment.append(token)
            if len(self._fragment) == 3:
                first, part = self._stmt.tokens[0], self._fragment[0]
                self._fast = (
                    first.kind == "word"
                    and part.kind == "word"
                    and first.value not in _NOT_FAST
                    and part.value not in _NOT_FAST
                )
        if kind == "punct" and value == "(" and self._prev is not None:
            name = self._prev.value
            if (self._prev.kind == "word" and name in DENIED_FUNCTIONS) or (
                self._prev.kind == "quoted" and name.upper() in DENIED_FUNCTIONS and name.islower()
            ):
                raise self._refuse(self.line, f"it calls {name.lower()}")
        self._prev = token
        if not self._hold_decided and len(self._stmt.tokens) >= 3:
            self._hold_decided = True
            if not self._may_hold():
                self._holding = False
                self._flush_held()

    def _may_hold(self) -> bool:
        """Whether the statement begun may still be one taken out of the stream (its first three
        tokens decide: asked once per statement)."""
        first, second, third = (t.value for t in self._stmt.tokens[:3])
        return (
            first == "ALTER"
            or (first == "CREATE" and second in (*_ROLE_OBJECTS, "EXTENSION", "SCHEMA"))
            or (first, second, third) == ("COMMENT", "ON", "EXTENSION")
        )

    def _semicolon(self) -> None:
        fragment = Statement(self._fragment_line, self._fragment)
        self._fragment = []
        self._prev = None
        self._fast = False
        top = not self._paren and not self._begin
        check_fragment(fragment, self._refuse, whole=top and not self._stmt_semis)
        if not top:
            if is_copy_from_stdin(fragment):
                raise self._refuse(fragment.line, "COPY FROM stdin inside another statement")
            self._stmt_semis += 1
            if len(self._stmt.tokens) < 256:
                self._stmt.tokens.append(Token("punct", ";"))
            else:
                self._stmt.truncated = True
            return
        statement = self._stmt
        statement.tokens.append(Token("punct", ";"))
        self._stmt = Statement(line=self.line)
        self._stmt_semis = 0
        self._idents, self._ident_count = [], 0
        self._end_statement(statement)

    def _end_statement(self, statement: Statement) -> None:
        held = bytes(self._held)
        self._held.clear()
        self._holding = True
        self._hold_decided = False
        take_out = False
        if is_role_statement(statement):
            if self.allow_role is None:  # allowing roles would let a harmless one through
                raise self._refuse(statement.line, role_message(statement), allow_roles=True)
            if not self.allow_role(statement, held):
                raise self._refuse(statement.line, role_message(statement))
            take_out = True  # allow_role keeps it (RoleCheck.statements), to run before the load
        elif not statement.truncated and (owner_change(statement) or default_privileges(statement)):
            if self.keep_owners:
                self.owner_statements.append(held.decode("utf-8", "replace").strip())
            take_out = True
        elif statement.words(2) == ["CREATE", "EXTENSION"]:
            self._extension(statement)
            take_out = True
        elif comment_on_extension(statement):
            take_out = True  # CREATE EXTENSION gave it the comment of its control file
        elif (schema := created_schema(statement)) is not None and schema in self.schemas_made:
            take_out = True
        if self.prologue and not _in_prologue(statement):
            self.prologue = False
        self._out.append(b"\n" * held.count(b"\n") if take_out else held)
        if is_copy_from_stdin(statement):
            self._mode = _COPY

    def _extension(self, statement: Statement) -> None:
        """CREATE EXTENSION: created by snapvol as the superuser before the load, in the new
        database where nothing of the dump exists yet; so it must come before any object."""
        extension = parse_extension(statement)
        if extension is None:
            raise self._refuse(
                statement.line,
                "only CREATE EXTENSION [IF NOT EXISTS] name [WITH] [SCHEMA s] [VERSION v] "
                "[CASCADE] is allowed",
            )
        made = self.extensions_made
        if not self.prologue or (made is not None and extension.name not in made):
            raise self._refuse(
                statement.line,
                f"CREATE EXTENSION {extension.name} comes after the dump's first objects "
                "(snapvol creates a dump's extensions before loading it, as pg_dump orders them)",
            )
        self.extensions.append(extension)

    def _refuse(self, line: int, why: str, *, allow_roles: bool = False) -> RefusedScript:
        """``allow_roles``: a restore that lets the dump create its roles may get past it."""
        return RefusedScript(
            f"{self.what}, line {line}: {why}; a restore may change only its own database",
            retry_with={"allow_roles": "true"} if allow_roles else None,
        )


def is_role_statement(statement: Statement) -> bool:
    """CREATE or ALTER of a ROLE, USER or GROUP (a USER MAPPING is the database's own)."""
    words = statement.words(3)
    return (
        len(words) >= 2
        and statement.tokens[0].kind == "word"
        and words[0] in ("CREATE", "ALTER")
        and words[1] in _ROLE_OBJECTS
        and words[2:3] != ["MAPPING"]
    )


def role_message(statement: Statement) -> str:
    words = statement.words(3)
    name = words[2].lower() if len(words) > 2 else ""
    return f"{words[0]} {words[1]} {name} changes the server's roles"


@dataclass(frozen=True)
class Extension:
    """``CREATE EXTENSION [IF NOT EXISTS] name [WITH] [SCHEMA s] [VERSION v] [CASCADE]``."""

    name: str
    schema: str | None = None
    version: str | None = None
    cascade: bool = False

    def sql(self) -> str:
        """The statement, rebuilt from the names alone (nothing of the dump's text)."""
        sql = f"CREATE EXTENSION IF NOT EXISTS {ident(self.name)}"
        if self.schema is not None:
            sql += f" SCHEMA {ident(self.schema)}"
        if self.version is not None:
            sql += f" VERSION {literal(self.version)}"
        return sql + (" CASCADE" if self.cascade else "")


def _name(token: Token) -> str | None:
    return role_name(token) if token.kind in ("word", "quoted") else None


def parse_extension(statement: Statement) -> Extension | None:
    """The extension a CREATE EXTENSION statement creates; None unless it is exactly that."""
    tokens = statement.tokens
    if statement.truncated or not tokens or tokens[-1].value != ";":
        return None
    if statement.words(2) != ["CREATE", "EXTENSION"] or tokens[1].kind != "word":
        return None
    rest = tokens[2:-1]
    if [t.value for t in rest[:3] if t.kind == "word"] == ["IF", "NOT", "EXISTS"]:
        rest = rest[3:]
    if not rest or (name := _name(rest[0])) is None:
        return None
    rest = rest[1:]
    if rest and rest[0].kind == "word" and rest[0].value == "WITH":
        rest = rest[1:]
    options: dict[str, str | None] = {}
    while rest:
        word = rest[0].value if rest[0].kind == "word" else ""
        if word in options or word not in ("SCHEMA", "VERSION", "CASCADE"):
            return None
        if word == "CASCADE":
            options[word], rest = None, rest[1:]
            continue
        if len(rest) < 2:
            return None
        value = rest[1]
        if word == "SCHEMA":
            options[word] = _name(value)
        elif value.kind == "string" or re.fullmatch(r"[0-9.]+", value.value):
            options[word] = value.value
        else:
            options[word] = _name(value)
        if options[word] is None:
            return None
        rest = rest[2:]
    return Extension(
        name, options.get("SCHEMA"), options.get("VERSION"), cascade="CASCADE" in options
    )


def comment_on_extension(statement: Statement) -> bool:
    """``COMMENT ON EXTENSION name IS 'text';`` and nothing else."""
    tokens = statement.tokens
    return (
        not statement.truncated
        and len(tokens) == 7
        and [t.value for t in tokens[:3]] == ["COMMENT", "ON", "EXTENSION"]
        and all(t.kind == "word" for t in tokens[:3])
        and tokens[3].kind in ("word", "quoted")
        and (tokens[4].kind, tokens[4].value) == ("word", "IS")
        and tokens[5].kind == "string"
        and tokens[6].value == ";"
    )


def created_schema(statement: Statement) -> str | None:
    """The schema of ``CREATE SCHEMA name;`` (nothing else in it)."""
    tokens = statement.tokens
    if len(tokens) == 4 and statement.words(2) == ["CREATE", "SCHEMA"] and tokens[3].value == ";":
        return _name(tokens[2])
    return None


def _in_prologue(statement: Statement) -> bool:
    """What pg_dump writes before its first object: settings, schemas (with their owners and
    comments) and extensions."""
    first = statement.words(3)
    return (
        first[:1] in (["SET"], ["SELECT"])
        or first[:2] in (["CREATE", "SCHEMA"], ["CREATE", "EXTENSION"])
        or first[:3] in (["COMMENT", "ON", "SCHEMA"], ["COMMENT", "ON", "EXTENSION"])
        or owner_change(statement)
    )


def is_copy_from_stdin(statement: Statement) -> bool:
    words = [t.value for t in statement.tokens if t.kind == "word"]
    return bool(words) and words[0] == "COPY" and "STDIN" in words


def owner_change(statement: Statement) -> bool:
    """``ALTER <object> <name> OWNER TO <role>;`` and nothing else (no strings, no SET, ...)."""
    tokens = statement.tokens
    if len(tokens) < 6 or tokens[0].value != "ALTER" or tokens[0].kind != "word":
        return False
    if tokens[-1].value != ";":
        return False
    owner, to, role = tokens[-4:-1]
    if (owner.kind, owner.value, to.kind, to.value) != ("word", "OWNER", "word", "TO"):
        return False
    if role.kind not in ("word", "quoted"):
        return False
    body = tokens[1:-4]
    return not any(
        t.kind == "string"
        or t.value == ";"
        or (t.kind == "word" and t.value in ("OWNER", "SET", "RENAME", "ADD", "DROP", "TO"))
        for t in body
    )


def default_privileges(statement: Statement) -> bool:
    """``ALTER DEFAULT PRIVILEGES FOR ROLE r [IN SCHEMA s] GRANT|REVOKE …;`` as pg_dump writes
    it: acting for another role needs membership in it, so it is applied after the load."""
    words = statement.words(6)
    tokens = statement.tokens
    return (
        words[:5]
        in (
            ["ALTER", "DEFAULT", "PRIVILEGES", "FOR", "ROLE"],
            ["ALTER", "DEFAULT", "PRIVILEGES", "FOR", "USER"],
        )
        and all(t.kind == "word" for t in tokens[:5])
        and not any(t.kind == "string" or t.value == ";" for t in tokens[:-1])
        and any(t.kind == "word" and t.value in ("GRANT", "REVOKE") for t in tokens)
    )


def _copy_form(tokens: list[Token]) -> bool:
    """``COPY name[.name] [(col, ...)] FROM stdin``: the only COPY a restore may run."""
    names = ("word", "quoted")
    i, n = 1, len(tokens)

    def at(j: int, kind: str | tuple[str, ...], value: str | None = None) -> bool:
        if j >= n:
            return False
        t = tokens[j]
        kinds = (kind,) if isinstance(kind, str) else kind
        return t.kind in kinds and (value is None or t.value == value)

    if not at(i, names):
        return False
    i += 1
    if at(i, "punct", ".") and at(i + 1, names):
        i += 2
    if at(i, "punct", "("):
        i += 1
        while at(i, names):
            i += 1
            if at(i, "punct", ","):
                i += 1
                continue
            break
        if not at(i, "punct", ")"):
            return False
        i += 1
    return at(i, "word", "FROM") and at(i + 1, "word", "STDIN") and i + 2 == n


def check_fragment(
    fragment: Statement, refuse: Callable[[int, str], RefusedScript], *, whole: bool
) -> None:
    """Refuse a statement, or a part of one between semicolons, that reaches beyond the database.

    ``whole``: the fragment is a whole statement as psql sends it (role statements are then
    left to the filter, which knows whether roles are allowed).
    """
    tokens = fragment.tokens
    if not tokens:
        return
    words = [t.value if t.kind in ("word", "punct") else "" for t in tokens]
    first = words[0] if tokens[0].kind == "word" else ""
    second = words[1] if len(words) > 1 else ""
    line = fragment.line
    if is_role_statement(fragment):
        if whole:
            return
        raise refuse(line, role_message(fragment))
    if first == "DROP" and second in _ROLE_OBJECTS:
        raise refuse(line, f"DROP {second} changes the server's roles")
    if first in ("CREATE", "ALTER", "DROP") and second in _CLUSTER_OBJECTS:
        raise refuse(line, f"{first} {second} reaches beyond the database")
    if first == "ALTER" and second == "SYSTEM":
        raise refuse(line, "ALTER SYSTEM changes the server's settings")
    if first in ("CREATE", "ALTER", "DROP") and second == "EVENT":
        raise refuse(line, f"{first} EVENT TRIGGER is not allowed")
    if first in ("REASSIGN", "LOAD") or (first == "DROP" and second == "OWNED"):
        raise refuse(line, f"{first} {second} reaches beyond the database")
    if first in ("PREPARE", "COMMIT", "ROLLBACK") and second in ("PREPARED", "TRANSACTION"):
        raise refuse(line, "prepared transactions are not allowed")
    if first in ("GRANT", "REVOKE") and not any(
        t.kind == "word" and t.value == "ON" for t in tokens
    ):
        raise refuse(line, f"{first} of a role's membership changes the server's roles")
    for i, token in enumerate(tokens[:-1]):
        if token.kind == "word" and token.value == "ON" and tokens[i + 1].kind == "word":
            target = tokens[i + 1].value
            if target in ("DATABASE", "TABLESPACE", "PARAMETER", "ROLE", "SUBSCRIPTION"):
                raise refuse(line, f"it acts on a {target.lower()}, not on the database's content")
    if first == "COPY" and not _copy_form(tokens):
        raise refuse(line, "only COPY <table> (<columns>) FROM stdin is allowed")
    if first in ("SET", "RESET"):
        _check_setting(tokens, line, refuse)
    for i, token in enumerate(tokens):
        if token.kind == "word" and token.value == "SET_CONFIG":
            paren = tokens[i + 1] if i + 1 < len(tokens) else None
            arg = tokens[i + 2] if i + 2 < len(tokens) else None
            if (
                paren is None
                or paren.value != "("
                or arg is None
                or arg.kind != "string"
                or arg.value.lower() != "search_path"
            ):
                raise refuse(line, "set_config() of anything but search_path is not allowed")


def _check_setting(
    tokens: list[Token], line: int, refuse: Callable[[int, str], RefusedScript]
) -> None:
    verb = tokens[0].value
    rest = tokens[1:]
    scoped = rest and rest[0].kind == "word" and rest[0].value in ("SESSION", "LOCAL")
    if scoped and not (len(rest) > 1 and rest[1].value == "AUTHORIZATION"):
        rest = rest[1:]
    if not rest:
        return
    name = rest[0].value.upper() if rest[0].kind in ("word", "quoted") else ""
    if name in _ROLE_SETTINGS or name in ("SESSION", "ALL"):
        what = "SESSION AUTHORIZATION" if name == "SESSION" else name
        raise refuse(line, f"{verb} {what} would switch the session's role")
    values = [t.value for t in rest[1:] if t.value not in ("TO", "=")]
    value = values[0].upper() if values else ""
    if name == "STANDARD_CONFORMING_STRINGS" and verb == "SET" and value not in ("ON", "TRUE"):
        raise refuse(line, "standard_conforming_strings must stay on")
    if name == "CLIENT_ENCODING" and value.replace("_", "").replace("-", "") in _UNSAFE_ENCODINGS:
        raise refuse(line, f"client encoding {value} is not allowed")


# What a role a dump creates may be given when roles are allowed: nothing that reaches beyond the
# roles' own databases' contents (no superuser, no role or database creation, no replication, no
# row-security bypass, no membership in other roles).
_ROLE_OPTIONS = frozenset(
    {
        "NOSUPERUSER",
        "NOCREATEDB",
        "NOCREATEROLE",
        "INHERIT",
        "NOINHERIT",
        "LOGIN",
        "NOLOGIN",
        "NOREPLICATION",
        "NOBYPASSRLS",
        "ENCRYPTED",
    }
)


def role_name(token: Token) -> str:
    """A role's name as PostgreSQL has it: unquoted names folded to lower case."""
    return token.value.lower() if token.kind == "word" else token.value


class RoleCheck:
    """Roles a dump may create (a restore's ``allow_roles``): ``CREATE ROLE|USER name [WITH]
    options`` with harmless options, and ``ALTER ROLE|USER`` of a role created earlier in the
    same script with the same options. Never ``ALTER`` of a role the script did not create (a
    superuser's password, say)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str]] = []  # (role, statement), in order

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.statements))

    def __call__(self, statement: Statement, text: bytes) -> bool:
        tokens = statement.tokens
        if statement.truncated or len(tokens) < 4 or tokens[1].value == "GROUP":
            return False
        if tokens[2].kind not in ("word", "quoted"):
            return False
        name = role_name(tokens[2])
        if tokens[0].value == "ALTER" and name not in self.names:
            return False
        if not _harmless_options(tokens[3:-1]):
            return False
        self.statements.append((name, text.decode("utf-8", "replace").strip()))
        return True


def _harmless_options(options: list[Token]) -> bool:
    i = 1 if options and options[0].kind == "word" and options[0].value == "WITH" else 0
    while i < len(options):
        t = options[i]
        if t.kind != "word":
            return False
        if t.value in _ROLE_OPTIONS:
            i += 1
        elif t.value == "PASSWORD" and i + 1 < len(options):
            nxt = options[i + 1]
            if not (nxt.kind == "string" or (nxt.kind == "word" and nxt.value == "NULL")):
                return False
            i += 2
        elif t.value == "VALID" and i + 2 < len(options) and options[i + 1].value == "UNTIL":
            if options[i + 2].kind != "string":
                return False
            i += 3
        elif t.value == "CONNECTION" and i + 2 < len(options) and options[i + 1].value == "LIMIT":
            i += 3 if options[i + 2].value != "-" else 4
            if not re.fullmatch(r"[0-9]+", options[i - 1].value if i <= len(options) else ""):
                return False
        else:
            return False
    return True
