"""The job queue: creating, claiming, leasing, logging, cancelling and finishing background jobs.

A worker claims a job with ``claim_next_job`` and then holds a lease on it that it renews with
``renew_lease`` (every call also stores new log events and progress, and reports whether a
cancel was asked for). A worker that stops renewing (killed, machine lost) loses the job when
the lease expires: the next claim takes it over and counts one more attempt; past
``max_attempts`` the job fails with the reason instead.

Claims never hand one job to two workers: on PostgreSQL the candidate row is locked with
``SELECT … FOR UPDATE SKIP LOCKED`` (concurrent claimers skip it and take the next one); on
SQLite every write transaction begins ``IMMEDIATE``, so claims run one at a time. Every update
a worker makes is conditional on still holding the lease (``lease_owner`` and status
``running``); a worker whose lease was taken over gets ``LeaseLost`` and must stop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from genbot.errors import InvalidRequest, LeaseLost, NotFound
from genbot.storage.db import Database
from genbot.storage.tables import Job, JobEvent, JobStatus, utcnow

MAX_LIST_LIMIT = 1000
# Step events (about one a second while training) beyond this many per job are pruned, oldest
# first; start/eval/done events, worker messages and stderr lines are always kept.
MAX_STEP_EVENTS = 2000
_FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
_CLAIM_SCAN = 50  # candidates one claim may settle (give up on, cancel) before it returns


@dataclass(frozen=True, kw_only=True)
class NewJob:
    """What is known when a job is queued."""

    kind: str  # "retrain"
    model: str
    args: dict[str, Any]  # resolved options (genbot.jobs.spec)
    max_attempts: int
    corpus: str | None = None
    parent_version: int | None = None
    schedule_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class JobRow:
    """One stored job, as the rest of genbot sees it."""

    id: int
    kind: str
    model: str
    args: dict[str, Any]
    status: JobStatus
    progress: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    result_version: int | None
    parent_version: int | None
    corpus: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    schedule_id: int | None

    @property
    def finished(self) -> bool:
        """Whether the job reached a final state."""
        return self.status in _FINAL


@dataclass(frozen=True)
class NewEvent:
    """A log line to store: a trainer event, a worker message or a stderr line."""

    source: str  # train / worker / stderr
    kind: str  # start / step / eval / done for the trainer, "message" otherwise
    data: dict[str, Any]


@dataclass(frozen=True)
class JobEventRow:
    """One stored log line of a job."""

    id: int
    job_id: int
    at: datetime
    attempt: int
    source: str
    kind: str
    data: dict[str, Any]


def message(text: str) -> NewEvent:
    """A worker message for a job's log."""
    return NewEvent("worker", "message", {"message": text})


# ----- queueing and reading ------------------------------------------------------------------


async def create_job(db: Database, new: NewJob, *, session: AsyncSession | None = None) -> JobRow:
    """Queue a job; pass ``session`` to do it inside a caller's write transaction."""
    if session is not None:
        return await _insert_job(session, new)
    async with db.write() as own:
        return await _insert_job(own, new)


async def _insert_job(session: AsyncSession, new: NewJob) -> JobRow:
    """Insert the row for a new queued job."""
    row = Job(**dataclasses.asdict(new), status=JobStatus.QUEUED.value, progress={}, metrics={})
    row.attempts, row.cancel_requested, row.created_at = 0, False, utcnow()
    session.add(row)
    await session.flush()
    await _add_events(session, row.id, 0, [message(f"queued: {new.kind} {new.model}")])
    return _to_row(row)


async def get_job(db: Database, job_id: int) -> JobRow:
    """One job by id; raises NotFound if there is none."""
    async with db.read() as session:
        return _to_row(await _get(session, job_id))


async def list_jobs(
    db: Database, *, status: str | None = None, model: str | None = None, limit: int = 50
) -> list[JobRow]:
    """Jobs, newest first, optionally only one status or model."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == _status(status).value)
    if model is not None:
        query = query.where(Job.model == model)
    async with db.read() as session:
        return [_to_row(row) for row in (await session.scalars(query)).all()]


async def list_events(
    db: Database, job_id: int, *, after_id: int = 0, kinds: Sequence[str] = (), limit: int = 10_000
) -> list[JobEventRow]:
    """A job's log lines with an id above ``after_id``, oldest first (``kinds``: only these)."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
    if kinds:
        query = query.where(JobEvent.kind.in_(kinds))
    async with db.read() as session:
        await _get(session, job_id)
        rows = (await session.scalars(query.order_by(JobEvent.id).limit(limit))).all()
        return [JobEventRow(r.id, r.job_id, r.at, r.attempt, r.source, r.kind, dict(r.data)) for r in rows]


async def cancel_requested(db: Database, job_id: int) -> bool:
    """Whether someone asked to cancel the job."""
    async with db.read() as session:
        flag = await session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return bool(flag)


# ----- claiming and leases -------------------------------------------------------------------


async def claim_next_job(db: Database, owner: str, lease_s: float, *, now: datetime | None = None) -> JobRow | None:
    """Take the oldest claimable job (queued, or running with an expired lease) and lease it to ``owner``.

    Jobs met on the way that were cancelled, or that have used up their attempts, are settled
    (cancelled / failed with the reason) and skipped. Returns None when nothing is claimable.
    """
    now = now or utcnow()
    async with db.write() as session:
        for _ in range(_CLAIM_SCAN):
            job = (await session.scalars(_claimable(db, now))).first()
            if job is None:
                return None
            if _settle_or_take(session, job, owner, lease_s, now):
                await session.flush()
                return _to_row(job)
            await session.flush()
    return None


def _claimable(db: Database, now: datetime) -> Select[Job]:
    """The oldest queued job or running job whose lease has expired, locked for this claim."""
    expired = and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
    query = select(Job).where(or_(Job.status == JobStatus.QUEUED.value, expired)).order_by(Job.id).limit(1)
    # SQLite has no row locks (FOR UPDATE is not rendered there); its IMMEDIATE transaction
    # already makes this claim the only writer.
    return query if db.is_sqlite else query.with_for_update(skip_locked=True)


def _settle_or_take(session: AsyncSession, job: Job, owner: str, lease_s: float, now: datetime) -> bool:
    """Lease ``job`` to ``owner`` (True), or settle it as cancelled / failed (False)."""
    events: list[NewEvent] = []
    if job.status == JobStatus.RUNNING.value:
        job.error = (
            f"the lease of worker {job.lease_owner} expired (it stopped renewing it) during attempt {job.attempts}"
        )
        events.append(message(job.error))
    if job.cancel_requested:
        _finish(job, JobStatus.CANCELLED, now)
        events.append(message("cancelled"))
    elif job.attempts >= job.max_attempts:
        _finish(job, JobStatus.FAILED, now)
        job.error = f"gave up after {job.attempts} attempt(s); last: {job.error or 'unknown reason'}"
        events.append(message(job.error))
    else:
        job.status, job.lease_owner = JobStatus.RUNNING.value, owner
        job.attempts += 1
        job.lease_expires_at = now + timedelta(seconds=lease_s)
        job.started_at = job.started_at or now
        events.append(message(f"claimed by {owner} (attempt {job.attempts} of {job.max_attempts})"))
    _queue_events(session, job.id, job.attempts, events)
    return job.status == JobStatus.RUNNING.value


async def renew_lease(
    db: Database,
    job_id: int,
    owner: str,
    lease_s: float,
    *,
    attempt: int,
    progress: dict[str, Any] | None = None,
    events: Iterable[NewEvent] = (),
) -> bool:
    """Extend the lease, store new events and progress; returns whether a cancel was asked for.

    Raises ``LeaseLost`` if ``owner`` no longer holds the job.
    """
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_s)}
    if progress is not None:
        values["progress"] = progress
    query = update(Job).where(*_held_by(job_id, owner)).values(**values).returning(Job.cancel_requested)
    async with db.write() as session:
        flag = (await session.execute(query, execution_options={"synchronize_session": False})).scalar()
        if flag is None:
            raise LeaseLost(f"job {job_id} is no longer leased to {owner}")
        await _add_events(session, job_id, attempt, list(events))
        return bool(flag)


async def finish_job(
    db: Database,
    job_id: int,
    owner: str,
    status: JobStatus,
    *,
    attempt: int,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
    result_version: int | None = None,
    events: Iterable[NewEvent] = (),
) -> None:
    """Record how the job ended (succeeded / failed / cancelled); raises ``LeaseLost`` if not held."""
    if status not in _FINAL:
        raise InvalidRequest(f"a job cannot finish with status {status!r}")
    values: dict[str, Any] = {"status": status.value, "finished_at": utcnow(), "lease_expires_at": None}
    values |= {"error": error, "result_version": result_version}
    if metrics is not None:
        values["metrics"] = metrics
    final = message(status.value + (f": {error}" if error else ""))
    await _update_held(db, job_id, owner, values, attempt, [*events, final])


async def retry_job(db: Database, job_id: int, owner: str, reason: str, *, attempt: int) -> None:
    """Put a job that failed in a way worth retrying back in the queue (the attempt stays counted)."""
    values = {"status": JobStatus.QUEUED.value, "lease_owner": None, "lease_expires_at": None, "error": reason}
    await _update_held(db, job_id, owner, values, attempt, [message(f"will retry: {reason}")])


