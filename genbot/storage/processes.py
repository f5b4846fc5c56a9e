"""Serving processes on one database: an id per process, its heartbeat row, and who is still alive.

Each serving process registers a row in ``processes`` and refreshes its ``heartbeat_at`` every
``HEARTBEAT_S``. A process whose heartbeat is older than ``STALE_AFTER_S`` is gone (crashed,
killed, its machine lost): its running generations are marked failed, and its quota slots stop
counting at once and are deleted with its row (``leases``: ``ProcessLease`` and ``reap``). Live
processes leave each other alone. Times come from the caller's clock; hosts sharing a database
need clocks that agree well within ``STALE_AFTER_S``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, select

from genbot.storage.db import Database
from genbot.storage.tables import Process, QuotaSlot

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
