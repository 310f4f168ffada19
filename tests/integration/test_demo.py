"""The demo app against a real PostgreSQL 15 container: schema, CRUD, errors, seed, CLI."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlmodel import Session

from demo import crud
from demo.cli import cli
from demo.db import DemoError, make_engine
from demo.seed import EPOCH, generar_pedidos, generar_productos, generar_usuarios, seed
from tests import docker_helpers
from tests.docker_helpers import PgContainer

pytestmark = pytest.mark.docker

PG_VARS = ("DEMO_DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")


def url_of(pg: PgContainer, password: str | None = None, port: int | None = None) -> URL:
    return URL.create(
        "postgresql+psycopg",
        username=pg.user,
        password=password or pg.password,
        host="127.0.0.1",
        port=port or pg.port,
        database=pg.database,
    )


def wait_tcp(pg: PgContainer, timeout: float = 60.0) -> None:
    """Wait until PostgreSQL accepts TCP connections from the host.

    ``wait_ready`` checks the local socket, which can answer during the entrypoint's first
    (socket-only) start, just before the server restarts with TCP.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=pg.port,
                user=pg.user,
                password=pg.password,
                dbname=pg.database,
                connect_timeout=3,
            ) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def tcp_postgres(bed: docker_helpers.TestBed) -> PgContainer:
    pg = bed.postgres(tcp=True)
    wait_tcp(pg)
    return pg


@pytest.fixture(scope="module")
def pg(docker_client: Any) -> Iterator[PgContainer]:
    """One PostgreSQL container for the module (each test starts from an empty database)."""
    beds = docker_helpers.testbed(docker_client)
    bed = next(beds)
    try:
        yield tcp_postgres(bed)
    finally:
        beds.close()  # runs the test bed's cleanup: the container and its volume are removed


@pytest.fixture(scope="module")
def module_engine(pg: PgContainer) -> Iterator[Engine]:
    engine = make_engine(url_of(pg))
    yield engine
    engine.dispose()


@pytest.fixture
def engine(module_engine: Engine) -> Engine:
    """The module's database with no demo tables."""
    crud.eliminar_base_de_datos(module_engine)
    return module_engine


@pytest.fixture
def db(engine: Engine) -> Engine:
    """The module's database with empty demo tables."""
    crud.crear_tablas(engine)
    return engine


def table_names(pg: PgContainer) -> set[str]:
    out = pg.psql("select tablename from pg_tables where schemaname = 'public'")
    return set(out.split()) if out else set()


# --- schema ----------------------------------------------------------------------------------


def test_crear_tablas_makes_the_exact_schema(engine: Engine, pg: PgContainer) -> None:
    assert crud.crear_tablas(engine) == ["usuarios", "productos", "pedidos"]
    assert crud.crear_tablas(engine) == []  # idempotent
    assert table_names(pg) == {"usuarios", "productos", "pedidos"}

    columns = pg.psql(
        "select table_name, column_name, data_type, is_nullable, coalesce(column_default, '') "
        "from information_schema.columns where table_schema = 'public' "
        "order by table_name, ordinal_position"
    ).splitlines()
    assert columns == [
        "pedidos|pedido_id|integer|NO|nextval('pedidos_pedido_id_seq'::regclass)",
        "pedidos|usuario_id|integer|NO|",
        "pedidos|producto_id|integer|NO|",
        "pedidos|cantidad|integer|NO|",
        "pedidos|fecha_pedido|timestamp without time zone|NO|now()",
        "productos|producto_id|integer|NO|nextval('productos_producto_id_seq'::regclass)",
        "productos|nombre_producto|text|NO|",
        "productos|manufacturador|text|NO|",
        "productos|precio|double precision|NO|",
        "usuarios|usuario_id|integer|NO|",
        "usuarios|nombre|text|NO|",
        "usuarios|apellido|text|NO|",
    ]
    constraints = pg.psql(
        "select conname, contype, confdeltype, pg_get_constraintdef(oid) from pg_constraint "
        "where connamespace = 'public'::regnamespace order by conname"
    ).splitlines()
    assert constraints == [
        "pedidos_cantidad_check|c| |CHECK ((cantidad >= 0))",
        "pedidos_pkey|p| |PRIMARY KEY (pedido_id)",
        "pedidos_producto_id_fkey|f|c|FOREIGN KEY (producto_id) "
        "REFERENCES productos(producto_id) ON DELETE CASCADE",
        "pedidos_usuario_id_fkey|f|c|FOREIGN KEY (usuario_id) "
        "REFERENCES usuarios(usuario_id) ON DELETE CASCADE",
        "productos_pkey|p| |PRIMARY KEY (producto_id)",
        "productos_precio_check|c| |CHECK ((precio >= (0)::double precision))",
        "usuarios_pkey|p| |PRIMARY KEY (usuario_id)",
    ]


