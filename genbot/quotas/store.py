"""Quotas, daily usage, admissions and rate windows, generic over scope and subject (an id).

Usage writes are single upserts (``INSERT … ON CONFLICT DO UPDATE``), so two processes recording
usage for the same subject at once add up instead of losing one of the updates.

An admission (``reserve``) is one write transaction over all of a request's subjects, so it is
all or nothing: per subject, the cooldown is checked and stamped by one conditional upsert, and
a slot row is inserted by one conditional ``INSERT … SELECT`` that counts the subject's live
slots (concurrency) and reserves ``min(wanted, left today)`` characters. Live means owned by a
process whose heartbeat is fresh (``genbot.storage.processes``). SQLite runs write transactions
one at a time (``BEGIN IMMEDIATE``) across processes; on PostgreSQL a transaction-scoped advisory
lock per subject, taken in a fixed order, makes the count-and-insert atomic. ``release`` deletes
the slots and charges what was generated, in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Integer, String, case, delete, func, insert, literal, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from genbot.storage.db import Database
from genbot.storage.processes import STALE_AFTER_S, live_owners, stale_cutoff
from genbot.storage.tables import Cooldown, Quota, QuotaSlot, RateWindow, UsageDaily, UTCDateTime, utcnow

SCOPES = ("user", "guild", "key")  # of stored quotas; rate windows also count other scopes (e.g. "addr")
# First key of the two-key advisory lock: keeps our locks apart from anyone else's.
_PG_QUOTA_LOCK = 0x67_71_74  # "gqt"


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
    async with db.write() as session:
        await session.execute(_usage_upsert(db, scope, subject, day, chars=chars, requests=requests, at=at))


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


@dataclass(frozen=True, kw_only=True)
class SlotRequest:
    """One subject of an admission and its effective limits (None or 0: no limit of that kind)."""

    scope: str
    subject: str
    chars_per_day: int | None = None
    concurrent: int | None = None
    cooldown_s: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(scope, subject): the order locks are taken in."""
        return (self.scope, self.subject)


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """An admission that went through: its slot rows and the characters reserved for it."""

    slot_ids: tuple[int, ...]
    chars: int | None  # None: no daily limit applies


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why an admission was refused: the first subject and limit hit."""

    scope: str
    subject: str
    reason: Literal["cooldown", "concurrent", "chars"]
    limit: float
    wait_s: float = 0.0  # cooldown only: until the subject may ask again


class _Refused(Exception):
    """Raised inside the admission transaction so that all of it is rolled back."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


async def reserve(
    db: Database,
    requests: Sequence[SlotRequest],
    *,
    owner: str,
    day: str,
    now: datetime,
    want: int | None,
    stale_after_s: float = STALE_AFTER_S,
) -> Reservation | Refusal:
    """Admit one request for every subject at once, or for none (the Refusal says why)."""
    ordered = sorted(requests, key=lambda r: r.key)
    cutoff = stale_cutoff(now, stale_after_s)
    try:
        async with db.write() as session:
            if not db.is_sqlite:
                await _lock_subjects(session, ordered)
            slot_ids, granted = await _reserve_each(db, session, ordered, owner, day, now, want, cutoff)
            for r in ordered:
                await session.execute(_usage_upsert(db, r.scope, r.subject, day, chars=0, requests=1, at=now))
    except _Refused as refused:
        return refused.refusal
    return Reservation(slot_ids=slot_ids, chars=granted)


async def _lock_subjects(session: AsyncSession, ordered: Sequence[SlotRequest]) -> None:
    """PostgreSQL: hold each subject's advisory lock until commit, so counting and inserting is atomic."""
    for r in ordered:  # one fixed order: two admissions never wait on each other in a cycle
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
            {"ns": _PG_QUOTA_LOCK, "key": f"{r.scope}:{r.subject}"},
        )


async def _reserve_each(
    db: Database,
    session: AsyncSession,
    ordered: Sequence[SlotRequest],
    owner: str,
    day: str,
    now: datetime,
    want: int | None,
    cutoff: datetime,
) -> tuple[tuple[int, ...], int | None]:
    """Stamp cooldowns and take one slot per subject (raising _Refused); the slot ids and characters reserved."""
    slots: list[tuple[int, int]] = []
    granted = want
    for r in ordered:
        if r.cooldown_s and not await _stamp_cooldown(db, session, r, now):
            raise _Refused(await _cooling_down(session, r, now))
        slot = await _take_slot(session, r, owner, day, now, granted, cutoff)
        if slot is None:
            raise _Refused(await _why_full(session, r, owner, day, cutoff))
        slots.append(slot)
        if r.chars_per_day:
            granted = slot[1]  # later subjects reserve at most what the earlier ones allowed
    if not any(r.chars_per_day for r in ordered):
        return tuple(slot_id for slot_id, _ in slots), None
    assert granted is not None
    await _trim(session, [slot_id for slot_id, reserved in slots if reserved > granted], granted)
    return tuple(slot_id for slot_id, _ in slots), granted


async def release(
    db: Database, slot_ids: Sequence[int], subjects: Sequence[tuple[str, str]], day: str, chars: int
) -> None:
    """Free an admission's slots and charge the characters generated to each subject's ``day``."""
    async with db.write() as session:
        if slot_ids:
            await session.execute(
                delete(QuotaSlot).where(QuotaSlot.id.in_(slot_ids)).execution_options(synchronize_session=False)
            )
        if chars:
            for scope, subject in sorted(set(subjects)):  # the lock order of ``reserve``
                await session.execute(_usage_upsert(db, scope, subject, day, chars=chars))


