"""Serving processes on one database: an id per process, a heartbeat, and clean-up after the dead.

Each serving process registers a row in ``processes`` and refreshes its ``heartbeat_at`` every
``HEARTBEAT_S``. A process whose heartbeat is older than ``STALE_AFTER_S`` is gone (crashed,
killed, its machine lost): its running generations are marked failed, and its quota slots stop
counting at once and are deleted with its row. Live processes leave each other alone. Times come
from the caller's clock; hosts sharing a database need clocks that agree well within
``STALE_AFTER_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, select

from genbot.storage.db import Database
from genbot.storage.tables import Process, QuotaSlot, utcnow

log = logging.getLogger("genbot.storage.processes")
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0  # six missed heartbeats: a busy process is slow, not this slow

Clock = Callable[[], datetime]


def new_process_id() -> str:
    """A process id unique across hosts and restarts: "host:pid:random"."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def stale_cutoff(now: datetime, stale_after_s: float = STALE_AFTER_S) -> datetime:
    """Heartbeats older than this belong to processes that are gone."""
    return now - timedelta(seconds=stale_after_s)


def live_owners(cutoff: datetime) -> Select[Any]:
    """The ids of processes that heartbeated at or after ``cutoff`` (for ``IN`` conditions)."""
    return select(Process.id).where(Process.heartbeat_at >= cutoff)


async def heartbeat(db: Database, process_id: str, now: datetime) -> None:
    """Register ``process_id`` or refresh its heartbeat (a reaped but living process comes back)."""
    async with db.write() as session:
        row = await session.get(Process, process_id)
        if row is None:
            session.add(Process(id=process_id, started_at=now, heartbeat_at=now))
        else:
            row.heartbeat_at = now


async def unregister(db: Database, process_id: str) -> None:
    """Remove a process that is stopping, with any quota slots it still holds."""
    async with db.write() as session:
        await session.execute(delete(QuotaSlot).where(QuotaSlot.owner == process_id))
        await session.execute(delete(Process).where(Process.id == process_id))


async def reap(
    db: Database, now: datetime, stale_after_s: float = STALE_AFTER_S, *, started_before: datetime | None = None
) -> int:
    """Fail the running generations of processes that are gone, drop their slots and rows; returns the failed count.

    ``started_before``: rows without an owner (older versions wrote none) count as gone only if
    created before this time (see ``repository.mark_interrupted``).
    """
    from genbot.storage.repository import mark_interrupted  # repository imports this module

    failed = await mark_interrupted(db, started_before=started_before, now=now, stale_after_s=stale_after_s)
    cutoff = stale_cutoff(now, stale_after_s)
    async with db.write() as session:
        await session.execute(delete(QuotaSlot).where(QuotaSlot.owner.not_in(live_owners(cutoff))))
        await session.execute(delete(Process).where(Process.heartbeat_at < cutoff))
    return failed


class ProcessLease:
    """This process's row in ``processes``, kept alive by a background heartbeat task."""

    def __init__(self, db: Database, clock: Clock = utcnow, interval_s: float = HEARTBEAT_S) -> None:
        self.id = new_process_id()
        self._db = db
        self._clock = clock
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[ProcessLease]:
        """Register, heartbeat in the background while inside, unregister on the way out."""
        await heartbeat(self._db, self.id, self._clock())
        self._task = asyncio.create_task(self._beat_forever(), name="genbot-process-heartbeat")
        try:
            yield self
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            try:
                await unregister(self._db, self.id)
            except Exception:  # the row goes stale and is reaped by the next process anyway
                log.warning("could not unregister process %s", self.id, exc_info=True)

    async def _beat_forever(self) -> None:
        """Heartbeat and reap dead processes every interval; a failed beat is logged, never fatal."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                now = self._clock()
                await heartbeat(self._db, self.id, now)
                failed = await reap(self._db, now)
                if failed:
                    log.warning("%d generation(s) of stopped processes were marked failed", failed)
            except Exception:
                log.warning("process heartbeat failed; retrying in %.0f s", self._interval_s, exc_info=True)
