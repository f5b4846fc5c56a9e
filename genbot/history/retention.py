"""The daily prune: ``[storage] keep_days`` / ``keep_rows``, run by one serving process a day.

Every serving process offers ``DailyPrune.tick`` to its heartbeat (``ProcessLease``); a tick
costs nothing until this process's idea of the next due time has passed, then one conditional
write decides which process runs the prune (``store.claim_daily``), so several processes on one
database prune once between them. The deletes themselves are idempotent, so a prune cut short
is simply finished by the next one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from genbot.config import StorageSettings
from genbot.history.store import PruneReport, claim_daily, prune
from genbot.storage.db import Database

log = logging.getLogger("genbot.history")
EVERY = timedelta(days=1)


class DailyPrune:
    """Prune once a day across every process on the database, if retention is on."""

    def __init__(self, db: Database, settings: StorageSettings, owner: str) -> None:
        self._db = db
        self._settings = settings
        self._owner = owner
        self._next: datetime | None = None  # unknown until the first tick asks the database
        self.last_report: PruneReport | None = None

    @property
    def enabled(self) -> bool:
        """Whether either limit is set."""
        return bool(self._settings.keep_days or self._settings.keep_rows)

    async def tick(self, now: datetime) -> PruneReport | None:
        """Prune if it is due and this process won the claim; the report, or None if nothing ran."""
        if not self.enabled or (self._next is not None and now < self._next):
            return None
        self._next = await claim_daily(self._db, self._owner, now, EVERY)
        if self._next is not None:
            return None  # pruned within the last day, here or by another process
        self._next = now + EVERY
        report = await prune(self._db, now=now, keep_days=self._settings.keep_days, keep_rows=self._settings.keep_rows)
        log.info(
            "pruned %d generation(s), %d job event(s), %d usage day(s)",
            report.generations, report.job_events, report.usage_days,
        )  # fmt: skip
        self.last_report = report
        return report
