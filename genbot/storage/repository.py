"""Reading and writing generation records.

Every function takes an open ``Database`` (see ``genbot.storage.db``) first and runs one short
transaction. Callers pass and get back plain frozen dataclasses (``NewGeneration``,
``GenerationRow``), never ORM objects, so nothing outside ``genbot.storage`` depends on
sessions, lazy loading or SQLAlchemy at all. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from genbot.errors import InvalidRequest, NotFound
from genbot.storage.db import Database
from genbot.storage.processes import STALE_AFTER_S, live_owners, stale_cutoff
from genbot.storage.search import RANK_WINDOW, Search, compile_search, ranked_window
from genbot.storage.tables import (
    Cooldown,
    Generation,
    GenerationStatus,
    Quota,
    QuotaSlot,
    RateWindow,
    UsageDaily,
    utcnow,
)

log = logging.getLogger("genbot.storage")
INTERRUPTED_ERROR = "interrupted: the process stopped before the generation finished"
MAX_LIST_LIMIT = 1000
FINAL_WRITE_ATTEMPTS = 6
FINAL_WRITE_FIRST_DELAY_S = 0.5  # doubled after each failed attempt: 0.5 + 1 + 2 + 4 + 8 s in all
_FINAL_STATUSES = frozenset(GenerationStatus) - {GenerationStatus.RUNNING}


@dataclass(frozen=True, kw_only=True)
class NewGeneration:
    """What is known when a generation starts."""

    model: str  # plugin / generator name
    prompt: str
    temperature: float
    max_length: int
    frontend: str  # repl / cli / discord / api
    model_version: str | int | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    user_id: str | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    api_key_id: str | None = None
    created_at: datetime | None = None  # None: now
    owner: str | None = None  # the serving process writing it (see genbot.storage.processes)
    parent_id: int | None = None  # the generation this one continues (or repeats with a new seed)


@dataclass(frozen=True, kw_only=True)
class GenerationRow:
    """One stored generation, as front ends see it."""

    id: int
    created_at: datetime
    finished_at: datetime | None
    model: str
    model_version: str | None
    prompt: str
    output: str
    temperature: float
    top_k: int | None
    top_p: float | None
    max_length: int
    seed: int | None
    stop: tuple[str, ...]
    chars: int
    time_to_first_char_ms: float | None
    duration_ms: float | None
    status: GenerationStatus
    error: str | None
    frontend: str
    user_id: str | None
    guild_id: str | None
    channel_id: str | None
    api_key_id: str | None
    parent_id: int | None = None


async def start_generation(db: Database, record: NewGeneration) -> int:
    """Store a generation that has just started (status running) and return its id."""
    row = _new_row(record)
    async with db.write() as session:
        session.add(row)
        await session.flush()
        return row.id


async def update_progress(db: Database, gen_id: int, output: str, chars: int) -> None:
    """Save the output so far of a running generation, so a crash does not lose all of it."""
    values = {"output": output, "chars": chars}
    await _update_one(db, gen_id, values, only_running=True)


async def update_progress_many(db: Database, outputs: dict[int, str]) -> None:
    """``update_progress`` of many running generations in one write transaction (rows no longer running are left)."""
    if not outputs:
        return
    running = Generation.status == GenerationStatus.RUNNING.value
    async with db.write() as session:
        for gen_id, output in outputs.items():
            query = update(Generation).where(Generation.id == gen_id, running)
            values = {"output": output, "chars": len(output)}
            await session.execute(query.values(**values), execution_options={"synchronize_session": False})


async def finish_generation(
    db: Database,
    gen_id: int,
    output: str,
    status: GenerationStatus | str,
    chars: int,
    ttfc_ms: float | None,
    duration_ms: float | None,
    error: str | None = None,
) -> None:
    """Record how a generation ended: completed, cancelled or failed."""
    values = {
        "output": output,
        "status": _final_status(status).value,
        "chars": chars,
        "time_to_first_char_ms": ttfc_ms,
        "duration_ms": duration_ms,
        "error": error,
        "finished_at": utcnow(),
    }
    await _update_one(db, gen_id, values, only_running=False)


async def finish_generation_reliably(
    db: Database,
    gen_id: int,
    output: str,
    status: GenerationStatus | str,
    chars: int,
    ttfc_ms: float | None,
    duration_ms: float | None,
    error: str | None = None,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> bool:
    """``finish_generation`` that never raises: database errors are logged and retried; False if all failed."""
    delay = FINAL_WRITE_FIRST_DELAY_S
    for attempt in range(1, FINAL_WRITE_ATTEMPTS + 1):
        try:
            await finish_generation(db, gen_id, output, status, chars, ttfc_ms, duration_ms, error)
            return True
        except Exception:
            if attempt == FINAL_WRITE_ATTEMPTS:
                # The row stays 'running' with its last saved progress; it is marked failed once
                # this process stops heartbeating.
                log.exception("could not record the end of generation %d; giving up", gen_id)
                return False
            log.warning("could not record the end of generation %d; retrying in %.1f s", gen_id, delay, exc_info=True)
            await sleep(delay)
            delay *= 2
    return False


async def get_generation(db: Database, gen_id: int) -> GenerationRow:
    """One generation by id; raises NotFound if there is none."""
    async with db.read() as session:
        row = await session.get(Generation, gen_id)
        if row is None:
            raise NotFound(f"no generation with id {gen_id}")
        return _to_record(row)


async def children_of(db: Database, parent_ids: Sequence[int]) -> list[GenerationRow]:
    """Generations whose parent is one of ``parent_ids``, oldest first."""
    if not parent_ids:
        return []
    query = select(Generation).where(Generation.parent_id.in_(list(parent_ids))).order_by(Generation.id)
    async with db.read() as session:
        return [_to_record(row) for row in await session.scalars(query)]


async def list_generations(
    db: Database,
    *,
    model: str | None = None,
    user_id: str | None = None,
    search: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    api_key_id: str | None = None,
    query: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[GenerationRow]:
    """Generations matching every given filter, newest first, or best match first with ``query``.

    ``search`` is a case-insensitive substring of the prompt or the output; ``query`` a
    full-text search (the language is in ``genbot.storage.search``), ranked by bm25 on SQLite
    and ts_rank on PostgreSQL among the newest ``RANK_WINDOW`` matches, older matches after them
    newest first; ``since`` is inclusive and ``until`` exclusive, both timezone-aware.
    """
    _check_page(limit, offset)
    conditions = _conditions(model, user_id, search, since, until)
    if api_key_id is not None:
        conditions.append(Generation.api_key_id == api_key_id)
    async with db.read() as session:
        if query is not None:
            found = compile_search(_dialect(db), query, user_id=user_id, api_key_id=api_key_id)
            return [_to_record(row) for row in await _search_page(session, found, conditions, limit, offset)]
        statement = select(Generation).where(*conditions).order_by(*_NEWEST_FIRST).limit(limit).offset(offset)
        return [_to_record(row) for row in await session.scalars(statement)]


_NEWEST_FIRST = (Generation.created_at.desc(), Generation.id.desc())


async def _search_page(
    session: AsyncSession, search: Search, conditions: list[ColumnElement[bool]], limit: int, offset: int
) -> list[Generation]:
    """One page of a search: the ranked window's rows best first, then older matches newest first."""
    if search.dialect != "sqlite":
        # A prepared statement turns generic after five runs and then plans without the search
        # words: a common word for one user goes from ~15 ms (user index) to ~300 ms (GIN scan).
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    rows: list[Generation] = []
    if offset < RANK_WINDOW:
        ranked = await ranked_window(session, search, *conditions)
        statement = select(Generation).join(ranked, ranked.c.id == Generation.id)
        statement = statement.order_by(ranked.c.rank, *_NEWEST_FIRST)
        rows += await session.scalars(statement.limit(min(limit, RANK_WINDOW - offset)).offset(offset))
    if offset + limit > RANK_WINDOW:
        # Past the window (only there when more rows match than it holds): the rest, newest first.
        start = max(offset, RANK_WINDOW)
        older = search.rows(Generation, *conditions).order_by(search.newest.desc())
        rows += await session.scalars(older.limit(offset + limit - start).offset(start))
    return rows


