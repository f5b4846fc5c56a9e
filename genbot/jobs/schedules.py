"""The scheduler: queues a retrain job each time a cron schedule comes due, exactly once.

``Scheduler.tick(now)`` looks for enabled schedules whose ``next_run_at`` has passed. For each it
records the firing (``schedule_firings``, primary key (schedule_id, fire_time)) together with the
job, and moves ``next_run_at`` to the first cron time after ``now``; a second scheduler ticking
at the same moment finds the firing already recorded and queues nothing. After downtime a
schedule fires once for the missed time, not once per missed slot. Cron times are UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from croniter import croniter

from genbot.errors import GenbotError, InvalidRequest
from genbot.jobs.schedule_store import ScheduleRow, due_schedules, fire_schedule
from genbot.jobs.spec import RetrainRequest
from genbot.jobs.store import NewJob
from genbot.storage.db import Database
from genbot.storage.tables import utcnow

log = logging.getLogger("genbot.jobs.scheduler")
Resolver = Callable[..., Awaitable[NewJob]]


def next_fire_time(cron: str, after: datetime) -> datetime:
    """The first time after ``after`` that ``cron`` (five fields, UTC) matches."""
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidRequest(f"not a five-field cron expression: {cron!r} (e.g. '0 3 * * *' for 03:00 UTC daily)")
    found = croniter(cron, after).get_next(datetime)
    assert isinstance(found, datetime)
    return found


class Scheduler:
    """Turns due schedules into queued jobs; safe to run in several processes at once."""

    def __init__(self, db: Database, resolve: Resolver, *, poll_s: float = 2.0) -> None:
        self.db = db
        self.resolve = resolve  # RetrainRequest (+ schedule_id=) → NewJob, raising if it cannot run
        self.poll_s = poll_s

    async def tick(self, now: datetime | None = None) -> list[int]:
        """Fire every due schedule once; returns the ids of the jobs this call queued."""
        now = now or utcnow()
        queued = []
        for schedule in await due_schedules(self.db, now):
            job_id = await self._fire(schedule, now)
            if job_id is not None:
                queued.append(job_id)
        return queued

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``poll_s`` seconds until ``stop`` is set; errors are logged, not fatal."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again in %.0f s", self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)

    async def _fire(self, schedule: ScheduleRow, now: datetime) -> int | None:
        """Record one firing of ``schedule`` with its job; None if another scheduler had it or the job cannot run."""
        job = await self._job_for(schedule)
        firing = await fire_schedule(self.db, schedule, next_run_at=next_fire_time(schedule.cron, now), job=job)
        if firing.job_id is not None:
            log.info("schedule %d fired for %s: job %d queued", schedule.id, schedule.next_run_at, firing.job_id)
        return firing.job_id

    async def _job_for(self, schedule: ScheduleRow) -> NewJob | None:
        """The job the schedule asks for, or None (logged) if it cannot run now (corpus removed, …)."""
        try:
            request = RetrainRequest.from_args(schedule.model, schedule.corpus, schedule.job_args)
            return await self.resolve(request, schedule_id=schedule.id)
        except (GenbotError, TypeError) as e:
            log.warning("schedule %d (%s on %s) is due but cannot queue a job: %s",
                        schedule.id, schedule.model, schedule.corpus, e)  # fmt: skip
            return None
