"""Storage layer against real databases: a SQLite file, and PostgreSQL when one is configured.

`db_url` (tests/conftest.py) runs each test on a blank SQLite file and, when
GENBOT_TEST_DATABASE_URL is set, on a fresh PostgreSQL database too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

from genbot.errors import InvalidRequest, NotFound
from genbot.storage.db import Database, default_sqlite_url
from genbot.storage.migrate import alembic_config, current_revision, head_revision, upgrade_database
from genbot.storage.repository import (
    INTERRUPTED_ERROR,
    NewGeneration,
    finish_generation,
    forget_user,
    get_generation,
    list_generations,
    mark_interrupted,
    start_generation,
    update_progress,
)
from genbot.storage.search import include_name
from genbot.storage.tables import Base, GenerationStatus


def new(**overrides: Any) -> NewGeneration:
    """A plausible generation request; keyword arguments replace fields."""
    fields: dict[str, Any] = {
        "model": "shakespeare",
        "prompt": "ROMEO:",
        "temperature": 0.8,
        "max_length": 200,
        "frontend": "repl",
    }
    return NewGeneration(**(fields | overrides))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An open database migrated to head."""
    await upgrade_database(db_url)
    async with Database.open(db_url) as database:
        yield database


def _schema_diffs(conn: Connection) -> list[Any]:
    """What autogenerate would change to make the database match the ORM models."""
    opts = {"compare_type": True, "compare_server_default": True, "include_name": include_name}
    context = MigrationContext.configure(conn, opts=opts)
    return list(compare_metadata(context, Base.metadata))


# --- migrations ---------------------------------------------------------------------------


async def test_blank_database_upgrades_to_head_and_matches_models(db_url: str) -> None:
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        assert await current_revision(db.engine) == head_revision()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_schema_diffs) == []
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert {"generations", "alembic_version"} <= set(tables)


async def test_upgrade_is_idempotent_and_safe_to_run_concurrently(db_url: str) -> None:
    # Several processes starting together all migrate; none may fail or apply DDL twice.
    await asyncio.gather(*(upgrade_database(db_url) for _ in range(4)))
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        assert await current_revision(db.engine) == head_revision()


async def test_a_locked_sqlite_file_at_first_start_is_migrated_on_a_later_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a process can be told while another one switches a brand-new file to WAL.
    from genbot.storage import migrate

    real, calls = migrate._upgrade_once, []

    async def locked_once(engine: Any, revision: str) -> None:
        calls.append(revision)
        if len(calls) == 1:
            raise OperationalError("PRAGMA journal_mode = WAL", {}, sqlite3.OperationalError("database is locked"))
        await real(engine, revision)

    monkeypatch.setattr(migrate, "_upgrade_once", locked_once)
    url = default_sqlite_url(tmp_path / "fresh")
    await upgrade_database(url)
    assert len(calls) == 2
    async with Database.open(url, upgrade=False) as db:
        assert await current_revision(db.engine) == head_revision()


async def test_alembic_command_line_path_upgrades(db_url: str) -> None:
    # What `alembic -x url=... upgrade head` runs: env.py builds its own engine and event loop.
    await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
    async with Database.open(db_url, upgrade=False) as db:
        assert await current_revision(db.engine) == head_revision()