def test_eliminar_base_de_datos_drops_tables_and_rows(db: Engine, pg: PgContainer) -> None:
    pg.psql("create table otra (x int); insert into otra values (1)")
    try:
        seed(db, usuarios=5, productos=5, pedidos=5, seed=1)
        assert crud.eliminar_base_de_datos(db) == ["pedidos", "productos", "usuarios"]
        assert table_names(pg) == {"otra"}  # nothing else is touched
        assert crud.eliminar_base_de_datos(db) == []
        with pytest.raises(DemoError, match="python -m demo init"):
            crud.obtener_usuario(db, 1)
        with pytest.raises(DemoError, match="python -m demo init"):
            crud.contar_filas(db)
    finally:
        pg.psql("drop table otra")


# --- create and read -------------------------------------------------------------------------


def test_crear_and_obtener(db: Engine, pg: PgContainer) -> None:
    usuario = crud.crear_usuario(db, 42, "  José ", "Núñez")
    assert (usuario.usuario_id, usuario.nombre, usuario.apellido) == (42, "José", "Núñez")
    assert crud.obtener_usuario(db, 42) == usuario

    producto = crud.crear_producto(db, "Teclado", "Acme", 19.99)
    assert producto.producto_id == 1
    assert crud.crear_producto(db, "Gratis", "Acme", 0).producto_id == 2
    got = crud.obtener_producto(db, 1)
    assert (got.nombre_producto, got.manufacturador, got.precio) == ("Teclado", "Acme", 19.99)

    db_now = datetime.fromisoformat(pg.psql("select now()::timestamp"))
    pedido = crud.crear_pedido(db, 42, 1, 3)
    assert (pedido.pedido_id, pedido.usuario_id, pedido.producto_id, pedido.cantidad) == (
        1,
        42,
        1,
        3,
    )
    assert pedido.fecha_pedido is not None
    assert abs(pedido.fecha_pedido - db_now) < timedelta(minutes=1)  # the server's now()
    assert crud.obtener_pedido(db, 1) == pedido

    fixed = datetime(2023, 2, 3, 4, 5, 6)
    assert crud.crear_pedido(db, 42, 2, 0, fecha_pedido=fixed).fecha_pedido == fixed
    assert pg.psql("select count(*) from pedidos") == "2"


def test_operations_work_in_a_callers_session(db: Engine) -> None:
    with Session(db) as session:
        usuario = crud.crear_usuario(session, 1, "Ana", "Gómez")
        producto = crud.crear_producto(session, "Ratón", "Globex", 9.5)
        pedido = crud.crear_pedido(session, usuario.usuario_id, producto.producto_id or 0, 2)
        with pytest.raises(DemoError, match="usuario 1 already exists"):
            crud.crear_usuario(session, 1, "Otra", "Vez")
        # The failed insert was rolled back; the session goes on working.
        assert crud.obtener_pedido(session, pedido.pedido_id or 0).cantidad == 2
        assert len(crud.obtener_info_completa(session)) == 1
    # Everything was committed.
    assert crud.contar_filas(db) == {"usuarios": 1, "productos": 1, "pedidos": 1}
    assert crud.obtener_usuario(db, 1).nombre == "Ana"


