"""Alembic, configured in code so it works from any working directory.

``await upgrade_database(url)`` (or ``await upgrade(engine)``) migrates a database to head. It
runs Alembic's synchronous ``command.upgrade`` on the async engine's connection through
``run_sync``, so it is safe to call from a running event loop: ``migrations/env.py`` sees the
connection in ``config.attributes["connection"]`` and never starts a loop of its own.

The ``alembic`` command line also works, for writing new revisions:
``alembic -c alembic.ini -x url=sqlite+aiosqlite:///path/genbot.db upgrade head``.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from genbot.resources import migrations_dir
from genbot.storage.engines import create_engine, write_engine

# The wheel's copy of migrations/, or the checkout's top-level folder (genbot/resources.py).
MIGRATIONS_DIR = migrations_dir()

# Any constant works; it only has to be the same in every genbot process.
_PG_MIGRATION_LOCK = 0x67656E626F74  # "genbot"
# Tries of a SQLite migration that meets "database is locked" (see ``upgrade``).
_SQLITE_LOCKED_TRIES = 5

log = logging.getLogger(__name__)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at ``migrations/`` (and at ``url`` when given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser treats "%" as interpolation; URL-escaped passwords contain it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision a database is at, or None for a blank database."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` in one transaction."""
    if engine.dialect.name != "sqlite":
        await _upgrade_once(engine, revision)
        return
    # Processes that open a brand-new SQLite file together can still be told "database is
    # locked" while one of them switches the file to WAL (a lock the busy handler does not
    # always wait for). The migration is one transaction, so trying again is safe.
    for attempt in range(1, _SQLITE_LOCKED_TRIES + 1):
        try:
            await _upgrade_once(engine, revision)
            return
        except OperationalError as e:
            if "database is locked" not in str(e) or attempt == _SQLITE_LOCKED_TRIES:
                raise
            log.info("database is locked while migrating (try %d of %d); trying again", attempt, _SQLITE_LOCKED_TRIES)
            await engine.dispose()
            await asyncio.sleep(0.2 * attempt)


async def _upgrade_once(engine: AsyncEngine, revision: str) -> None:
    """One migration transaction."""
    # IMMEDIATE on SQLite / an advisory lock on PostgreSQL: processes starting together
    # migrate one after another instead of racing on the same DDL.
    async with write_engine(engine).begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        await conn.run_sync(_run_upgrade, revision)


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Open ``url``, migrate it to ``revision`` and close it again (``genbot db upgrade``)."""
    engine = create_engine(url)
    try:
        await upgrade(engine, revision)
    finally:
        await engine.dispose()


def _run_upgrade(connection: Connection, revision: str) -> None:
    """Run Alembic's upgrade on an already-open synchronous connection."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