async def test_0007_keeps_running_rows_ownerless_and_downgrades(db_url: str) -> None:
    await upgrade_database(db_url, "0006")
    async with Database.open(db_url, upgrade=False) as db, db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO generations (created_at, model, prompt, output, temperature, max_length, stop, chars,"
                " status, frontend) VALUES (:at, 'm', 'p', 'half', 0.8, 10, '[]', 4, 'running', 'api')"
            ),
            {"at": datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        [row] = await list_generations(db)
        assert (row.status, row.output) == (GenerationStatus.RUNNING, "half")
        assert await mark_interrupted(db, started_before=datetime.now(UTC)) == 1  # ownerless and older: failed
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0006")
    async with Database.open(db_url, upgrade=False) as db:
        assert await current_revision(db.engine) == "0006"
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert not {"processes", "quota_slots", "cooldowns"} & set(tables)


async def test_open_migrates_sqlite_by_default(tmp_path: Path) -> None:
    async with Database.open(default_sqlite_url(tmp_path / "fresh")) as db:
        assert await current_revision(db.engine) == head_revision()
        assert await list_generations(db) == []


# --- SQLite connection settings -----------------------------------------------------------


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    async with Database.open(default_sqlite_url(tmp_path / "data")) as db, db.read() as session:
        pragmas = {name: (await session.execute(text(f"PRAGMA {name}"))).scalar() for name in _PRAGMAS}
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": 1}


_PRAGMAS = ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")


async def test_sqlite_write_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    url = default_sqlite_url(tmp_path / "data")
    path = make_url(url).database
    assert path is not None
    async with Database.open(url) as db:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            async with db.read() as session:
                await session.execute(text("SELECT count(*) FROM generations"))
                other.execute("BEGIN IMMEDIATE")  # a reader does not hold the writer back
                other.execute("ROLLBACK")
            async with db.write() as session:
                await session.execute(text("SELECT count(*) FROM generations"))
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


# --- records ------------------------------------------------------------------------------


async def test_generation_round_trip(db: Database) -> None:
    started = datetime.now(UTC)
    gen_id = await start_generation(
        db,
        new(
            model_version=3,
            prompt="Ünïcode ✓ prompt",
            top_k=40,
            top_p=0.9,
            seed=2**40,
            stop=["\n\n", "END"],
            frontend="discord",
            user_id="1234567890123456789",
            guild_id="42",
            channel_id="7",
            api_key_id="k1",
        ),
    )
    running = await get_generation(db, gen_id)
    assert running.status is GenerationStatus.RUNNING
    assert running.output == "" and running.finished_at is None

    await finish_generation(db, gen_id, "thou art ✓", "completed", 10, 12.5, 250.0)
    row = await get_generation(db, gen_id)

    assert (row.model, row.model_version, row.prompt, row.output) == (
        "shakespeare",
        "3",
        "Ünïcode ✓ prompt",
        "thou art ✓",
    )
    assert (row.temperature, row.top_k, row.top_p, row.max_length, row.seed) == (0.8, 40, 0.9, 200, 2**40)
    assert row.stop == ("\n\n", "END")
    assert (row.chars, row.time_to_first_char_ms, row.duration_ms) == (10, 12.5, 250.0)
    assert (row.status, row.error, row.frontend) == (GenerationStatus.COMPLETED, None, "discord")
    assert (row.user_id, row.guild_id, row.channel_id, row.api_key_id) == ("1234567890123456789", "42", "7", "k1")
    assert row.created_at.tzinfo is not None and row.finished_at is not None and row.finished_at.tzinfo is not None
    assert started - timedelta(seconds=5) < row.created_at <= row.finished_at < started + timedelta(seconds=60)


async def test_failed_generation_keeps_its_error(db: Database) -> None:
    gen_id = await start_generation(db, new())
    await finish_generation(db, gen_id, "par", GenerationStatus.FAILED, 3, 5.0, 9.0, error="CUDA out of memory")
    row = await get_generation(db, gen_id)
    assert (row.status, row.error, row.output) == (GenerationStatus.FAILED, "CUDA out of memory", "par")


async def test_missing_generations_raise_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await get_generation(db, 999)
    with pytest.raises(NotFound):
        await finish_generation(db, 999, "", "completed", 0, None, None)


async def test_bad_arguments_raise_invalid_request(db: Database) -> None:
    gen_id = await start_generation(db, new())
    with pytest.raises(InvalidRequest):
        await finish_generation(db, gen_id, "", "running", 0, None, None)
    with pytest.raises(InvalidRequest):
        await finish_generation(db, gen_id, "", "exploded", 0, None, None)
    with pytest.raises(InvalidRequest):
        await list_generations(db, since=datetime(2024, 1, 1))  # naive: which timezone?
    with pytest.raises(InvalidRequest):
        await list_generations(db, limit=0)
    with pytest.raises(InvalidRequest):
        await start_generation(db, new(created_at=datetime(2024, 1, 1)))


# --- queries ------------------------------------------------------------------------------


async def _seed_history(db: Database) -> dict[str, int]:
    """Four generations a day apart (oldest first), by two users on two models."""
    base = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    specs = {
        "a": new(model="shakespeare", user_id="u1", prompt="To be", created_at=base),
        "b": new(model="linux", user_id="u2", prompt="int main", created_at=base + timedelta(days=1)),
        "c": new(model="shakespeare", user_id="u2", prompt="ROMEO", created_at=base + timedelta(days=2)),
        "d": new(model="latex", user_id="u1", prompt="\\begin", created_at=base + timedelta(days=3)),
    }
    outputs = {"a": "or not to be", "b": "{ return 100%_done; }", "c": "O JULIET", "d": "{document}"}
    ids = {}
    for key, record in specs.items():
        ids[key] = await start_generation(db, record)
        await finish_generation(db, ids[key], outputs[key], "completed", len(outputs[key]), 1.0, 2.0)
    return ids


async def test_list_is_newest_first_and_pages(db: Database) -> None:
    ids = await _seed_history(db)
    assert [r.id for r in await list_generations(db)] == [ids["d"], ids["c"], ids["b"], ids["a"]]
    assert [r.id for r in await list_generations(db, limit=2, offset=1)] == [ids["c"], ids["b"]]


async def test_list_filters_by_model_user_and_text(db: Database) -> None:
    ids = await _seed_history(db)

    async def found(**filters: Any) -> set[int]:
        return {row.id for row in await list_generations(db, **filters)}

    assert await found(model="shakespeare") == {ids["a"], ids["c"]}
    assert await found(user_id="u1") == {ids["a"], ids["d"]}
    assert await found(model="shakespeare", user_id="u2") == {ids["c"]}
    assert await found(search="juliet") == {ids["c"]}  # output, case-insensitive
    assert await found(search="INT MAIN") == {ids["b"]}  # prompt
    assert await found(search="100%_") == {ids["b"]}  # % and _ are literal
    assert await found(search="%") == {ids["b"]}
    assert await found(search="nowhere") == set()


async def test_list_filters_by_date_range(db: Database) -> None:
    ids = await _seed_history(db)
    day2 = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)
    assert {r.id for r in await list_generations(db, since=day2)} == {ids["b"], ids["c"], ids["d"]}
    assert {r.id for r in await list_generations(db, until=day2)} == {ids["a"]}
    window = await list_generations(db, since=day2, until=day2 + timedelta(days=2))
    assert {r.id for r in window} == {ids["b"], ids["c"]}
    # The same instant written in another timezone selects the same rows.
    paris = day2.astimezone(ZoneInfo("Europe/Paris"))
    assert {r.id for r in await list_generations(db, since=paris)} == {ids["b"], ids["c"], ids["d"]}