def test_obtener_info_completa_joins_users_and_products(db: Engine) -> None:
    crud.crear_usuario(db, 1, "Ana", "Gómez")
    crud.crear_usuario(db, 2, "Luis", "Pérez")
    crud.crear_usuario(db, 3, "Sin", "Pedidos")
    crud.crear_producto(db, "Teclado", "Acme", 20.0)
    crud.crear_producto(db, "Monitor", "Globex", 150.5)
    fecha = datetime(2024, 3, 1, 12, 0)
    crud.crear_pedido(db, 2, 2, 2, fecha_pedido=fecha)
    crud.crear_pedido(db, 1, 1, 5, fecha_pedido=fecha)

    rows = crud.obtener_info_completa(db)
    assert [r.as_dict() for r in rows] == [
        {
            "pedido_id": 1,
            "fecha_pedido": "2024-03-01T12:00:00",
            "cantidad": 2,
            "usuario_id": 2,
            "nombre": "Luis",
            "apellido": "Pérez",
            "producto_id": 2,
            "nombre_producto": "Monitor",
            "manufacturador": "Globex",
            "precio": 150.5,
            "total": 301.0,
        },
        {
            "pedido_id": 2,
            "fecha_pedido": "2024-03-01T12:00:00",
            "cantidad": 5,
            "usuario_id": 1,
            "nombre": "Ana",
            "apellido": "Gómez",
            "producto_id": 1,
            "nombre_producto": "Teclado",
            "manufacturador": "Acme",
            "precio": 20.0,
            "total": 100.0,
        },
    ]
    assert [r.pedido_id for r in crud.obtener_info_completa(db, limit=1)] == [1]
    assert crud.obtener_info_completa(db, limit=0) == []


# --- errors ----------------------------------------------------------------------------------


def test_user_errors_are_demo_errors(db: Engine, pg: PgContainer) -> None:
    crud.crear_usuario(db, 1, "Ana", "Gómez")
    crud.crear_producto(db, "Teclado", "Acme", 20.0)

    cases = [
        (lambda: crud.crear_usuario(db, 1, "Otra", "Ana"), "usuario 1 already exists"),
        (lambda: crud.crear_producto(db, "X", "Y", -0.01), r"precio must be >= 0 \(got -0.01\)"),
        (lambda: crud.crear_pedido(db, 1, 1, -1), r"cantidad must be >= 0 \(got -1\)"),
        (lambda: crud.crear_pedido(db, 99, 1, 1), "usuario 99 does not exist"),
        (lambda: crud.crear_pedido(db, 1, 77, 1), "producto 77 does not exist"),
        (lambda: crud.obtener_usuario(db, 2), "usuario 2 does not exist"),
        (lambda: crud.obtener_producto(db, 2), "producto 2 does not exist"),
        (lambda: crud.obtener_pedido(db, 1), "pedido 1 does not exist"),
        (lambda: crud.crear_usuario(db, 2, "  ", "X"), "nombre must not be empty"),
        (lambda: crud.crear_usuario(db, 2**31, "A", "B"), "out of range"),
        (lambda: crud.crear_producto(db, "X", "Y", math.nan), "finite"),
        (lambda: crud.crear_producto(db, "X", "Y", math.inf), "finite"),
        (lambda: crud.crear_producto(db, "X\x00", "Y", 1.0), "NUL"),
        (lambda: crud.obtener_usuario(db, 2**40), "out of range"),
    ]
    for call, message in cases:
        with pytest.raises(DemoError, match=message):
            call()
    # Nothing half-done was left behind.
    assert crud.contar_filas(db) == {"usuarios": 1, "productos": 1, "pedidos": 0}
    assert pg.psql("select nombre from usuarios") == "Ana"


def test_unreachable_database_is_a_demo_error(pg: PgContainer) -> None:
    closed = make_engine(url_of(pg, port=1))
    wrong = make_engine(url_of(pg, password="not-the-password"))
    try:
        with pytest.raises(DemoError, match=r"cannot use the database .*postgres:\*\*\*@127"):
            crud.crear_tablas(closed)
        with pytest.raises(DemoError, match="password authentication failed") as info:
            crud.obtener_usuario(wrong, 1)
        assert "not-the-password" not in str(info.value)
    finally:
        closed.dispose()
        wrong.dispose()


