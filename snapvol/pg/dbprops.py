"""What belongs to a PostgreSQL database rather than to its contents, carried across a restore.

``pg_dump`` without ``--create`` (what logical snapshots use, so they can be restored under any
name) leaves out the database's own grants, its ``ALTER DATABASE … SET`` and
``ALTER ROLE … IN DATABASE … SET`` settings, its comment and its connection limit. A restore makes
a new database and swaps it in, so these are read from the database being replaced and given to
the new one: a restore changes the data, never who may connect or how sessions are set up (a
``REVOKE CONNECT … FROM PUBLIC`` must not silently come undone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from snapvol.pg.quoting import ident, literal

# A column of a query on ``pg_database d``: the database's properties as one JSON object. ``acl``
# is null when the database has the default privileges; a grantee or role of null is PUBLIC or
# every role.
COLUMN = """jsonb_build_object(
  'acl', CASE WHEN d.datacl IS NULL THEN NULL ELSE (
    SELECT coalesce(jsonb_agg(jsonb_build_array(
      CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
      a.privilege_type, a.is_grantable)), '[]')
    FROM aclexplode(d.datacl) a) END,
  'settings', (
    SELECT coalesce(jsonb_agg(jsonb_build_array(
      CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig)), '[]')
    FROM pg_db_role_setting s WHERE s.setdatabase = d.oid),
  'comment', shobj_description(d.oid, 'pg_database'),
  'connlimit', d.datconnlimit)"""

# Settings whose value is a list of quoted elements (PostgreSQL's GUC_LIST_QUOTE); each element
# becomes its own literal, as pg_dump does, or the list would be set as one name.
_LIST_SETTINGS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
}


@dataclass(frozen=True)
class DatabaseProps:
    acl: list[tuple[str | None, str, bool]] | None = None  # None: the default privileges
    settings: list[tuple[str | None, list[str]]] = field(default_factory=list)
    comment: str | None = None
    connlimit: int = -1

    @classmethod
    def from_json(cls, raw: str) -> DatabaseProps:
        data = json.loads(raw)
        acl = data.get("acl")
        return cls(
            acl=None if acl is None else [(g, p, bool(o)) for g, p, o in acl],
            settings=[(role, list(items)) for role, items in data.get("settings") or []],
            comment=data.get("comment"),
            connlimit=int(data.get("connlimit", -1)),
        )

    def statements(self, database: str, owner: str) -> list[str]:
        """SQL that gives ``database`` (owned by ``owner``) these properties."""
        db = ident(database)
        sql: list[str] = []
        if self.acl is not None:
            sql += [
                f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
                f"REVOKE ALL ON DATABASE {db} FROM {ident(owner)}",
            ]
            for grantee, privilege, grantable in self.acl:
                to = "PUBLIC" if grantee is None else ident(grantee)
                option = " WITH GRANT OPTION" if grantable else ""
                sql.append(f"GRANT {privilege} ON DATABASE {db} TO {to}{option}")
        for role, items in self.settings:
            alter = (
                f"ALTER DATABASE {db}"
                if role is None
                else f"ALTER ROLE {ident(role)} IN DATABASE {db}"
            )
            sql += [f"{alter} SET {setting_sql(item)}" for item in items]
        if self.comment is not None:
            sql.append(f"COMMENT ON DATABASE {db} IS {literal(self.comment)}")
        if self.connlimit != -1:
            sql.append(f"ALTER DATABASE {db} CONNECTION LIMIT {self.connlimit}")
        return sql


def setting_sql(item: str) -> str:
    """``name TO value`` for one ``name=value`` of ``pg_db_role_setting.setconfig``."""
    name, _, value = item.partition("=")
    if name.lower() in _LIST_SETTINGS:
        values = ", ".join(literal(v) for v in split_list(value))
    else:
        values = literal(value)
    return f"{ident(name)} TO {values}"


def split_list(value: str) -> list[str]:
    """The elements of a stored list setting: ``"$user", public`` → ``['$user', 'public']``."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n and not (value[i] == '"' and value[i + 1 : i + 2] != '"'):
                chars.append(value[i])
                i += 2 if value[i] == '"' else 1  # a doubled quote is one quote
            i += 1
            items.append("".join(chars))
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            items.append(value[i:end].rstrip())
            i = end
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return items
        i += 1  # the comma