async def test_forget_user_deletes_only_that_users_rows(db: Database) -> None:
    ids = await _seed_history(db)
    assert await forget_user(db, "u2") == 2
    assert {r.id for r in await list_generations(db)} == {ids["a"], ids["d"]}
    assert await list_generations(db, user_id="u2") == []
    assert await forget_user(db, "u2") == 0
    with pytest.raises(NotFound):
        await get_generation(db, ids["b"])


async def test_forgotten_ids_are_never_reused(db: Database) -> None:
    await start_generation(db, new(user_id="gone"))
    last = await start_generation(db, new(user_id="gone"))
    await forget_user(db, "gone")
    assert await start_generation(db, new(user_id="someone else")) > last


# --- crash recovery -----------------------------------------------------------------------


async def test_mark_interrupted_fails_running_rows_and_keeps_partial_output(db: Database) -> None:
    done = await start_generation(db, new())
    await finish_generation(db, done, "whole", "completed", 5, 1.0, 2.0)
    partial = await start_generation(db, new())
    await update_progress(db, partial, "half a li", 9)
    silent = await start_generation(db, new())

    assert await mark_interrupted(db) == 2

    row = await get_generation(db, partial)
    assert (row.status, row.error, row.output, row.chars) == (
        GenerationStatus.FAILED,
        INTERRUPTED_ERROR,
        "half a li",
        9,
    )
    assert (await get_generation(db, silent)).status is GenerationStatus.FAILED
    assert (await get_generation(db, done)).status is GenerationStatus.COMPLETED
    assert await mark_interrupted(db) == 0
    with pytest.raises(NotFound):
        await update_progress(db, partial, "too late", 8)  # no longer running