def test_delete_cascades_to_pedidos(db: Engine, pg: PgContainer) -> None:
    seed(db, usuarios=3, productos=3, pedidos=60, seed=5)
    by_user = int(pg.psql("select count(*) from pedidos where usuario_id = 1"))
    by_product = int(
        pg.psql("select count(*) from pedidos where producto_id = 2 and usuario_id <> 1")
    )
    assert by_user > 0 and by_product > 0
    pg.psql("delete from usuarios where usuario_id = 1")
    assert crud.contar_filas(db)["pedidos"] == 60 - by_user
    pg.psql("delete from productos where producto_id = 2")
    assert crud.contar_filas(db)["pedidos"] == 60 - by_user - by_product
    assert all(r.usuario_id != 1 and r.producto_id != 2 for r in crud.obtener_info_completa(db))


# --- seed ------------------------------------------------------------------------------------


def test_seed_writes_the_generated_rows(engine: Engine, pg: PgContainer) -> None:
    counts = seed(engine, usuarios=30, productos=10, pedidos=200, seed=11)  # creates the tables
    assert counts == {"usuarios": 30, "productos": 10, "pedidos": 200}
    usuarios = pg.psql("select usuario_id, nombre, apellido from usuarios order by 1")
    assert usuarios.splitlines() == ["|".join(map(str, r)) for r in generar_usuarios(30, 11)]
    productos = pg.psql(
        "select producto_id, nombre_producto, manufacturador, precio::text "
        "from productos order by 1"
    )
    assert productos.splitlines() == [
        f"{i}|{n}|{m}|{p!r}" for i, n, m, p in generar_productos(10, 11)
    ]
    pedidos = pg.psql(
        "select pedido_id, usuario_id, producto_id, cantidad, fecha_pedido from pedidos order by 1"
    )
    assert pedidos.splitlines() == [
        f"{i}|{u}|{p}|{c}|{f.isoformat(sep=' ')}"
        for i, u, p, c, f in generar_pedidos(200, 30, 10, 11)
    ]
    # The sequences moved past the seeded ids.
    assert crud.crear_producto(engine, "Nuevo", "Acme", 1.0).producto_id == 11
    assert crud.crear_pedido(engine, 1, 1, 1).pedido_id == 201


def test_seed_refuses_to_mix_with_existing_rows(db: Engine) -> None:
    crud.crear_usuario(db, 1, "Ana", "Gómez")
    with pytest.raises(DemoError, match="already hold rows"):
        seed(db, usuarios=3, productos=3, pedidos=3, seed=0)
    assert crud.contar_filas(db) == {"usuarios": 1, "productos": 0, "pedidos": 0}
    assert seed(db, usuarios=3, productos=3, pedidos=3, seed=0, replace=True) == {
        "usuarios": 3,
        "productos": 3,
        "pedidos": 3,
    }
    assert (
        crud.obtener_usuario(db, 1).nombre != "Ana"
        or crud.obtener_usuario(db, 1).apellido != "Gómez"
    )


def test_same_seed_gives_identical_dumps(
    db: Engine, pg: PgContainer, bed: docker_helpers.TestBed
) -> None:
    sizes = {"usuarios": 200, "productos": 50, "pedidos": 2000}
    seed(db, **sizes, seed=42)
    first = pg.dump()
    assert "COPY public.pedidos" in first

    # Again in the same database (replacing the rows)...
    crud.crear_pedido(db, 1, 1, 1)
    seed(db, **sizes, seed=42, replace=True)
    assert pg.dump() == first

    # ...and in a brand-new server, through a Session this time.
    other = tcp_postgres(bed)
    other_engine = make_engine(url_of(other))
    try:
        with Session(other_engine) as session:
            seed(session, **sizes, seed=42)
        assert other.dump() == first
        seed(other_engine, **sizes, seed=43, replace=True)
        assert other.dump() != first
    finally:
        other_engine.dispose()


