"""The three tables of the demo database, as SQLModel classes.

They live in their own SQLAlchemy registry (:data:`metadata`), not in ``SQLModel.metadata``, so
creating or dropping them never touches tables other code registers with SQLModel, and vice versa.
Constraint names are PostgreSQL's defaults, so :mod:`demo.crud` can tell them apart in errors::

    usuarios   usuario_id INTEGER PK (chosen by the user), nombre TEXT NOT NULL,
               apellido TEXT NOT NULL
    productos  producto_id SERIAL PK, nombre_producto TEXT NOT NULL, manufacturador TEXT NOT NULL,
               precio FLOAT NOT NULL CHECK (precio >= 0)
    pedidos    pedido_id SERIAL PK,
               usuario_id INTEGER NOT NULL REFERENCES usuarios ON DELETE CASCADE,
               producto_id INTEGER NOT NULL REFERENCES productos ON DELETE CASCADE,
               cantidad INTEGER NOT NULL CHECK (cantidad >= 0),
               fecha_pedido TIMESTAMP NOT NULL DEFAULT now()
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

demo_registry = registry(metadata=MetaData())
metadata = demo_registry.metadata


class DemoModel(SQLModel, registry=demo_registry):
    """Base of the demo tables: binds them to :data:`metadata` instead of SQLModel's global one."""


class Usuario(DemoModel, table=True):
    __tablename__ = "usuarios"

    usuario_id: int = Field(
        sa_column=Column("usuario_id", Integer, primary_key=True, autoincrement=False)
    )
    nombre: str = Field(sa_column=Column("nombre", Text, nullable=False))
    apellido: str = Field(sa_column=Column("apellido", Text, nullable=False))


class Producto(DemoModel, table=True):
    __tablename__ = "productos"
    __table_args__ = (CheckConstraint("precio >= 0", name="productos_precio_check"),)

    producto_id: int | None = Field(
        default=None,
        sa_column=Column("producto_id", Integer, primary_key=True, autoincrement=True),
    )
    nombre_producto: str = Field(sa_column=Column("nombre_producto", Text, nullable=False))
    manufacturador: str = Field(sa_column=Column("manufacturador", Text, nullable=False))
    precio: float = Field(sa_column=Column("precio", Float, nullable=False))


class Pedido(DemoModel, table=True):
    __tablename__ = "pedidos"
    __table_args__ = (CheckConstraint("cantidad >= 0", name="pedidos_cantidad_check"),)

    pedido_id: int | None = Field(
        default=None,
        sa_column=Column("pedido_id", Integer, primary_key=True, autoincrement=True),
    )
    usuario_id: int = Field(
        sa_column=Column(
            "usuario_id",
            Integer,
            ForeignKey("usuarios.usuario_id", ondelete="CASCADE", name="pedidos_usuario_id_fkey"),
            nullable=False,
        )
    )
    producto_id: int = Field(
        sa_column=Column(
            "producto_id",
            Integer,
            ForeignKey(
                "productos.producto_id", ondelete="CASCADE", name="pedidos_producto_id_fkey"
            ),
            nullable=False,
        )
    )
    cantidad: int = Field(sa_column=Column("cantidad", Integer, nullable=False))
    fecha_pedido: datetime | None = Field(
        default=None,
        sa_column=Column(
            "fecha_pedido", DateTime(timezone=False), nullable=False, server_default=func.now()
        ),
    )


USUARIOS: Table = metadata.tables["usuarios"]
PRODUCTOS: Table = metadata.tables["productos"]
PEDIDOS: Table = metadata.tables["pedidos"]
#: In dependency order (parents first): create in this order, empty or drop in reverse.
TABLES: tuple[Table, ...] = (USUARIOS, PRODUCTOS, PEDIDOS)