async def test_mark_interrupted_can_spare_other_live_processes(db: Database) -> None:
    now = datetime.now(UTC)
    old = await start_generation(db, new(created_at=now - timedelta(minutes=5)))
    live = await start_generation(db, new(created_at=now + timedelta(seconds=1)))
    assert await mark_interrupted(db, started_before=now) == 1
    assert (await get_generation(db, old)).status is GenerationStatus.FAILED
    assert (await get_generation(db, live)).status is GenerationStatus.RUNNING


# --- concurrency --------------------------------------------------------------------------


async def _one_generation(db: Database, n: int) -> int:
    """Start a generation, yield to the other tasks, then finish it."""
    gen_id = await start_generation(db, new(user_id=f"user{n % 7}", prompt=f"prompt {n}"))
    await asyncio.sleep(0)
    await finish_generation(db, gen_id, f"output {n}", "completed", 8, 1.0, 2.0)
    return gen_id


async def test_200_concurrent_generations_are_all_written(db: Database) -> None:
    ids = await asyncio.gather(*(_one_generation(db, n) for n in range(200)))
    assert len(set(ids)) == 200
    rows = await list_generations(db, limit=1000)
    assert len(rows) == 200
    assert all(r.status is GenerationStatus.COMPLETED for r in rows)
    assert {r.output for r in rows} == {f"output {n}" for n in range(200)}


async def test_two_engines_on_one_sqlite_file_never_see_database_is_locked(tmp_path: Path) -> None:
    # Two engines share no asyncio lock, like two processes: only SQLite's own locking
    # (BEGIN IMMEDIATE + busy_timeout) keeps their writes apart.
    url = default_sqlite_url(tmp_path / "data")
    async with Database.open(url) as first, Database.open(url) as second:
        await asyncio.gather(*(_one_generation(first if n % 2 else second, n) for n in range(200)))
        rows = await list_generations(first, limit=1000)
    assert len(rows) == 200
    assert {r.status for r in rows} == {GenerationStatus.COMPLETED}


async def test_newest_revision_is_read_without_alembic(db_url: str) -> None:
    from genbot.storage.db import create_engine
    from genbot.storage.migrate import head_revision
    from genbot.storage.schema import is_current, newest_revision

    assert newest_revision() == head_revision()
    engine = create_engine(db_url)
    try:
        assert not await is_current(engine)
        await upgrade_database(db_url)
        assert await is_current(engine)
    finally:
        await engine.dispose()


async def test_a_request_that_finds_no_free_connection_is_refused_as_busy(db_url: str) -> None:
    # One connection, held by a long transaction: the next one waits the pool's timeout, then is
    # refused as Busy (503 with Retry-After in the API), not with an internal error.
    from sqlalchemy.ext.asyncio import create_async_engine

    from genbot.errors import Busy

    await upgrade_database(db_url)
    engine = create_async_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    db = Database(engine)
    try:
        held = asyncio.Event()

        async def hold() -> None:
            async with db.read() as session:
                await session.execute(text("SELECT 1"))
                held.set()
                await asyncio.sleep(1.0)

        holder = asyncio.create_task(hold())
        await held.wait()
        with pytest.raises(Busy, match="no free connection") as refused:
            async with db.read() as session:
                await session.execute(text("SELECT 1"))
        await holder
        async with db.read() as session:  # the connection is back: served again
            assert (await session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()
    assert refused.value.retry_after == 1.0
