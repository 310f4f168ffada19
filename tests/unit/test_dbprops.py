"""Turning a database's grants and settings, as the catalogs hold them, back into SQL."""

from __future__ import annotations

import json

import pytest

from snapvol.pg.dbprops import DatabaseProps, setting_sql, split_list


@pytest.mark.parametrize(
    ("stored", "elements"),
    [
        ('"$user", public', ["$user", "public"]),
        ("public", ["public"]),
        ('"Otro ""Esquema""", b ,c', ['Otro "Esquema"', "b", "c"]),
        ('x, "y,z"', ["x", "y,z"]),
        ('""', [""]),
    ],
)
def test_split_list_reads_the_stored_form(stored: str, elements: list[str]) -> None:
    assert split_list(stored) == elements


def test_setting_sql_quotes_lists_element_by_element() -> None:
    assert setting_sql('search_path="$user", public') == "\"search_path\" TO '$user', 'public'"
    assert setting_sql("work_mem=8MB") == "\"work_mem\" TO '8MB'"
    assert setting_sql("app.note=it's=fine") == "\"app.note\" TO 'it''s=fine'"


def test_default_privileges_and_no_settings_need_nothing() -> None:
    props = DatabaseProps.from_json(
        '{"acl": null, "settings": [], "comment": null, "connlimit": -1}'
    )
    assert props.statements("db__snapvol_1", "owner") == []


def test_everything_is_given_to_the_new_database() -> None:
    raw = {
        "acl": [
            ["postgres", "CREATE", False],
            ["lector", "CONNECT", True],
            [None, "TEMPORARY", False],
        ],
        "settings": [[None, ["work_mem=8MB"]], ["lector", ["statement_timeout=5s"]]],
        "comment": "it's ours",
        "connlimit": 40,
    }
    sql = DatabaseProps.from_json(json.dumps(raw)).statements('new"db', "postgres")
    db = '"new""db"'
    assert sql == [
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f'REVOKE ALL ON DATABASE {db} FROM "postgres"',
        f'GRANT CREATE ON DATABASE {db} TO "postgres"',
        f'GRANT CONNECT ON DATABASE {db} TO "lector" WITH GRANT OPTION',
        f"GRANT TEMPORARY ON DATABASE {db} TO PUBLIC",
        f"ALTER DATABASE {db} SET \"work_mem\" TO '8MB'",
        f'ALTER ROLE "lector" IN DATABASE {db} SET "statement_timeout" TO \'5s\'',
        f"COMMENT ON DATABASE {db} IS 'it''s ours'",
        f"ALTER DATABASE {db} CONNECTION LIMIT 40",
    ]
