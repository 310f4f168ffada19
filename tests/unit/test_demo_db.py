"""demo.db and demo.crud's error translation: URL building, password masking (no database)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from demo.crud import translate_error
from demo.db import DEFAULT_URL, DemoError, build_url, make_engine, mask_url, parse_url, scrub

PASSWORD = "s3cr3t-p@ss:w/rd%"


def test_default_url_is_the_compose_stack() -> None:
    url = build_url({})
    assert url == DEFAULT_URL
    assert url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://postgres:12345@127.0.0.1:5432/pc_db"
    )


def test_pg_variables_replace_one_part_each() -> None:
    url = build_url({"PGHOST": "db.local", "PGPORT": "6543"})
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "db.local",
        6543,
        "postgres",
        "12345",
        "pc_db",
    )
    url = build_url({"PGUSER": "app", "PGPASSWORD": PASSWORD, "PGDATABASE": "other", "PGHOST": ""})
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "127.0.0.1",
        5432,
        "app",
        PASSWORD,
        "other",
    )
    assert url.drivername == "postgresql+psycopg"


def test_special_characters_in_the_password_survive_a_round_trip() -> None:
    url = build_url({"PGPASSWORD": PASSWORD})
    assert make_url(url.render_as_string(hide_password=False)).password == PASSWORD


def test_demo_database_url_wins_over_pg_variables() -> None:
    env = {
        "DEMO_DATABASE_URL": "postgresql+psycopg://u:pw@h:1/d",
        "PGHOST": "ignored",
        "PGPASSWORD": "ignored",
    }
    url = build_url(env)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "u",
        "pw",
        "h",
        1,
        "d",
    )


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgresql_urls_use_psycopg_3(scheme: str) -> None:
    assert build_url({"DEMO_DATABASE_URL": f"{scheme}://u:pw@h/d"}).drivername == (
        "postgresql+psycopg"
    )


def test_invalid_url_error_does_not_repeat_the_text() -> None:
    with pytest.raises(DemoError) as info:
        parse_url(f"not a url {PASSWORD}")
    assert PASSWORD not in str(info.value)
    assert "DEMO_DATABASE_URL" in str(info.value)


def test_non_postgresql_url_is_refused() -> None:
    with pytest.raises(DemoError, match="PostgreSQL"):
        build_url({"DEMO_DATABASE_URL": "sqlite:///x.db"})


@pytest.mark.parametrize("port", ["x", "0", "65536", "-1", "54 32"])
def test_bad_pgport(port: str) -> None:
    with pytest.raises(DemoError, match="PGPORT"):
        build_url({"PGPORT": port})


def test_mask_url_hides_the_password() -> None:
    url = build_url({"PGPASSWORD": PASSWORD})
    masked = mask_url(url)
    assert PASSWORD not in masked
    assert masked == "postgresql+psycopg://postgres:***@127.0.0.1:5432/pc_db"
    assert mask_url(url.render_as_string(hide_password=False)) == masked
    assert mask_url("::garbage") == "<invalid URL>"


def test_scrub() -> None:
    assert scrub(f"a {PASSWORD} b {PASSWORD}", PASSWORD) == "a *** b ***"
    assert scrub("nothing", None, "") == "nothing"


def test_make_engine_sets_a_connect_timeout_and_repr_hides_the_password() -> None:
    engine = make_engine(build_url({"PGPASSWORD": PASSWORD}))
    try:
        assert PASSWORD not in repr(engine)
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


class FakeDiag:
    def __init__(self, constraint_name: str | None = None, table_name: str | None = None) -> None:
        self.constraint_name = constraint_name
        self.table_name = table_name
        self.column_name = None


class FakeDriverError(Exception):
    def __init__(self, message: str, sqlstate: str, **diag: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.diag = FakeDiag(**diag)


ENGINE_URL = build_url({"PGPASSWORD": PASSWORD})


class FakeEngineBind:
    """Just enough of an Engine for translate_error (it only reads ``.url``)."""

    url = ENGINE_URL


@pytest.mark.parametrize(
    ("constraint", "values", "expected"),
    [
        ("usuarios_pkey", {"usuario_id": 7}, "usuario 7 already exists"),
        ("pedidos_usuario_id_fkey", {"usuario_id": 9}, "usuario 9 does not exist"),
        ("pedidos_producto_id_fkey", {"producto_id": 3}, "producto 3 does not exist"),
        ("productos_precio_check", {"precio": -1.5}, "precio must be >= 0 (got -1.5)"),
        ("pedidos_cantidad_check", {"cantidad": -2}, "cantidad must be >= 0 (got -2)"),
    ],
)
def test_constraint_violations_get_clear_messages(
    constraint: str, values: dict[str, object], expected: str
) -> None:
    orig = FakeDriverError("violates constraint", "23505", constraint_name=constraint)
    err = IntegrityError("INSERT ...", {}, orig)
    assert str(translate_error(err, FakeEngineBind(), values)) == expected  # type: ignore[arg-type]


def test_constraint_message_without_values_falls_back_to_the_driver_text() -> None:
    orig = FakeDriverError("duplicate key", "23505", constraint_name="usuarios_pkey")
    message = str(translate_error(IntegrityError("x", {}, orig), FakeEngineBind()))  # type: ignore[arg-type]
    assert "duplicate key" in message
    assert "usuarios_pkey" in message


def test_missing_table_says_run_init() -> None:
    orig = FakeDriverError('relation "usuarios" does not exist', "42P01")
    message = str(translate_error(ProgrammingError("x", {}, orig), FakeEngineBind()))  # type: ignore[arg-type]
    assert "usuarios" in message
    assert "python -m demo init" in message


def test_connection_errors_name_the_masked_url_and_never_the_password() -> None:
    orig = FakeDriverError(f"connection failed\n\tpassword was {PASSWORD}", "08001")
    message = str(translate_error(OperationalError("x", {}, orig), FakeEngineBind()))  # type: ignore[arg-type]
    assert PASSWORD not in message
    assert "postgres:***@127.0.0.1:5432/pc_db" in message
    assert "\n" not in message