def _dialect(db: Database) -> str:
    return "sqlite" if db.is_sqlite else "postgresql"


async def forget_user(db: Database, user_id: str) -> int:
    """Delete everything stored about ``user_id``, in one transaction; returns how many generations.

    Besides the generations: the user's quota, daily usage, open quota slots, cooldown stamp and
    rate windows, under scope 'user' both as ``user_id`` and as a member of any server
    (``"<guild id>:<user id>"``, the Discord front end's per-server subject).
    """
    async with db.write() as session:
        result = await session.execute(
            delete(Generation).where(Generation.user_id == user_id), execution_options={"synchronize_session": False}
        )
        for table in (Quota, UsageDaily, QuotaSlot, Cooldown, RateWindow):
            await session.execute(
                delete(table).where(_subject_is_user(table, user_id)), execution_options={"synchronize_session": False}
            )
        return _rowcount(result)


def _subject_is_user(table: Any, user_id: str) -> ColumnElement[bool]:
    """Rows of scope 'user' whose subject is ``user_id`` or ``"<guild id>:<user_id>"``."""
    subject = table.subject
    return and_(table.scope == "user", or_(subject == user_id, subject.endswith(":" + user_id, autoescape=True)))


async def mark_interrupted(
    db: Database,
    *,
    started_before: datetime | None = None,
    now: datetime | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> int:
    """Turn generations left 'running' by a stopped process into 'failed'; returns the count.

    Their partial output stays; ``finished_at`` stays empty, as nobody saw them stop. A row with
    an owner is failed only when that process's heartbeat is older than ``stale_after_s`` (or it
    has none), so rows other live processes are writing are left alone. A row without an owner
    (written before owners existed) is failed if created before ``started_before`` (default: any).
    """
    cutoff = stale_cutoff(now or utcnow(), stale_after_s)
    ownerless: ColumnElement[bool] = Generation.owner.is_(None)
    if started_before is not None:
        ownerless = and_(ownerless, Generation.created_at < _aware(started_before, "started_before"))
    dead_owner = and_(Generation.owner.is_not(None), Generation.owner.not_in(live_owners(cutoff)))
    query = update(Generation).where(Generation.status == GenerationStatus.RUNNING.value, or_(ownerless, dead_owner))
    query = query.values(status=GenerationStatus.FAILED.value, error=INTERRUPTED_ERROR)
    async with db.write() as session:
        result = await session.execute(query, execution_options={"synchronize_session": False})
        return _rowcount(result)


def _new_row(record: NewGeneration) -> Generation:
    """The ORM row for a generation that is starting."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    fields["created_at"] = _aware(record.created_at, "created_at") if record.created_at else utcnow()
    fields["model_version"] = None if record.model_version is None else str(record.model_version)
    fields["stop"] = list(record.stop)
    return Generation(**fields, output="", chars=0, status=GenerationStatus.RUNNING.value)


def _to_record(row: Generation) -> GenerationRow:
    """A detached, immutable copy of an ORM row."""
    fields = {f.name: getattr(row, f.name) for f in dataclasses.fields(GenerationRow)}
    fields["stop"] = tuple(row.stop or ())
    fields["status"] = GenerationStatus(row.status)
    return GenerationRow(**fields)


async def _update_one(db: Database, gen_id: int, values: dict[str, Any], *, only_running: bool) -> None:
    """Update one generation by id; raises NotFound if there is none (or none running)."""
    query = update(Generation).where(Generation.id == gen_id)
    if only_running:
        query = query.where(Generation.status == GenerationStatus.RUNNING.value)
    async with db.write() as session:
        result = await session.execute(query.values(**values), execution_options={"synchronize_session": False})
        if _rowcount(result) == 0:
            raise NotFound(f"no {'running ' if only_running else ''}generation with id {gen_id}")


def _conditions(
    model: str | None,
    user_id: str | None,
    search: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ColumnElement[bool]]:
    """One WHERE condition per filter that was given."""
    conditions: list[ColumnElement[bool]] = []
    if model is not None:
        conditions.append(Generation.model == model)
    if user_id is not None:
        conditions.append(Generation.user_id == user_id)
    if search:
        # autoescape: "%" and "_" in the search text match themselves, not wildcards.
        in_prompt = Generation.prompt.icontains(search, autoescape=True)
        conditions.append(or_(in_prompt, Generation.output.icontains(search, autoescape=True)))
    if since is not None:
        conditions.append(Generation.created_at >= _aware(since, "since"))
    if until is not None:
        conditions.append(Generation.created_at < _aware(until, "until"))
    return conditions


def _final_status(status: GenerationStatus | str) -> GenerationStatus:
    """``status`` as a finished state; raises InvalidRequest for 'running' or unknown values."""
    # StrEnum members hash like their values, so plain strings are found in the set too.
    if status not in _FINAL_STATUSES:
        raise InvalidRequest(f"a generation cannot finish with status {status!r}")
    return GenerationStatus(status)


def _aware(value: datetime, name: str) -> datetime:
    """``value`` if it is timezone-aware; naive times are ambiguous, so they are refused."""
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} must be timezone-aware")
    return value


def _check_page(limit: int, offset: int) -> None:
    """Refuse page sizes and offsets that make no sense."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidRequest(f"offset must not be negative, got {offset}")


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE or DELETE (``Session.execute`` types it as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount
