"""The history's queries: storing an import in one transaction, pruning, and claiming the daily prune."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, insert, or_, select, update

from genbot.history.transfer import ImportedGeneration, ImportReport
from genbot.storage.db import Database
from genbot.storage.tables import Generation, GenerationStatus, Job, JobEvent, JobStatus, MaintenanceRun, UsageDaily

PRUNE_TASK = "prune"
_FINISHED_JOBS = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


@dataclass(frozen=True)
class PruneReport:
    """What a prune deleted (or, in a dry run, would delete)."""

    generations: int
    job_events: int
    usage_days: int
    dry_run: bool = False


async def store_import(db: Database, records: list[ImportedGeneration], user_id: str | None) -> ImportReport:
    """Store the records as ``user_id``'s, skipping those already stored for them; all or nothing."""
    if not records:
        return ImportReport(0, 0)
    owner = Generation.user_id.is_(None) if user_id is None else Generation.user_id == user_id
    earliest, latest = min(r.created_at for r in records), max(r.created_at for r in records)
    async with db.write() as session:
        existing = await session.execute(
            select(Generation.created_at, Generation.model, Generation.prompt, Generation.output).where(
                owner, Generation.created_at >= earliest, Generation.created_at <= latest
            )
        )
        seen = {_identity(*row) for row in existing}
        rows: list[dict[str, Any]] = []
        # Oldest first (an export lists newest first), so the new ids keep the rows' order.
        order = sorted(range(len(records)), key=lambda i: (records[i].created_at, records[i].source_id or 0, i))
        for record in (records[i] for i in order):
            identity = _identity(record.created_at, record.model, record.prompt, record.output)
            if identity in seen:
                continue
            seen.add(identity)
            fields = asdict(record)
            del fields["source_id"]
            rows.append(fields | {"stop": list(record.stop), "user_id": user_id})
        if rows:
            await session.execute(insert(Generation), rows)  # executemany, inside the one transaction
    return ImportReport(len(rows), len(records) - len(rows))


def _identity(created_at: datetime, model: str, prompt: str, output: str) -> bytes:
    """What makes two rows of one owner the same generation (a digest: outputs can be long)."""
    digest = hashlib.sha256()
    for part in (created_at.isoformat(), model, prompt, output):
        digest.update(part.encode("utf-8") + b"\x00")
    return digest.digest()


async def prune(db: Database, *, now: datetime, keep_days: int, keep_rows: int, dry_run: bool = False) -> PruneReport:
    """Delete finished generations older than ``keep_days`` or beyond the newest ``keep_rows``, old
    events of finished jobs and old daily usage, in one transaction (0 turns a limit off)."""
    doomed = []
    if keep_days:
        doomed.append(Generation.created_at < now - timedelta(days=keep_days))
    if keep_rows:
        newest = select(Generation.id).order_by(Generation.created_at.desc(), Generation.id.desc()).limit(keep_rows)
        doomed.append(Generation.id.not_in(newest.scalar_subquery()))
    async with db.write() as session:
        generations = 0
        if doomed:
            where = (Generation.status != GenerationStatus.RUNNING.value, or_(*doomed))
            generations = await _count_or_delete(session, Generation, where, dry_run)
        events = usage = 0
        if keep_days:
            cutoff = now - timedelta(days=keep_days)
            finished = select(Job.id).where(Job.status.in_(_FINISHED_JOBS))
            events_where = (JobEvent.at < cutoff, JobEvent.job_id.in_(finished))
            events = await _count_or_delete(session, JobEvent, events_where, dry_run)
            usage = await _count_or_delete(session, UsageDaily, (UsageDaily.day < f"{cutoff:%Y-%m-%d}",), dry_run)
    return PruneReport(generations, events, usage, dry_run)


async def _count_or_delete(session: Any, table: Any, where: tuple[Any, ...], dry_run: bool) -> int:
    if dry_run:
        return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)
    result = await session.execute(delete(table).where(*where), execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount


async def claim_daily(db: Database, owner: str, now: datetime, every: timedelta) -> datetime | None:
    """Claim today's prune for ``owner``: None if claimed (run it now), else when it next falls due.

    One conditional UPDATE of the row migration 0009 stored: of several processes asking at once,
    exactly one gets it.
    """
    due = MaintenanceRun.last_run_at.is_(None) | (MaintenanceRun.last_run_at <= now - every)
    async with db.write() as session:
        result = await session.execute(
            update(MaintenanceRun).where(MaintenanceRun.task == PRUNE_TASK, due).values(last_run_at=now, owner=owner),
            execution_options={"synchronize_session": False},
        )
        if cast(CursorResult[Any], result).rowcount == 1:
            return None
        last = await session.scalar(select(MaintenanceRun.last_run_at).where(MaintenanceRun.task == PRUNE_TASK))
    return (last or now) + every
