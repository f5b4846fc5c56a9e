"""Cron schedules that queue retrain jobs, and their firings.

A firing is recorded in ``schedule_firings`` under the primary key (schedule_id, fire_time),
inserted with ``ON CONFLICT DO NOTHING`` in the same transaction as the job it creates. Two
schedulers that see the same schedule due at the same moment therefore create one job between
them: the second insert finds the row (on PostgreSQL it waits for the first transaction and then
sees the conflict; on SQLite the writes are serialised) and creates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from genbot.errors import NotFound
from genbot.jobs.store import NewJob, create_job
from genbot.storage.db import Database
from genbot.storage.tables import Schedule, ScheduleFiring, utcnow


@dataclass(frozen=True, kw_only=True)
class ScheduleRow:
    """One stored schedule."""

    id: int
    model: str
    corpus: str
    cron: str
    job_args: dict[str, Any]
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Firing:
    """What one firing did: whether this caller recorded it, and the job it queued (if any)."""

    recorded: bool  # False: another scheduler had already recorded this firing
    job_id: int | None


async def create_schedule(
    db: Database, *, model: str, corpus: str, cron: str, job_args: dict[str, Any], next_run_at: datetime
) -> ScheduleRow:
    """Store a new, enabled schedule."""
    row = Schedule(model=model, corpus=corpus, cron=cron, job_args=job_args, enabled=True, next_run_at=next_run_at)
    row.created_at = utcnow()
    async with db.write() as session:
        session.add(row)
        await session.flush()
        return _to_row(row)


async def list_schedules(db: Database) -> list[ScheduleRow]:
    """Every schedule, oldest first."""
    async with db.read() as session:
        return [_to_row(row) for row in (await session.scalars(select(Schedule).order_by(Schedule.id))).all()]


async def remove_schedule(db: Database, schedule_id: int) -> None:
    """Delete a schedule (its jobs stay); raises NotFound."""
    async with db.write() as session:
        result = await session.execute(delete(Schedule).where(Schedule.id == schedule_id).returning(Schedule.id))
        if result.scalar() is None:
            raise NotFound(f"no schedule with id {schedule_id}")


async def due_schedules(db: Database, now: datetime) -> list[ScheduleRow]:
    """Enabled schedules whose next run is at or before ``now``."""
    query = select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now).order_by(Schedule.id)
    async with db.read() as session:
        return [_to_row(row) for row in (await session.scalars(query)).all()]


async def fire_schedule(db: Database, schedule: ScheduleRow, *, next_run_at: datetime, job: NewJob | None) -> Firing:
    """Record the firing at ``schedule.next_run_at`` once, queue ``job`` with it, advance the schedule.

    ``job`` None records the firing without a job (it could not be built; the caller logs why).
    """
    fire_time = schedule.next_run_at
    async with db.write() as session:
        recorded = await _insert_firing(session, db, schedule.id, fire_time)
        job_id = None
        if recorded and job is not None:
            job_id = (await create_job(db, job, session=session)).id
            await session.execute(
                update(ScheduleFiring)
                .where(ScheduleFiring.schedule_id == schedule.id, ScheduleFiring.fire_time == fire_time)
                .values(job_id=job_id)
            )
        # Conditional: only the scheduler that saw this due time moves the schedule on.
        await session.execute(
            update(Schedule)
            .where(Schedule.id == schedule.id, Schedule.next_run_at == fire_time)
            .values(next_run_at=next_run_at, last_run_at=fire_time if recorded else Schedule.last_run_at)
        )
        return Firing(recorded, job_id)


async def list_firings(db: Database, schedule_id: int) -> list[tuple[datetime, int | None]]:
    """(fire_time, job_id) of every firing of a schedule, oldest first."""
    query = select(ScheduleFiring).where(ScheduleFiring.schedule_id == schedule_id).order_by(ScheduleFiring.fire_time)
    async with db.read() as session:
        return [(row.fire_time, row.job_id) for row in (await session.scalars(query)).all()]


async def _insert_firing(session: AsyncSession, db: Database, schedule_id: int, fire_time: datetime) -> bool:
    """Insert the firing row unless it exists; True if this call inserted it."""
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    values = {"schedule_id": schedule_id, "fire_time": fire_time, "job_id": None, "created_at": utcnow()}
    query = insert(ScheduleFiring).values(**values).on_conflict_do_nothing().returning(ScheduleFiring.schedule_id)
    return (await session.execute(query)).scalar() is not None


def _to_row(row: Schedule) -> ScheduleRow:
    """A detached, immutable copy of an ORM schedule."""
    return ScheduleRow(
        id=row.id,
        model=row.model,
        corpus=row.corpus,
        cron=row.cron,
        job_args=dict(row.job_args or {}),
        enabled=row.enabled,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        created_at=row.created_at,
    )
