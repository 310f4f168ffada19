"""The demo's operations on ``pc_db``: create the tables, create and read rows, drop everything.

Every function takes ``bind``: a SQLAlchemy/SQLModel :class:`~sqlalchemy.orm.Session` or an
:class:`~sqlalchemy.Engine`. With an engine each call opens (and closes) its own session; with a
session the call works in it, and the ``crear_*`` functions commit it (or roll it back on error).
Objects returned are fully loaded, so they stay usable after their session is closed.

Every failure a user can cause -- a missing id, a negative price, an order for a user or product
that does not exist, a duplicate ``usuario_id``, tables that were never created, a database that
cannot be reached -- raises :class:`DemoError` with a message that names the problem; database
exceptions never escape raw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from demo.db import DemoError, mask_url, scrub
from demo.models import PEDIDOS, PRODUCTOS, TABLES, USUARIOS, Pedido, Producto, Usuario, metadata

__all__ = [
    "Bind",
    "DemoError",
    "PedidoInfo",
    "comprobar_conexion",
    "contar_filas",
    "crear_pedido",
    "crear_producto",
    "crear_tablas",
    "crear_usuario",
    "eliminar_base_de_datos",
    "obtener_info_completa",
    "obtener_pedido",
    "obtener_producto",
    "obtener_usuario",
]

Bind = Session | Engine

try:  # raw driver errors (from COPY in demo.seed) are translated too
    from psycopg import Error as _DriverError
except ImportError:  # pragma: no cover - psycopg is how the demo talks to PostgreSQL
    _DriverError = SQLAlchemyError  # type: ignore[assignment,misc]
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, _DriverError)
M = TypeVar("M", Usuario, Producto, Pedido)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # PostgreSQL INTEGER

# What each named constraint means when a statement violates it; filled from the statement's values.
CONSTRAINT_MESSAGES = {
    "usuarios_pkey": "usuario {usuario_id} already exists",
    "productos_pkey": "producto {producto_id} already exists",
    "pedidos_pkey": "pedido {pedido_id} already exists",
    "pedidos_usuario_id_fkey": "usuario {usuario_id} does not exist",
    "pedidos_producto_id_fkey": "producto {producto_id} does not exist",
    "productos_precio_check": "precio must be >= 0 (got {precio})",
    "pedidos_cantidad_check": "cantidad must be >= 0 (got {cantidad})",
}
INIT_HINT = "run `python -m demo init` first"


@dataclass(frozen=True)
class PedidoInfo:
    """One order with its user and product (a row of :func:`obtener_info_completa`)."""

    pedido_id: int
    fecha_pedido: datetime
    cantidad: int
    usuario_id: int
    nombre: str
    apellido: str
    producto_id: int
    nombre_producto: str
    manufacturador: str
    precio: float

    @property
    def total(self) -> float:
        return self.precio * self.cantidad

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``fecha_pedido`` as ISO 8601 text, plus ``total``."""
        data = asdict(self)
        data["fecha_pedido"] = self.fecha_pedido.isoformat()
        data["total"] = self.total
        return data


# --- sessions and errors ------------------------------------------------------------------------


def _url_of(bind: Bind | Connection) -> Any:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return getattr(engine, "url", None)


def translate_error(
    err: BaseException, bind: Bind | Connection, values: Mapping[str, Any] | None = None
) -> DemoError:
    """The :class:`DemoError` for a database exception raised while working on ``bind``.

    ``err`` is a SQLAlchemy exception or a raw driver (psycopg) one. ``values`` are the
    statement's inputs, used to say which id or amount was wrong. The message never contains the
    password, even if the driver's message did.
    """
    url = _url_of(bind)
    password = getattr(url, "password", None)
    where = mask_url(url) if url is not None else "the database"
    orig: BaseException | None = err.orig if isinstance(err, DBAPIError) else err
    if isinstance(orig, SQLAlchemyError):  # not from the driver
        orig = None
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    constraint = getattr(diag, "constraint_name", None)
    text = _one_line(str(orig) if orig is not None else str(err))

    message: str
    if constraint in CONSTRAINT_MESSAGES:
        try:
            message = CONSTRAINT_MESSAGES[constraint].format(**(values or {}))
        except (KeyError, IndexError):
            message = f"{text} (constraint {constraint})"
    elif sqlstate == "42P01":  # undefined_table
        table = getattr(diag, "table_name", None) or _quoted(text) or "a demo table"
        message = f"table {table} does not exist in {where}; {INIT_HINT}"
    elif sqlstate == "23502":  # not_null_violation
        column = getattr(diag, "column_name", None) or "a column"
        message = f"{column} is required"
    elif sqlstate.startswith("22"):  # data exception: out of range, bad text, ...
        message = f"invalid value: {text}"
    elif _is_operational(err, orig) or sqlstate.startswith(("08", "28", "3D", "57")):
        message = f"cannot use the database {where}: {text}"
    elif orig is not None:
        message = f"database error: {text}"
    else:
        message = f"database error: {_one_line(str(err))}"
    return DemoError(scrub(message, password))


