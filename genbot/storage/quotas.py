"""Quotas and daily usage, generic over scope ('user', 'guild', 'key') and subject (an id).

Both writes are single upserts (``INSERT … ON CONFLICT DO UPDATE``), so two processes recording
usage for the same subject at once add up instead of losing one of the updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from genbot.storage.db import Database
from genbot.storage.tables import Quota, RateWindow, UsageDaily, utcnow

SCOPES = ("user", "guild", "key")


@dataclass(frozen=True, kw_only=True)
class QuotaRow:
    """Stored limits of one subject; None means no limit of that kind."""

    scope: str
    subject: str
    chars_per_day: int | None
    concurrent: int | None
    cooldown_s: float | None
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    """What one subject used on one day."""

    scope: str
    subject: str
    day: str
    chars: int = 0
    requests: int = 0
    last_request_at: datetime | None = None


def _insert(db: Database) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update``."""
    return sqlite.insert if db.is_sqlite else postgresql.insert


async def set_quota(
    db: Database,
    scope: str,
    subject: str,
    *,
    chars_per_day: int | None,
    concurrent: int | None,
    cooldown_s: float | None,
) -> QuotaRow:
    """Create or replace the quota of one subject."""
    now = utcnow()
    limits = {"chars_per_day": chars_per_day, "concurrent": concurrent, "cooldown_s": cooldown_s}
    query = (
        _insert(db)(Quota)
        .values(scope=scope, subject=subject, created_at=now, updated_at=now, **limits)
        .on_conflict_do_update(index_elements=["scope", "subject"], set_={**limits, "updated_at": now})
    )
    async with db.write() as session:
        await session.execute(query)
    row = await get_quota(db, scope, subject)
    assert row is not None
    return row


async def get_quota(db: Database, scope: str, subject: str) -> QuotaRow | None:
    """The stored quota of one subject, or None if it has none."""
    query = select(Quota).where(Quota.scope == scope, Quota.subject == subject)
    async with db.read() as session:
        row = (await session.scalars(query)).first()
    if row is None:
        return None
    return QuotaRow(
        scope=row.scope,
        subject=row.subject,
        chars_per_day=row.chars_per_day,
        concurrent=row.concurrent,
        cooldown_s=row.cooldown_s,
        updated_at=row.updated_at,
    )


async def add_usage(
    db: Database, scope: str, subject: str, day: str, *, chars: int = 0, requests: int = 0, at: datetime | None = None
) -> None:
    """Add characters and/or requests to a subject's usage of ``day``; ``at`` marks a request's time."""
    table = UsageDaily.__table__
    values: dict[str, Any] = {"chars": table.c.chars + chars, "requests": table.c.requests + requests}
    if at is not None:
        values["last_request_at"] = at
    query = (
        _insert(db)(UsageDaily)
        .values(scope=scope, subject=subject, day=day, chars=chars, requests=requests, last_request_at=at)
        .on_conflict_do_update(index_elements=["scope", "subject", "day"], set_=values)
    )
    async with db.write() as session:
        await session.execute(query)


async def usage_today(db: Database, scope: str, subject: str, day: str) -> UsageRow:
    """A subject's usage of ``day`` (zeros if nothing was recorded)."""
    query = select(UsageDaily).where(UsageDaily.scope == scope, UsageDaily.subject == subject, UsageDaily.day == day)
    async with db.read() as session:
        row = (await session.scalars(query)).first()
    if row is None:
        return UsageRow(scope=scope, subject=subject, day=day)
    return UsageRow(
        scope=scope,
        subject=subject,
        day=day,
        chars=row.chars,
        requests=row.requests,
        last_request_at=row.last_request_at,
    )


async def last_request_at(db: Database, scope: str, subject: str) -> datetime | None:
    """When the subject last made a request, on any day."""
    query = select(func.max(UsageDaily.last_request_at)).where(UsageDaily.scope == scope, UsageDaily.subject == subject)
    async with db.read() as session:
        value = (await session.execute(query)).scalar()
    if isinstance(value, str):  # SQLite's max() over the stored strings loses the column type
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


async def count_in_window(db: Database, scope: str, subject: str, window: int) -> int:
    """Count one request in ``window`` and return the window's total, in one atomic write."""
    table = RateWindow.__table__
    query = (
        _insert(db)(RateWindow)
        .values(scope=scope, subject=subject, window=window, requests=1)
        .on_conflict_do_update(index_elements=["scope", "subject", "window"], set_={"requests": table.c.requests + 1})
        .returning(table.c.requests)
    )
    async with db.write() as session:
        count = int((await session.execute(query)).scalar_one())
        if count == 1:  # a new window opened: the subject's older ones are no longer needed
            await session.execute(
                delete(RateWindow).where(
                    RateWindow.scope == scope, RateWindow.subject == subject, RateWindow.window < window
                )
            )
    return count
