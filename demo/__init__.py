"""The demo app: a small CRUD system on the PostgreSQL database ``pc_db`` (SQLModel + psycopg 3).

It gives snapvol's end-to-end demo real data to snapshot and restore. Modules:

- :mod:`demo.models`: the tables ``usuarios``, ``productos``, ``pedidos``;
- :mod:`demo.crud`: ``crear_*``, ``obtener_*``, ``obtener_info_completa``, ``crear_tablas``,
  ``eliminar_base_de_datos``;
- :mod:`demo.seed`: deterministic generated data (``seed(...)``);
- :mod:`demo.db`: the connection URL (from the environment) and password masking;
- :mod:`demo.cli`: ``python -m demo``.

Anticipated failures raise :class:`DemoError`.
"""

from demo.db import DemoError

__all__ = ["DemoError"]