def _is_operational(err: BaseException, orig: BaseException | None) -> bool:
    """Connection-level trouble (refused, timed out, authentication, server shutting down)."""
    if isinstance(err, OperationalError):
        return True
    return orig is not None and any(c.__name__ == "OperationalError" for c in type(orig).__mro__)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _quoted(text: str) -> str | None:
    match = re.search(r'"([^"]+)"', text)
    return match.group(1) if match else None


@contextmanager
def _session(bind: Bind, values: Mapping[str, Any] | None = None) -> Iterator[Session]:
    """A session on ``bind`` whose database errors come out as :class:`DemoError`.

    A session we open ourselves does not expire objects on commit, so they outlive it. On error,
    the session is rolled back (ours or the caller's).
    """
    if isinstance(bind, Session):
        session, own = bind, False
    elif isinstance(bind, Engine):
        session, own = Session(bind, expire_on_commit=False), True
    else:
        raise TypeError(f"bind must be a Session or an Engine, not {type(bind).__name__}")
    try:
        yield session
    except DATABASE_ERRORS as err:
        with suppress(*DATABASE_ERRORS):
            session.rollback()
        raise translate_error(err, bind, values) from err
    finally:
        if own:
            session.close()


@contextmanager
def transaction(bind: Bind, values: Mapping[str, Any] | None = None) -> Iterator[Connection]:
    """A connection in a transaction on ``bind``, committed at the end (errors as DemoError)."""
    with _session(bind, values) as session:
        yield session.connection()
        session.commit()


# --- input checks (what the database cannot say clearly) ---------------------------------------


def _check_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DemoError(f"{name} must be an integer, not {value!r}")
    if not INT_MIN <= value <= INT_MAX:
        raise DemoError(f"{name} {value} is out of range ({INT_MIN} to {INT_MAX})")
    return value