def test_seed_100k_rows(db: Engine, pg: PgContainer) -> None:
    counts = seed(db, usuarios=10_000, productos=1_000, pedidos=100_000, seed=3)
    assert counts == {"usuarios": 10_000, "productos": 1_000, "pedidos": 100_000}
    assert pg.psql("select count(*) from pedidos") == "100000"
    first, last = pg.psql("select min(fecha_pedido), max(fecha_pedido) from pedidos").split("|")
    assert datetime.fromisoformat(first) >= EPOCH
    assert datetime.fromisoformat(last) < EPOCH + timedelta(days=400)


# --- CLI -------------------------------------------------------------------------------------


class DemoCli:
    """``python -m demo`` in-process, pointed at the test container through PG* variables."""

    def __init__(self, password: str) -> None:
        self.runner = CliRunner()
        self.password = password
        self.outputs: list[str] = []

    def __call__(self, *args: str, exit_code: int = 0, input: str | None = None) -> Result:
        result = self.runner.invoke(cli, list(args), input=input, catch_exceptions=True)
        self.outputs += [result.stdout, result.stderr]
        assert result.exit_code == exit_code, (
            f"demo {' '.join(args)} exited {result.exit_code}, expected {exit_code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nexception: {result.exception!r}"
        )
        assert self.password not in result.stdout + result.stderr
        if exit_code:
            assert result.exception is None or isinstance(result.exception, SystemExit)
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return result

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def demo_cli(engine: Engine, pg: PgContainer, monkeypatch: pytest.MonkeyPatch) -> DemoCli:
    for var in PG_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(pg.port))
    monkeypatch.setenv("PGUSER", pg.user)
    monkeypatch.setenv("PGPASSWORD", pg.password)
    monkeypatch.setenv("PGDATABASE", pg.database)
    return DemoCli(pg.password)


