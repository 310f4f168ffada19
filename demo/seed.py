"""Generated demo data: any size, and the same rows for the same seed.

The row generators (:func:`generar_usuarios`, :func:`generar_productos`, :func:`generar_pedidos`)
are pure: they depend only on their arguments, never on the clock or on ``PYTHONHASHSEED``. Each
table has its own random stream, so ``seed=7`` gives the same users whether you ask for 10 orders
or 10,000. Every value is explicit, ids and ``fecha_pedido`` included, so two databases seeded with
the same arguments hold identical rows (and identical ``pg_dump`` output).

:func:`seed` loads the rows with PostgreSQL ``COPY`` through psycopg (100,000 orders take about a
second) in one transaction, then moves the id sequences past the rows it wrote.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

try:
    import psycopg
except ImportError:  # pragma: no cover - the INSERT fallback below still works
    psycopg = None  # type: ignore[assignment]
from sqlalchemy import Connection, Table, func, insert, inspect, select, text

from demo.crud import INT_MAX, Bind, contar_filas, transaction
from demo.db import DemoError
from demo.models import PEDIDOS, PRODUCTOS, TABLES, USUARIOS, metadata

UsuarioRow = tuple[int, str, str]
ProductoRow = tuple[int, str, str, float]
PedidoRow = tuple[int, int, int, int, datetime]

#: Orders start here and spread over about a year, whatever their number.
EPOCH = datetime(2024, 1, 1, 8, 0, 0)
SPAN = timedelta(days=365)
MAX_ROWS = 10_000_000  # per table: a typo should not fill the disk
INSERT_BATCH = 5_000  # rows per INSERT when the driver has no COPY

NOMBRES = (
    "Ana", "Andrés", "Beatriz", "Carlos", "Carmen", "Diego", "Elena", "Fernando", "Gabriela",
    "Héctor", "Inés", "Javier", "José", "Laura", "Lucía", "Manuel", "María", "Marta", "Miguel",
    "Nicolás", "Pablo", "Paula", "Raúl", "Rocío", "Sergio", "Sofía", "Tomás", "Valeria",
)  # fmt: skip
APELLIDOS = (
    "Álvarez", "Castro", "Díaz", "Fernández", "García", "Gómez", "González", "Hernández",
    "Jiménez", "López", "Martín", "Martínez", "Moreno", "Muñoz", "Navarro", "Núñez", "Ortega",
    "Pérez", "Ramírez", "Romero", "Ruiz", "Sánchez", "Torres", "Vázquez",
)  # fmt: skip
PRODUCTOS_BASE = (
    "Teclado", "Ratón", "Monitor", "Portátil", "Auriculares", "Altavoz", "Cámara web",
    "Disco SSD", "Memoria USB", "Router", "Impresora", "Tableta", "Micrófono", "Cargador",
    "Cable HDMI", "Silla", "Escritorio", "Lámpara",
)  # fmt: skip
VARIANTES = ("Básico", "Pro", "Max", "Mini", "Plus", "Lite", "Ultra", "2024", "Eco", "XL")
MANUFACTURADORES = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Cyberdyne",
    "Soylent", "Wonka", "Vandelay",
)  # fmt: skip


def _rng(seed: int, table: str) -> random.Random:
    # A str seed goes through SHA-512 in random.seed(version=2): stable across runs and platforms.
    return random.Random(f"snapvol-demo:{seed}:{table}")


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DemoError(f"{name} must be a non-negative integer, not {value!r}")
    if value > MAX_ROWS:
        raise DemoError(f"{name} must be at most {MAX_ROWS:,}, not {value:,}")
    return value


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DemoError(f"seed must be an integer, not {seed!r}")
    return seed


def generar_usuarios(n: int, seed: int) -> Iterator[UsuarioRow]:
    """``n`` users ``(usuario_id, nombre, apellido)`` with ids 1..n."""
    _check_count("usuarios", n)
    rng = _rng(_check_seed(seed), "usuarios")
    for usuario_id in range(1, n + 1):
        yield usuario_id, rng.choice(NOMBRES), f"{rng.choice(APELLIDOS)} {rng.choice(APELLIDOS)}"


def generar_productos(m: int, seed: int) -> Iterator[ProductoRow]:
    """``m`` products ``(producto_id, nombre_producto, manufacturador, precio)``, ids 1..m.

    Prices are whole cents between 0.50 and 1500.00.
    """
    _check_count("productos", m)
    rng = _rng(_check_seed(seed), "productos")
    for producto_id in range(1, m + 1):
        nombre = f"{rng.choice(PRODUCTOS_BASE)} {rng.choice(VARIANTES)}"
        precio = rng.randint(50, 150_000) / 100
        yield producto_id, nombre, rng.choice(MANUFACTURADORES), precio


def generar_pedidos(k: int, usuarios: int, productos: int, seed: int) -> Iterator[PedidoRow]:
    """``k`` orders ``(pedido_id, usuario_id, producto_id, cantidad, fecha_pedido)``, ids 1..k.

    They refer to users 1..``usuarios`` and products 1..``productos``; dates start at
    :data:`EPOCH`, whole seconds, non-decreasing with ``pedido_id``, spread over about
    :data:`SPAN`.
    """
    _check_count("pedidos", k)
    _check_count("usuarios", usuarios)
    _check_count("productos", productos)
    if k and not (usuarios and productos):
        raise DemoError("pedidos need at least one usuario and one producto")
    rng = _rng(_check_seed(seed), "pedidos")
    # Mean step of SPAN / k seconds, so k orders cover about SPAN.
    max_step = max(1, int(2 * SPAN.total_seconds() / max(k, 1)))
    fecha = EPOCH
    for pedido_id in range(1, k + 1):
        fecha += timedelta(seconds=rng.randint(0, max_step))
        cantidad = rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 5, 10))
        yield pedido_id, rng.randint(1, usuarios), rng.randint(1, productos), cantidad, fecha


def seed(
    bind: Bind,
    usuarios: int = 100,
    productos: int = 50,
    pedidos: int = 500,
    seed: int = 0,
    *,
    replace: bool = False,
) -> dict[str, int]:
    """Fill the demo tables with generated rows and return the row counts per table.

    Creates the tables if they are missing. If they already hold rows, raises
    :class:`DemoError` unless ``replace`` is true, in which case they are emptied first (in the
    same transaction: on any error the old rows stay). Same arguments, same rows.
    """
    for name, value in (("usuarios", usuarios), ("productos", productos), ("pedidos", pedidos)):
        _check_count(name, value)
    _check_seed(seed)
    if pedidos and not (usuarios and productos):
        raise DemoError("pedidos need at least one usuario and one producto")
    if usuarios > INT_MAX:  # pragma: no cover - MAX_ROWS is far below
        raise DemoError("too many usuarios")

    with transaction(bind) as conn:
        inspector = inspect(conn)
        metadata.create_all(
            conn, tables=[t for t in TABLES if not inspector.has_table(t.name)], checkfirst=True
        )
        existing = {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in TABLES
        }
        if any(existing.values()):
            if not replace:
                have = ", ".join(f"{n}={c}" for n, c in existing.items())
                raise DemoError(
                    f"the tables already hold rows ({have}); "
                    "empty them first (replace=True, or `seed --replace`)"
                )
            conn.execute(text("TRUNCATE pedidos, productos, usuarios RESTART IDENTITY"))
        _load(conn, USUARIOS, generar_usuarios(usuarios, seed))
        _load(conn, PRODUCTOS, generar_productos(productos, seed))
        _load(conn, PEDIDOS, generar_pedidos(pedidos, usuarios, productos, seed))
        for table, column in ((PRODUCTOS, "producto_id"), (PEDIDOS, "pedido_id")):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
                    f"COALESCE(MAX({column}), 0) + 1, false) FROM {table.name}"
                )
            )
    return contar_filas(bind)


def _load(conn: Connection, table: Table, rows: Iterable[Sequence[Any]]) -> None:
    """Append ``rows`` (values in column order) to ``table``: COPY with psycopg, else INSERTs."""
    columns = [c.name for c in table.columns]
    driver = conn.connection.driver_connection
    if psycopg is not None and isinstance(driver, psycopg.Connection):
        with (
            driver.cursor() as cur,
            cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        if len(batch) >= INSERT_BATCH:
            conn.execute(insert(table), batch)
            batch = []
    if batch:
        conn.execute(insert(table), batch)