async def open_slots(db: Database, scope: str, subject: str) -> int:
    """How many slot rows a subject holds, live or not (for tests and admin views)."""
    query = select(func.count()).select_from(QuotaSlot).where(QuotaSlot.scope == scope, QuotaSlot.subject == subject)
    async with db.read() as session:
        return int((await session.execute(query)).scalar_one())


async def _stamp_cooldown(db: Database, session: AsyncSession, r: SlotRequest, now: datetime) -> bool:
    """Stamp ``now`` as the subject's last request if its cooldown has passed, in one write."""
    assert r.cooldown_s
    table = Cooldown.__table__
    insert = _insert(db)(Cooldown).values(scope=r.scope, subject=r.subject, last_request_at=now)
    query = insert.on_conflict_do_update(
        index_elements=["scope", "subject"],
        set_={"last_request_at": insert.excluded.last_request_at},
        where=table.c.last_request_at <= now - timedelta(seconds=r.cooldown_s),
    ).returning(table.c.last_request_at)
    return (await session.execute(query)).first() is not None


async def _cooling_down(session: AsyncSession, r: SlotRequest, now: datetime) -> Refusal:
    """The refusal of a subject still in its cooldown."""
    assert r.cooldown_s
    last = (await session.execute(select(Cooldown.last_request_at).where(*_is(Cooldown, r)))).scalar_one()
    wait = r.cooldown_s - (now - last).total_seconds()
    return Refusal(scope=r.scope, subject=r.subject, reason="cooldown", limit=r.cooldown_s, wait_s=wait)


def _is(table: Any, r: SlotRequest) -> tuple[Any, Any]:
    """WHERE conditions selecting one subject's rows."""
    return (table.scope == r.scope, table.subject == r.subject)


def _counts(r: SlotRequest, owner: str, day: str, cutoff: datetime) -> tuple[Any, Any, Any]:
    """Scalar subqueries: the subject's live slots, its live reserved characters of ``day``, its characters used."""
    live = (QuotaSlot.owner == owner) | QuotaSlot.owner.in_(live_owners(cutoff))  # our own slots always count
    running = select(func.count()).select_from(QuotaSlot).where(*_is(QuotaSlot, r), live).scalar_subquery()
    reserved = (
        select(func.coalesce(func.sum(QuotaSlot.reserved), 0))
        .where(*_is(QuotaSlot, r), live, QuotaSlot.day == day)
        .scalar_subquery()
    )
    used = (
        select(func.coalesce(func.sum(UsageDaily.chars), 0)).where(*_is(UsageDaily, r), UsageDaily.day == day)
    ).scalar_subquery()
    return running, reserved, used


async def _take_slot(
    session: AsyncSession, r: SlotRequest, owner: str, day: str, now: datetime, want: int | None, cutoff: datetime
) -> tuple[int, int] | None:
    """Insert a slot if the subject has room, reserving min(want, left today); (id, reserved) or None."""
    running, reserved, used = _counts(r, owner, day, cutoff)
    conditions = []
    amount: Any = literal(0, Integer)
    if r.concurrent:
        conditions.append(running < r.concurrent)
    if r.chars_per_day:
        left = literal(r.chars_per_day, Integer) - used - reserved
        conditions.append(left > 0)
        amount = left if want is None else case((left < max(1, want), left), else_=literal(max(1, want), Integer))
    values = select(
        literal(r.scope, String),
        literal(r.subject, String),
        literal(owner, String),
        literal(day, String),
        amount,
        literal(now, UTCDateTime),
    ).where(*conditions)
    columns = ["scope", "subject", "owner", "day", "reserved", "created_at"]
    query = insert(QuotaSlot).from_select(columns, values).returning(QuotaSlot.id, QuotaSlot.reserved)
    row = (await session.execute(query)).first()
    return None if row is None else (int(row[0]), int(row[1]))


async def _why_full(session: AsyncSession, r: SlotRequest, owner: str, day: str, cutoff: datetime) -> Refusal:
    """The refusal of a subject that had no slot or no characters left."""
    running, _, _ = _counts(r, owner, day, cutoff)
    count = int((await session.execute(select(running))).scalar_one())
    if r.concurrent and count >= r.concurrent:
        return Refusal(scope=r.scope, subject=r.subject, reason="concurrent", limit=r.concurrent)
    assert r.chars_per_day
    return Refusal(scope=r.scope, subject=r.subject, reason="chars", limit=r.chars_per_day)


async def _trim(session: AsyncSession, slot_ids: list[int], chars: int) -> None:
    """Give back what earlier subjects reserved beyond what a later subject allowed."""
    if slot_ids:
        await session.execute(
            update(QuotaSlot)
            .where(QuotaSlot.id.in_(slot_ids))
            .values(reserved=chars)
            .execution_options(synchronize_session=False)
        )


def _usage_upsert(
    db: Database, scope: str, subject: str, day: str, *, chars: int = 0, requests: int = 0, at: datetime | None = None
) -> Any:
    """The upsert adding characters and/or requests to a subject's usage of ``day``."""
    table = UsageDaily.__table__
    values: dict[str, Any] = {"chars": table.c.chars + chars, "requests": table.c.requests + requests}
    if at is not None:
        values["last_request_at"] = at
    return (
        _insert(db)(UsageDaily)
        .values(scope=scope, subject=subject, day=day, chars=chars, requests=requests, last_request_at=at)
        .on_conflict_do_update(index_elements=["scope", "subject", "day"], set_=values)
    )


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
