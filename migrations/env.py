"""Alembic environment for genbot (async engines, SQLite batch mode).

Two ways in:

* ``genbot.storage.migrate.upgrade`` passes an open synchronous connection in
  ``config.attributes["connection"]`` (taken from an async engine through ``run_sync``), so
  migrating never starts a second event loop inside a running one;
* the ``alembic`` command line passes a URL (``-x url=…`` or ``sqlalchemy.url``); this file then
  builds genbot's own engine (same SQLite pragmas and BEGIN handling) and runs it with
  ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from genbot.storage.db import create_engine, write_engine
from genbot.storage.search import include_name
from genbot.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """The database URL given on the command line or in the config."""
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=sqlite+aiosqlite:///path/genbot.db")
    return url


def _configure(**kwargs: Any) -> None:
    """Configure the migration context the same way online and offline."""
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
        # The full-text search index (migration 0009) is hand-written SQL the ORM does not describe.
        include_name=include_name,
        # Our BEGIN hook makes SQLite DDL transactional, so a failed migration leaves no trace.
        transactional_ddl=True,
        **kwargs,
    )


def run_on_connection(connection: Connection) -> None:
    """Run the pending migrations on an open synchronous connection."""
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    """Open genbot's engine for ``url`` and migrate it (the ``alembic`` command line)."""
    engine = create_engine(url)
    try:
        async with write_engine(engine).begin() as connection:
            await connection.run_sync(run_on_connection)
    finally:
        await engine.dispose()


def main() -> None:
    """Pick offline (SQL script), embedded (connection given) or command-line mode."""
    if context.is_offline_mode():
        _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
    elif (connection := config.attributes.get("connection")) is not None:
        run_on_connection(connection)
    else:
        if config.config_file_name is not None:
            fileConfig(config.config_file_name, disable_existing_loggers=False)
        asyncio.run(run_from_url(_url()))


main()