async def release_job(db: Database, job_id: int, owner: str, reason: str, *, attempt: int) -> None:
    """Hand a job back untouched (the worker is shutting down): queued again, attempt not counted."""
    values = {
        "status": JobStatus.QUEUED.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": Job.attempts - 1,
    }
    await _update_held(db, job_id, owner, values, attempt, [message(f"released: {reason}")])


async def request_cancel(db: Database, job_id: int) -> JobRow:
    """Cancel a queued job now, or ask the worker running it to stop; refuses finished jobs."""
    async with db.write() as session:
        job = await _get(session, job_id, lock=not db.is_sqlite)
        if job.status == JobStatus.QUEUED.value:
            _finish(job, JobStatus.CANCELLED, utcnow())
            _queue_events(session, job_id, job.attempts, [message("cancelled before it ran")])
        elif job.status == JobStatus.RUNNING.value:
            job.cancel_requested = True
            _queue_events(session, job_id, job.attempts, [message("cancel requested")])
        else:
            raise InvalidRequest(f"job {job_id} has already {job.status}")
        await session.flush()
        return _to_row(job)


# ----- helpers -------------------------------------------------------------------------------


def _held_by(job_id: int, owner: str) -> tuple[Any, ...]:
    """WHERE conditions: this job, running, leased to ``owner``."""
    return (Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING.value)


async def _update_held(
    db: Database, job_id: int, owner: str, values: dict[str, Any], attempt: int, events: list[NewEvent]
) -> None:
    """Update a job this worker holds, with log events; raises ``LeaseLost`` if it does not."""
    query = update(Job).where(*_held_by(job_id, owner)).values(**values).returning(Job.id)
    async with db.write() as session:
        updated = (await session.execute(query, execution_options={"synchronize_session": False})).scalar()
        if updated is None:
            raise LeaseLost(f"job {job_id} is no longer leased to {owner}")
        await _add_events(session, job_id, attempt, events)


def _finish(job: Job, status: JobStatus, now: datetime) -> None:
    """Move an ORM job to a final state."""
    job.status, job.finished_at, job.lease_expires_at = status.value, now, None


def _queue_events(session: AsyncSession, job_id: int, attempt: int, events: Sequence[NewEvent]) -> None:
    """Add event rows to the session (flushed with the job)."""
    now = utcnow()
    for event in events:
        session.add(
            JobEvent(job_id=job_id, at=now, attempt=attempt, source=event.source, kind=event.kind, data=event.data)
        )


async def _add_events(session: AsyncSession, job_id: int, attempt: int, events: Sequence[NewEvent]) -> None:
    """Store events now, pruning old step events past ``MAX_STEP_EVENTS``."""
    if not events:
        return
    _queue_events(session, job_id, attempt, events)
    await session.flush()
    if any(event.kind == "step" for event in events):
        await _prune_steps(session, job_id)


async def _prune_steps(session: AsyncSession, job_id: int) -> None:
    """Delete the job's oldest step events beyond the newest ``MAX_STEP_EVENTS``."""
    steps = select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.kind == "step")
    cutoff = steps.order_by(JobEvent.id.desc()).offset(MAX_STEP_EVENTS).limit(1).scalar_subquery()
    await session.execute(
        delete(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "step", JobEvent.id <= cutoff),
        execution_options={"synchronize_session": False},
    )


async def _get(session: AsyncSession, job_id: int, *, lock: bool = False) -> Job:
    """The ORM job by id; raises NotFound."""
    job = await session.get(Job, job_id, with_for_update=lock or None)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return job


async def count_jobs(db: Database, **where: Any) -> int:
    """How many jobs have the given column values (tests and status displays)."""
    query = select(func.count()).select_from(Job).filter_by(**where)
    async with db.read() as session:
        return int(await session.scalar(query) or 0)


async def count_by_status(db: Database) -> dict[str, int]:
    """How many jobs are in each status, counted by the database (every status present, 0 if none)."""
    query = select(Job.status, func.count()).group_by(Job.status)
    async with db.read() as session:
        counted = {str(status): int(n) for status, n in (await session.execute(query)).all()}
    return {status.value: counted.get(status.value, 0) for status in JobStatus}


def _status(value: str) -> JobStatus:
    """A status name, or InvalidRequest listing the valid ones."""
    try:
        return JobStatus(value)
    except ValueError:
        raise InvalidRequest(f"unknown job status {value!r} (one of {', '.join(JobStatus)})") from None


def _to_row(job: Job) -> JobRow:
    """A detached, immutable copy of an ORM job."""
    fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(JobRow)}
    fields |= {
        "status": JobStatus(job.status),
        "progress": dict(job.progress or {}),
        "metrics": dict(job.metrics or {}),
    }
    fields["args"] = dict(job.args or {})
    return JobRow(**fields)