def test_cli_end_to_end(demo_cli: DemoCli, pg: PgContainer) -> None:
    assert "PostgreSQL 15" in demo_cli("ping").stdout
    out = demo_cli("init").stdout
    assert "Created tables usuarios, productos, pedidos" in out
    assert f"postgres:***@127.0.0.1:{pg.port}/pc_db" in out
    assert "already exist" in demo_cli("init").stdout

    assert (
        "Created usuario 7: Ana Gómez"
        in demo_cli(
            "usuario", "crear", "--id", "7", "--nombre", "Ana", "--apellido", "Gómez"
        ).stdout
    )
    assert (
        "Created producto 1: Teclado [Pro] (Acme) 19.99"
        in demo_cli(
            "producto",
            "crear",
            "--nombre",
            "Teclado [Pro]",
            "--manufacturador",
            "Acme",
            "--precio",
            "19.99",
        ).stdout
    )
    assert (
        "Created pedido 1: usuario 7, producto 1, cantidad 3"
        in demo_cli(
            "pedido", "crear", "--usuario", "7", "--producto", "1", "--cantidad", "3"
        ).stdout
    )

    assert demo_cli.json("usuario", "ver", "7") == {
        "usuario_id": 7,
        "nombre": "Ana",
        "apellido": "Gómez",
    }
    assert demo_cli.json("producto", "ver", "1") == {
        "producto_id": 1,
        "nombre_producto": "Teclado [Pro]",
        "manufacturador": "Acme",
        "precio": 19.99,
    }
    pedido = demo_cli.json("pedido", "ver", "1")
    assert isinstance(pedido, dict) and pedido["cantidad"] == 3
    datetime.fromisoformat(pedido["fecha_pedido"])
    assert "Ana" in demo_cli("usuario", "ver", "7").stdout
    assert "Acme" in demo_cli("producto", "ver", "1").stdout
    assert "fecha_pedido" in demo_cli("pedido", "ver", "1").stdout

    table = demo_cli("info").stdout
    assert "Ana Gómez" in table and "Teclado [Pro]" in table and "59.97" in table
    info = demo_cli.json("info")
    assert isinstance(info, list) and len(info) == 1
    assert info[0]["total"] == pytest.approx(59.97)
    assert demo_cli.json("counts") == {"usuarios": 1, "productos": 1, "pedidos": 1}
    assert "usuarios" in demo_cli("counts").stdout

    # Errors a user can make: one line each, no traceback, no password.
    demo_cli("usuario", "crear", "--id", "7", "--nombre", "B", "--apellido", "C", exit_code=1)
    assert demo_cli.outputs[-1] == "Error: usuario 7 already exists\n"
    demo_cli(
        "producto", "crear", "--nombre", "X", "--manufacturador", "Y", "--precio", "-1", exit_code=1
    )
    assert "precio must be >= 0" in demo_cli.outputs[-1]
    demo_cli("pedido", "crear", "--usuario", "8", "--producto", "1", "--cantidad", "1", exit_code=1)
    assert demo_cli.outputs[-1] == "Error: usuario 8 does not exist\n"
    demo_cli(
        "pedido", "crear", "--usuario", "7", "--producto", "1", "--cantidad", "-2", exit_code=1
    )
    demo_cli("pedido", "ver", "99", exit_code=1)
    assert demo_cli.outputs[-1] == "Error: pedido 99 does not exist\n"
    demo_cli("seed", "--usuarios", "5", exit_code=1)
    assert "already hold rows" in demo_cli.outputs[-1]

    # seed --replace asks first.
    demo_cli("seed", "--replace", input="n\n", exit_code=1)
    assert demo_cli.json("counts") == {"usuarios": 1, "productos": 1, "pedidos": 1}
    out = demo_cli(
        "seed",
        "--usuarios",
        "20",
        "--productos",
        "5",
        "--pedidos",
        "100",
        "--seed",
        "9",
        "--replace",
        "--yes",
    ).stdout
    assert "usuarios=20 productos=5 pedidos=100" in out
    assert len(demo_cli.json("info")) == 100  # type: ignore[arg-type]
    assert "pedidos (3)" in demo_cli("info", "--limit", "3").stdout

    # eliminar asks; "n" keeps everything, --yes drops.
    demo_cli("eliminar", input="n\n", exit_code=1)
    assert table_names(pg) == {"usuarios", "productos", "pedidos"}
    assert "Dropped tables pedidos, productos, usuarios" in demo_cli("eliminar", input="y\n").stdout
    assert table_names(pg) == set()
    demo_cli("counts", exit_code=1)
    assert "python -m demo init" in demo_cli.outputs[-1]
    assert "nothing to drop" in demo_cli("eliminar", "--yes").stdout


def test_cli_connection_settings(
    demo_cli: DemoCli, pg: PgContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DEMO_DATABASE_URL wins over the PG* variables (which point nowhere here).
    url = url_of(pg).render_as_string(hide_password=False).replace("+psycopg", "")
    monkeypatch.setenv("DEMO_DATABASE_URL", url)
    monkeypatch.setenv("PGPORT", "1")
    assert "PostgreSQL 15" in demo_cli("ping").stdout
    monkeypatch.delenv("DEMO_DATABASE_URL")

    # Nothing listens: one error line with the masked URL.
    demo_cli("counts", exit_code=1)
    assert (
        "Error: cannot use the database postgresql+psycopg://postgres:***@127.0.0.1:1/pc_db"
        in (demo_cli.outputs[-1])
    )

    # Wrong password: said so, and neither password is shown.
    monkeypatch.setenv("PGPORT", str(pg.port))
    monkeypatch.setenv("PGPASSWORD", "wrong-password-123")
    wrong = DemoCli("wrong-password-123")
    wrong("init", exit_code=1)
    assert "password authentication failed" in wrong.outputs[-1]
    assert pg.password not in wrong.outputs[-1]

    # A database that does not exist.
    monkeypatch.setenv("PGPASSWORD", pg.password)
    monkeypatch.setenv("PGDATABASE", "no_such_db")
    demo_cli("init", exit_code=1)
    assert 'database "no_such_db" does not exist' in demo_cli.outputs[-1]
