"""The ``Database`` handle the rest of genbot holds.

API choice: one ``Database`` object owns the async engine and its session factories and is
opened with ``async with Database.open(url) as db:`` (explicit lifecycle: the engine's pool is
disposed on exit). Repository functions take ``db`` as their first argument and open a short
transaction each through ``db.read()`` or ``db.write()``. The engines themselves (SQLite's WAL,
busy timeout and ``BEGIN IMMEDIATE`` for writers) come from ``genbot.storage.engines``; inside
one process, SQLite writes also queue on an ``asyncio.Lock`` so they do not even contend.

A transaction that waits longer than the pool's timeout (30 s) for a free connection raises
``Busy`` (503 with Retry-After in the API) rather than SQLAlchemy's own error: under more load
than the database connections carry, a request is refused as busy and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from genbot.errors import Busy
from genbot.storage.engines import create_engine, default_sqlite_url, is_sqlite, write_engine
from genbot.storage.schema import is_current

__all__ = ["Database", "create_engine", "default_sqlite_url", "is_sqlite", "write_engine"]


class Database:
    """An open database: the engine plus session factories for reads and writes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._reader = async_sessionmaker(engine, expire_on_commit=False)
        self._writer = async_sessionmaker(write_engine(engine), expire_on_commit=False)
        # One writer at a time per process on SQLite; PostgreSQL handles concurrent writers.
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, *, upgrade: bool | None = None, echo: bool = False) -> AsyncIterator[Database]:
        """Open ``url``; migrate it to head first if ``upgrade`` (default: only for SQLite)."""
        engine = create_engine(url, echo=echo)
        try:
            if (upgrade if upgrade is not None else is_sqlite(url)) and not await is_current(engine):
                # Imported here, not at the top: Alembic is big and most opens need no migration.
                from genbot.storage.migrate import upgrade as upgrade_to_head

                await upgrade_to_head(engine)
            yield cls(engine)
        finally:
            await engine.dispose()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session inside a read transaction (a consistent snapshot; never blocks writers)."""
        with _busy_without_a_connection():
            async with self._reader() as session, session.begin():
                yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session inside a write transaction, committed on success and rolled back on error."""
        with _busy_without_a_connection():
            async with self._write_lock, self._writer() as session, session.begin():
                yield session


@contextlib.contextmanager
def _busy_without_a_connection() -> Iterator[None]:
    """Turn the pool's "no free connection in time" into ``Busy``: the caller may retry, nothing was done."""
    try:
        yield
    except PoolTimeout as e:
        raise Busy("the database has no free connection for this request now; try again", retry_after=1.0) from e
