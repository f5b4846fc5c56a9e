"""Database engines, shared by ``Database`` and the Alembic migrations.

SQLite ("database is locked" must never happen):

* every connection runs in WAL mode (readers never block the writer) with a busy timeout,
  foreign keys on and ``synchronous=NORMAL`` (durable across process crashes; WAL makes it safe);
* pysqlite's own transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself
  (the recipe in the SQLAlchemy SQLite docs, "Enabling Non-Legacy SQLite Transactional Modes");
  write transactions begin with ``BEGIN IMMEDIATE``, so they take the write lock up front and
  wait in the busy handler instead of failing later when a read lock cannot be upgraded;
* inside one process, writes queue on an ``asyncio.Lock`` so they do not even contend.

PostgreSQL (``postgresql+asyncpg://``) needs none of this: plain transactions, pre-pinged pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Execution option read by the BEGIN hook: how a SQLite transaction starts.
_BEGIN_OPTION = "genbot_sqlite_begin"

_SQLITE_PRAGMAS = (
    # busy_timeout first: switching to WAL needs a lock another connection may hold.
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
)


def default_sqlite_url(data_dir: Path) -> str:
    """The URL of ``genbot.db`` in ``data_dir``, creating the folder if needed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / "genbot.db").resolve()
    return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string(hide_password=False)


def is_sqlite(url: str | URL) -> bool:
    """Whether a database URL points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url``, configured for safe concurrent use (see the module doc)."""
    if is_sqlite(url):
        engine = create_async_engine(url, echo=echo)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True)


def write_engine(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) whose SQLite transactions begin with ``BEGIN IMMEDIATE``."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Install the pragmas and the BEGIN hook on a SQLite engine."""
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """Set the pragmas and stop the driver from issuing its own (deferred, DML-only) BEGIN."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    """Emit BEGIN ourselves: IMMEDIATE for writers, plain (deferred) for readers."""
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())
