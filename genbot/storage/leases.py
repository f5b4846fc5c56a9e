"""This serving process's lease on the database, and clean-up after processes that are gone.

``ProcessLease`` registers the process (``processes``), heartbeats it every ``HEARTBEAT_S`` and
calls ``reap`` each time: the running generations of processes silent for ``STALE_AFTER_S`` are
marked failed (``repository.mark_interrupted``), their quota slots and rows deleted. Other
periodic work joins the beat as a chore (``ProcessLease.chores``: the daily prune).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from sqlalchemy import delete

from genbot.storage.db import Database
from genbot.storage.processes import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    Clock,
    heartbeat,
    live_owners,
    new_process_id,
    stale_cutoff,
    unregister,
)
from genbot.storage.repository import mark_interrupted
from genbot.storage.tables import Process, QuotaSlot, utcnow

log = logging.getLogger("genbot.storage.processes")


async def reap(
    db: Database, now: datetime, stale_after_s: float = STALE_AFTER_S, *, started_before: datetime | None = None
) -> int:
    """Fail the running generations of processes that are gone, drop their slots and rows; returns the failed count.

    ``started_before``: rows without an owner (older versions wrote none) count as gone only if
    created before this time (see ``mark_interrupted``).
    """
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
        # Called with the beat's time after each heartbeat; each decides itself whether it is due.
        self.chores: list[Callable[[datetime], Awaitable[object]]] = []

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
                continue
            for chore in self.chores:
                try:
                    await chore(now)
                except Exception:  # a failed chore is tried again on a later beat
                    log.warning("periodic chore %r failed", chore, exc_info=True)