def _check_text(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise DemoError(f"{name} must be text, not {value!r}")
    value = value.strip()
    if not value:
        raise DemoError(f"{name} must not be empty")
    if "\x00" in value:
        raise DemoError(f"{name} must not contain NUL characters")
    return value


def _check_float(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DemoError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise DemoError(f"{name} must be a finite number, not {value}")
    return value


# --- schema ----------------------------------------------------------------------------------


def crear_tablas(bind: Bind) -> list[str]:
    """Create ``usuarios``, ``productos`` and ``pedidos`` if missing; return the ones created."""
    with transaction(bind) as conn:
        inspector = inspect(conn)
        missing = [t for t in TABLES if not inspector.has_table(t.name)]
        metadata.create_all(conn, tables=missing, checkfirst=True)
    return [t.name for t in missing]


def eliminar_base_de_datos(bind: Bind) -> list[str]:
    """Drop the three demo tables and all their rows; return the ones that existed.

    Irreversible. Nothing else in the database is touched. (The CLI asks before calling this.)
    """
    with transaction(bind) as conn:
        inspector = inspect(conn)
        present = [t for t in TABLES if inspector.has_table(t.name)]
        metadata.drop_all(conn, tables=present, checkfirst=True)
    return [t.name for t in reversed(present)]


def comprobar_conexion(bind: Bind) -> str:
    """Connect and return the server's version (``SHOW server_version``), e.g. ``"15.8"``."""
    with _session(bind) as session:
        return str(session.connection().execute(text("SHOW server_version")).scalar_one())


def contar_filas(bind: Bind) -> dict[str, int]:
    """Rows per demo table: ``{"usuarios": n, "productos": m, "pedidos": k}``."""
    with _session(bind) as session:
        conn = session.connection()
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in TABLES
        }


# --- create ----------------------------------------------------------------------------------


def crear_usuario(bind: Bind, usuario_id: int, nombre: str, apellido: str) -> Usuario:
    """Insert a user with the id the caller chose (a duplicate id is a :class:`DemoError`)."""
    values = {"usuario_id": _check_int("usuario_id", usuario_id)}
    usuario = Usuario(
        usuario_id=usuario_id,
        nombre=_check_text("nombre", nombre),
        apellido=_check_text("apellido", apellido),
    )
    with _session(bind, values) as session:
        # Checked first so a session that already holds this user gets a clear error too (the
        # primary key still decides when two clients race).
        if session.get(Usuario, usuario_id) is not None:
            raise DemoError(f"usuario {usuario_id} already exists")
        session.add(usuario)
        session.commit()
        session.refresh(usuario)
    return usuario


def crear_producto(
    bind: Bind, nombre_producto: str, manufacturador: str, precio: float
) -> Producto:
    """Insert a product; its ``producto_id`` is assigned by the database. ``precio`` >= 0."""
    producto = Producto(
        nombre_producto=_check_text("nombre_producto", nombre_producto),
        manufacturador=_check_text("manufacturador", manufacturador),
        precio=_check_float("precio", precio),
    )
    with _session(bind, {"precio": producto.precio}) as session:
        session.add(producto)
        session.commit()
        session.refresh(producto)
    return producto


def crear_pedido(
    bind: Bind,
    usuario_id: int,
    producto_id: int,
    cantidad: int,
    fecha_pedido: datetime | None = None,
) -> Pedido:
    """Insert an order; ``fecha_pedido`` defaults to the server's ``now()``. ``cantidad`` >= 0.

    The user and the product must exist.
    """
    values = {
        "usuario_id": _check_int("usuario_id", usuario_id),
        "producto_id": _check_int("producto_id", producto_id),
        "cantidad": _check_int("cantidad", cantidad),
    }
    pedido = Pedido(usuario_id=usuario_id, producto_id=producto_id, cantidad=cantidad)
    if fecha_pedido is not None:
        pedido.fecha_pedido = fecha_pedido
    with _session(bind, values) as session:
        session.add(pedido)
        session.commit()
        session.refresh(pedido)
    return pedido


# --- read ------------------------------------------------------------------------------------


def obtener_usuario(bind: Bind, usuario_id: int) -> Usuario:
    """The user with this id (a missing id is a :class:`DemoError`)."""
    return _get(bind, Usuario, "usuario", usuario_id)


def obtener_producto(bind: Bind, producto_id: int) -> Producto:
    """The product with this id (a missing id is a :class:`DemoError`)."""
    return _get(bind, Producto, "producto", producto_id)


def obtener_pedido(bind: Bind, pedido_id: int) -> Pedido:
    """The order with this id (a missing id is a :class:`DemoError`)."""
    return _get(bind, Pedido, "pedido", pedido_id)


def _get(bind: Bind, model: type[M], label: str, key: int) -> M:
    _check_int(f"{label}_id", key)
    with _session(bind) as session:
        row = session.get(model, key)
    if row is None:
        raise DemoError(f"{label} {key} does not exist")
    return row


def obtener_info_completa(bind: Bind, limit: int | None = None) -> list[PedidoInfo]:
    """Every order joined with its user and product, by ``pedido_id`` (at most ``limit``)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DemoError(f"limit must be a non-negative integer, not {limit!r}")
    query = (
        select(
            PEDIDOS.c.pedido_id,
            PEDIDOS.c.fecha_pedido,
            PEDIDOS.c.cantidad,
            USUARIOS.c.usuario_id,
            USUARIOS.c.nombre,
            USUARIOS.c.apellido,
            PRODUCTOS.c.producto_id,
            PRODUCTOS.c.nombre_producto,
            PRODUCTOS.c.manufacturador,
            PRODUCTOS.c.precio,
        )
        .join_from(PEDIDOS, USUARIOS, PEDIDOS.c.usuario_id == USUARIOS.c.usuario_id)
        .join(PRODUCTOS, PEDIDOS.c.producto_id == PRODUCTOS.c.producto_id)
        .order_by(PEDIDOS.c.pedido_id)
        .limit(limit)
    )
    with _session(bind) as session:
        rows = session.connection().execute(query).all()
    return [PedidoInfo(**row._asdict()) for row in rows]
