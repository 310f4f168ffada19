"""``python -m demo``: a small CRUD app on the PostgreSQL database ``pc_db``.

It is the data snapvol's end-to-end demo snapshots and restores. Commands::

    init                                           create the tables (if missing)
    usuario crear --id N --nombre T --apellido T   add a user (you choose the id)
    usuario ver ID [--json]                        show a user
    producto crear --nombre T --manufacturador T --precio X
                                                   add a product (id assigned; precio >= 0)
    producto ver ID [--json]                       show a product
    pedido crear --usuario ID --producto ID --cantidad N
                                                   add an order (dated now)
    pedido ver ID [--json]                         show an order
    info [--limit N] [--json]                      every order with its user and product
    seed [--usuarios N] [--productos N] [--pedidos N] [--seed S] [--replace] [--yes]
                                                   fill the tables with generated rows
                                                   (same seed, same rows)
    counts [--json]                                rows per table
    ping                                           check the connection, show the server version
    eliminar [--yes]                               drop the tables and all their rows (asks first)

Connection: ``postgresql+psycopg://postgres:12345@127.0.0.1:5432/pc_db`` (the docker-compose
stack) unless ``DEMO_DATABASE_URL`` is set, or any of ``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE`` replace one part of it. The password is never printed.

Errors (bad input, missing rows, database down) print one ``Error: ...`` line on stderr and exit
with 1 (2 for malformed command lines).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from demo import crud
from demo.crud import DemoError
from demo.db import build_url, make_engine, mask_url, scrub
from demo.models import PEDIDOS, PRODUCTOS, USUARIOS, Pedido, Producto, Usuario
from demo.seed import seed as seed_tables

PROG_NAME = "python -m demo"
PIPE_WIDTH = 160
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class DemoContext:
    """The connection settings of one invocation; the engine is made on first use."""

    url: URL
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> DemoContext:
        return cls(url=build_url(os.environ))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @property
    def where(self) -> str:
        return mask_url(self.url)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class DemoGroup(click.Group):
    """Turns every anticipated failure into one ``Error: ...`` line on stderr and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except DemoError as err:
            _fail(err.message, 1)
        except click.Abort:
            _fail("aborted", 1)
        except click.UsageError as err:
            hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            _fail(f"{err.format_message()}{hint}", err.exit_code)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {_one_line(_scrub_env(message))}", err=True)
    sys.exit(code)


def _scrub_env(message: str) -> str:
    """Belt and braces: no message leaves with the configured password in it."""
    secrets = [os.environ.get("PGPASSWORD")]
    with contextlib.suppress(DemoError):
        secrets.append(build_url(os.environ).password)
    # Masking very short passwords would garble messages without protecting anything.
    return scrub(message, *(s for s in secrets if s and len(s) >= 3))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _console() -> Console:
    # Made per command, so it writes to whatever sys.stdout is now (CliRunner swaps it). Output to
    # a pipe or file gets wide lines rather than rich's 80 columns (COLUMNS still wins).
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _as_dict(row: Usuario | Producto | Pedido) -> dict[str, Any]:
    """The row's columns in table order."""
    table = {Usuario: USUARIOS, Producto: PRODUCTOS, Pedido: PEDIDOS}[type(row)]
    return {column.name: getattr(row, column.name) for column in table.columns}


