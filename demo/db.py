"""Connection settings for the demo app: where ``pc_db`` is, and how to show that without secrets.

The URL is built in this order (first match wins):

1. ``DEMO_DATABASE_URL`` (a full SQLAlchemy URL; ``postgresql://`` is read as
   ``postgresql+psycopg://``);
2. otherwise the default ``postgresql+psycopg://postgres:12345@127.0.0.1:5432/pc_db`` (the
   docker-compose stack) with any of ``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD`` and
   ``PGDATABASE`` replacing its part.

Everything here except :func:`make_engine` is pure, so it is unit-tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DRIVER = "postgresql+psycopg"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
DEFAULT_PASSWORD = "12345"  # the docker-compose stack's password; never printed
DEFAULT_DATABASE = "pc_db"
DEFAULT_URL = URL.create(
    DRIVER,
    username=DEFAULT_USER,
    password=DEFAULT_PASSWORD,
    host=DEFAULT_HOST,
    port=DEFAULT_PORT,
    database=DEFAULT_DATABASE,
)
CONNECT_TIMEOUT = 5  # seconds; an unreachable host must not hang the CLI

MASK = "***"


class DemoError(Exception):
    """A failure the user can cause or fix (bad input, missing row, database down).

    The CLI prints ``Error: <message>`` for it and exits 1; anything else is a bug.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def build_url(env: Mapping[str, str]) -> URL:
    """The database URL for an environment (normally ``os.environ``); see the module docstring."""
    raw = env.get("DEMO_DATABASE_URL", "").strip()
    if raw:
        return parse_url(raw)
    port_text = env.get("PGPORT", "").strip()
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DemoError(f"PGPORT must be a port number (1-65535), not {port_text!r}")
        port = int(port_text)
    return URL.create(
        DRIVER,
        username=env.get("PGUSER") or DEFAULT_USER,
        password=env.get("PGPASSWORD") or DEFAULT_PASSWORD,
        host=env.get("PGHOST") or DEFAULT_HOST,
        port=port,
        database=env.get("PGDATABASE") or DEFAULT_DATABASE,
    )


def parse_url(raw: str) -> URL:
    """Parse a ``DEMO_DATABASE_URL``; the error never repeats the text (it may hold a password)."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise DemoError(
            "DEMO_DATABASE_URL is not a valid URL "
            "(expected postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE)"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername=DRIVER)
    if not url.drivername.startswith("postgresql"):
        raise DemoError(f"DEMO_DATABASE_URL must be a PostgreSQL URL, not {url.drivername}://...")
    return url


def mask_url(url: URL | str) -> str:
    """The URL as text with its password replaced by ``***`` (safe to print or log)."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return "<invalid URL>"
    return url.render_as_string(hide_password=True)


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def make_engine(url: URL | str, **kwargs: object) -> Engine:
    """A SQLAlchemy engine for ``url``, with a connect timeout unless the URL sets one."""
    if isinstance(url, str):
        url = parse_url(url)
    connect_args: dict[str, object] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    return create_engine(url, connect_args=connect_args, **kwargs)