def _show_record(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("campo", style="bold")
    table.add_column("valor")
    for key, value in data.items():
        shown = value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)
        table.add_row(key, Text(shown))
    _console().print(table)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def yes_option(func: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(func)


pass_demo = click.make_pass_decorator(DemoContext)


@click.group(
    cls=DemoGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """A small CRUD app on the PostgreSQL database pc_db (the data of snapvol's demo).

    \b
    Connection: postgresql+psycopg://postgres:***@127.0.0.1:5432/pc_db by default;
    DEMO_DATABASE_URL replaces it, or PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE
    replace one part each. The password is never printed.

    \b
    Examples:
      python -m demo init
      python -m demo usuario crear --id 1 --nombre Ana --apellido García
      python -m demo producto crear --nombre Teclado --manufacturador Acme --precio 19.99
      python -m demo pedido crear --usuario 1 --producto 1 --cantidad 2
      python -m demo info
      python -m demo seed --usuarios 1000 --productos 200 --pedidos 10000 --seed 42
      python -m demo counts --json
      python -m demo eliminar --yes
    """
    demo = DemoContext.from_env()
    ctx.obj = demo
    ctx.call_on_close(demo.close)


@cli.command()
@pass_demo
def init(demo: DemoContext) -> None:
    """Create the tables usuarios, productos and pedidos (those that are missing)."""
    created = crud.crear_tablas(demo.engine)
    if created:
        click.echo(f"Created tables {', '.join(created)} in {demo.where}")
    else:
        click.echo(f"Tables already exist in {demo.where}")


@cli.command()
@pass_demo
def ping(demo: DemoContext) -> None:
    """Check that the database answers; print the server version."""
    version = crud.comprobar_conexion(demo.engine)
    click.echo(f"PostgreSQL {version} at {demo.where}")


# --- usuario ---------------------------------------------------------------------------------


@cli.group()
def usuario() -> None:
    """Create and show users (usuarios)."""


@usuario.command("crear")
@click.option("--id", "usuario_id", type=int, required=True, help="The new user's id.")
@click.option("--nombre", required=True, help="First name.")
@click.option("--apellido", required=True, help="Last name.")
@pass_demo
def usuario_crear(demo: DemoContext, usuario_id: int, nombre: str, apellido: str) -> None:
    """Add a user with the id you choose."""
    row = crud.crear_usuario(demo.engine, usuario_id, nombre, apellido)
    click.echo(f"Created usuario {row.usuario_id}: {row.nombre} {row.apellido}")


@usuario.command("ver")
@click.argument("usuario_id", metavar="ID", type=int)
@json_option
@pass_demo
def usuario_ver(demo: DemoContext, usuario_id: int, as_json: bool) -> None:
    """Show the user with this ID."""
    data = _as_dict(crud.obtener_usuario(demo.engine, usuario_id))
    if as_json:
        _echo_json(data)
    else:
        _show_record(f"usuario {usuario_id}", data)


# --- producto --------------------------------------------------------------------------------


@cli.group()
def producto() -> None:
    """Create and show products (productos)."""


@producto.command("crear")
@click.option("--nombre", "nombre_producto", required=True, help="Product name.")
@click.option("--manufacturador", required=True, help="Manufacturer.")
@click.option("--precio", type=float, required=True, help="Price, >= 0.")
@pass_demo
def producto_crear(
    demo: DemoContext, nombre_producto: str, manufacturador: str, precio: float
) -> None:
    """Add a product; its id is assigned and printed."""
    row = crud.crear_producto(demo.engine, nombre_producto, manufacturador, precio)
    click.echo(
        f"Created producto {row.producto_id}: {row.nombre_producto} "
        f"({row.manufacturador}) {row.precio:.2f}"
    )


@producto.command("ver")
@click.argument("producto_id", metavar="ID", type=int)
@json_option
@pass_demo
def producto_ver(demo: DemoContext, producto_id: int, as_json: bool) -> None:
    """Show the product with this ID."""
    data = _as_dict(crud.obtener_producto(demo.engine, producto_id))
    if as_json:
        _echo_json(data)
    else:
        _show_record(f"producto {producto_id}", data)


# --- pedido ----------------------------------------------------------------------------------


@cli.group()
def pedido() -> None:
    """Create and show orders (pedidos)."""


@pedido.command("crear")
@click.option("--usuario", "usuario_id", type=int, required=True, help="The ordering user's id.")
@click.option("--producto", "producto_id", type=int, required=True, help="The product's id.")
@click.option("--cantidad", type=int, required=True, help="Quantity, >= 0.")
@pass_demo
def pedido_crear(demo: DemoContext, usuario_id: int, producto_id: int, cantidad: int) -> None:
    """Add an order of a product by a user (both must exist), dated now."""
    row = crud.crear_pedido(demo.engine, usuario_id, producto_id, cantidad)
    fecha = row.fecha_pedido.isoformat(sep=" ") if row.fecha_pedido else "?"
    click.echo(
        f"Created pedido {row.pedido_id}: usuario {row.usuario_id}, producto {row.producto_id}, "
        f"cantidad {row.cantidad}, {fecha}"
    )


@pedido.command("ver")
@click.argument("pedido_id", metavar="ID", type=int)
@json_option
@pass_demo
def pedido_ver(demo: DemoContext, pedido_id: int, as_json: bool) -> None:
    """Show the order with this ID."""
    data = _as_dict(crud.obtener_pedido(demo.engine, pedido_id))
    if as_json:
        _echo_json(data)
    else:
        _show_record(f"pedido {pedido_id}", data)


# --- whole database ----------------------------------------------------------------------------


@cli.command()
@click.option("--limit", type=click.IntRange(min=0), help="Show at most N orders.")
@json_option
@pass_demo
def info(demo: DemoContext, limit: int | None, as_json: bool) -> None:
    """Every order with its user and product (obtener_info_completa), by pedido id."""
    rows = crud.obtener_info_completa(demo.engine, limit=limit)
    if as_json:
        _echo_json([row.as_dict() for row in rows])
        return
    if not rows:
        click.echo("No pedidos.")
        return
    table = Table(title=f"pedidos ({len(rows)})", title_justify="left")
    for name, justify in (
        ("pedido", "right"),
        ("fecha", "left"),
        ("usuario", "left"),
        ("producto", "left"),
        ("manufacturador", "left"),
        ("precio", "right"),
        ("cant.", "right"),
        ("total", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            str(row.pedido_id),
            row.fecha_pedido.isoformat(sep=" "),
            Text(f"{row.usuario_id} {row.nombre} {row.apellido}"),
            Text(f"{row.producto_id} {row.nombre_producto}"),
            Text(row.manufacturador),
            f"{row.precio:.2f}",
            str(row.cantidad),
            f"{row.total:.2f}",
        )
    _console().print(table)


@cli.command()
@click.option("--usuarios", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--productos", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--pedidos", type=click.IntRange(min=0), default=500, show_default=True)
@click.option(
    "--seed", "seed_value", type=int, default=0, show_default=True, help="Same seed, same rows."
)
@click.option("--replace", is_flag=True, help="Empty the tables first if they hold rows.")
@yes_option
@pass_demo
def seed(
    demo: DemoContext,
    usuarios: int,
    productos: int,
    pedidos: int,
    seed_value: int,
    replace: bool,
    yes: bool,
) -> None:
    """Fill the tables with generated rows (creating the tables if needed).

    Refuses if the tables already hold rows, unless --replace (which asks first, unless --yes).
    """
    if replace and not yes:
        click.confirm(
            f"Replace every row of usuarios, productos and pedidos in {demo.where}?", abort=True
        )
    start = time.monotonic()
    counts = seed_tables(
        demo.engine,
        usuarios=usuarios,
        productos=productos,
        pedidos=pedidos,
        seed=seed_value,
        replace=replace,
    )
    elapsed = time.monotonic() - start
    summary = " ".join(f"{name}={count}" for name, count in counts.items())
    click.echo(f"Seeded {demo.where} with seed {seed_value}: {summary} ({elapsed:.2f} s)")


@cli.command()
@json_option
@pass_demo
def counts(demo: DemoContext, as_json: bool) -> None:
    """Rows per table."""
    result = crud.contar_filas(demo.engine)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"Rows in {demo.where}:")
    table = Table()
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in result.items():
        table.add_row(name, f"{count:,}")
    _console().print(table)


@cli.command()
@yes_option
@pass_demo
def eliminar(demo: DemoContext, yes: bool) -> None:
    """Drop the tables usuarios, productos, pedidos and ALL their rows (asks first)."""
    if not yes:
        click.confirm(
            f"Drop usuarios, productos and pedidos and all their rows in {demo.where}?",
            abort=True,
        )
    dropped = crud.eliminar_base_de_datos(demo.engine)
    if dropped:
        click.echo(f"Dropped tables {', '.join(dropped)} in {demo.where}")
    else:
        click.echo(f"No demo tables in {demo.where}; nothing to drop")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m demo``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name=PROG_NAME)
