"""Export, import and retention of the stored history, on real databases and through the real CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from genbot.config import Settings, StorageSettings
from genbot.errors import InvalidRequest
from genbot.history.control import Archive
from genbot.history.formats import render
from genbot.history.retention import DailyPrune
from genbot.history.transfer import MAX_IMPORT_BYTES
from genbot.storage.db import Database, default_sqlite_url
from genbot.storage.leases import ProcessLease
from genbot.storage.migrate import upgrade_database
from genbot.storage.repository import NewGeneration, finish_generation, list_generations, start_generation
from genbot.storage.tables import Job, JobEvent, UsageDaily
from tests.helpers import genbot_here, wait_until

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)  # the injected clock: the tests never read today's date


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An open database migrated to head."""
    await upgrade_database(db_url)
    async with Database.open(db_url) as database:
        yield database


def archive(db: Database, **storage: int) -> Archive:
    return Archive(db, Settings(storage=StorageSettings(**storage)))


async def store(
    db: Database, prompt: str, output: str, *, at: datetime = NOW, finished: bool = True, **fields: Any
) -> int:
    record = NewGeneration(
        model="shakespeare", prompt=prompt, temperature=0.8, max_length=200, frontend="cli", created_at=at, **fields
    )
    gen_id = await start_generation(db, record)
    if finished:
        await finish_generation(db, gen_id, output, "completed", len(output), 1.5, 20.0)
    return gen_id


async def export_lines(db: Database, **filters: Any) -> bytes:
    rows = [row async for row in archive(db).rows(**filters)]
    return "".join(render(rows, "jsonl")).encode()


async def count(db: Database) -> int:
    return len(await list_generations(db, limit=1000))


# ----- export formats --------------------------------------------------------------------------


async def test_every_format_holds_every_row(db: Database) -> None:
    await store(db, "ROMEO:", "O, she doth teach\nthe torches ```to burn```", user_id="alice", seed=7)
    await store(db, "JULIET:", 'say "ay", and I will take thy word', user_id="alice")
    rows = [row async for row in archive(db).rows()]
    as_json = json.loads("".join(render(rows, "json")))
    as_lines = [json.loads(line) for line in "".join(render(rows, "jsonl")).splitlines()]
    as_csv = list(csv.DictReader(io.StringIO("".join(render(rows, "csv")))))
    markdown = "".join(render(rows, "markdown"))
    assert as_json == as_lines and [r["prompt"] for r in as_json] == ["JULIET:", "ROMEO:"]
    assert as_json[1]["output"] == "O, she doth teach\nthe torches ```to burn```" and as_json[1]["seed"] == 7
    assert [r["output"] for r in as_csv] == [r["output"] for r in as_json]
    assert json.loads(as_csv[0]["stop"]) == []
    assert "````text\nO, she doth teach\nthe torches ```to burn```\n````" in markdown  # a fence the text cannot close
    assert markdown.count("\n## #") == 2


async def test_rows_pages_through_more_than_one_page(db: Database) -> None:
    async with db.write() as session:
        from genbot.storage.tables import Generation

        session.add_all(
            Generation(model="m", prompt=f"p{i}", temperature=0.8, max_length=1, frontend="cli", status="completed")
            for i in range(1203)
        )
    assert len([row async for row in archive(db).rows()]) == 1203
    assert len([row async for row in archive(db).rows(limit=1001)]) == 1001


# ----- import -----------------------------------------------------------------------------------


async def test_import_belongs_to_the_importer_and_never_trusts_owner_fields(db: Database) -> None:
    line = {
        "id": 1, "owner": "someone:1:2", "user_id": "mallory", "api_key_id": "1", "guild_id": "9",
        "channel_id": "9", "created_at": NOW.isoformat(), "model": "shakespeare", "prompt": "ROMEO:", "output": "love",
    }  # fmt: skip
    victim = await store(db, "victim", "secret", user_id="mallory")
    report = await archive(db).import_export(json.dumps(line).encode(), user_id="bob")
    rows = await list_generations(db, limit=10)
    imported = next(r for r in rows if r.id != victim)
    assert report.imported == 1 and imported.id != 1
    assert (imported.user_id, imported.api_key_id, imported.guild_id, imported.channel_id) == ("bob", None, None, None)
    assert [r.id for r in await list_generations(db, user_id="mallory")] == [victim]


async def test_reimport_is_idempotent(db: Database) -> None:
    await store(db, "ROMEO:", "love", user_id="alice")
    await store(db, "JULIET:", "sorrow", user_id="alice")
    data = await export_lines(db)
    first = await archive(db).import_export(data, user_id="bob")
    again = await archive(db).import_export(data + data, user_id="bob")  # the same rows twice in one file, too
    assert (first.imported, first.duplicates) == (2, 0)
    assert (again.imported, again.duplicates) == (0, 4)
    assert len(await list_generations(db, user_id="bob")) == 2


CORRUPT = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m"}\n[1, 2]\n', "line 3"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m"}\n{"model": "m"\n', "line 3"),
    (b'{"model": "m", "created_at": "yesterday"}', "created_at"),
    (b'{"model": "m", "created_at": "2026-01-01T00:00:00"}', "UTC offset"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00"}', "model"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m", "seed": 1e400}', "seed"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m", "prompt": "\\u0000"}', "prompt"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m", "status": "deleted"}', "status"),
    (b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m", "stop": "x"}', "stop"),
    (b"[" * 100_000, "line 2"),
]


@pytest.mark.parametrize(("data", "named"), CORRUPT)
async def test_a_corrupt_file_is_refused_and_writes_nothing(db: Database, data: bytes, named: str) -> None:
    good = b'{"created_at": "2026-01-01T00:00:00+00:00", "model": "m", "prompt": "fine"}\n'
    with pytest.raises(InvalidRequest, match=named):
        await archive(db).import_export(good + data, user_id="bob")
    assert await count(db) == 0


async def test_a_running_row_is_imported_as_interrupted(db: Database) -> None:
    line = {"created_at": NOW.isoformat(), "model": "m", "prompt": "p", "output": "half", "status": "running"}
    await archive(db).import_export(json.dumps(line).encode(), user_id=None)
    [row] = await list_generations(db)
    assert (row.status, row.output) == ("failed", "half") and "interrupted" in (row.error or "")


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_cli_round_trip_from_sqlite_to_another_database(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = default_sqlite_url(tmp_path / "data")  # what the CLI uses with GENBOT_DATA_DIR and no URL
    async with Database.open(source) as src:
        ids = [await store(src, f"ROMEO {i}:", f"love number {i}", user_id="alice") for i in range(3)]
        exported = await list_generations(src, limit=10)
    dump = tmp_path / "history.jsonl"
    listed = await asyncio.to_thread(genbot_here, "history", "--format", "jsonl", "--output", str(dump))
    found = await asyncio.to_thread(genbot_here, "history", "-q", "love AND 1")
    as_json = await asyncio.to_thread(genbot_here, "history", "--format", "json", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(as_json.stdout)] == [ids[2], ids[1]]
    assert found.returncode == 0 and f"#{ids[1]} " in found.stdout and f"#{ids[0]} " not in found.stdout

    await upgrade_database(db_url)
    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    first = await asyncio.to_thread(genbot_here, "history", "import", str(dump), "--user", "alice")
    again = await asyncio.to_thread(genbot_here, "history", "import", str(dump), "--user", "alice")
    assert first.returncode == 0 and "imported 3 generation(s); skipped 0" in first.stdout, first.stderr
    assert "imported 0 generation(s); skipped 3" in again.stdout
    async with Database.open(db_url) as target:
        copied = await list_generations(target, limit=10)

    def comparable(row: Any) -> tuple[Any, ...]:
        return (row.created_at, row.finished_at, row.model, row.prompt, row.output, row.seed, row.chars, row.status)

    assert [comparable(r) for r in copied] == [comparable(r) for r in exported]
    assert {r.user_id for r in copied} == {"alice"}


@pytest.mark.slow
def test_cli_refuses_a_huge_or_binary_file_clearly(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as f:
        f.truncate(MAX_IMPORT_BYTES + 1)  # sparse: nothing is read, the size alone refuses it
    binary = tmp_path / "photo.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    big = genbot_here("history", "import", str(huge))
    wrong = genbot_here("history", "import", str(binary))
    assert big.returncode == 2 and "at most" in big.stderr
    assert wrong.returncode == 2 and "binary" in wrong.stderr


# ----- retention --------------------------------------------------------------------------------


async def add_job_events(db: Database, status: str, at: datetime) -> None:
    async with db.write() as session:
        job = Job(kind="retrain", model="m", args={}, max_attempts=1, status=status)
        session.add(job)
        await session.flush()
        session.add(JobEvent(job_id=job.id, at=at, attempt=1, source="worker", kind="message", data={}))


async def add_usage(db: Database, day: str) -> None:
    async with db.write() as session:
        session.add(UsageDaily(scope="user", subject="alice", day=day, chars=1, requests=1))


async def left(db: Database) -> tuple[int, int, int]:
    async with db.read() as session:
        return (
            await count(db),
            int(await session.scalar(select(func.count()).select_from(JobEvent)) or 0),
            int(await session.scalar(select(func.count()).select_from(UsageDaily)) or 0),
        )


async def test_prune_by_age_spares_running_rows_and_live_jobs(db: Database) -> None:
    old = NOW - timedelta(days=40)
    await store(db, "old", "gone", at=old)
    running = await store(db, "old but running", "", at=old, finished=False)
    recent = await store(db, "recent", "kept", at=NOW - timedelta(days=2))
    await add_job_events(db, "succeeded", old)
    await add_job_events(db, "running", old)
    await add_job_events(db, "failed", NOW - timedelta(days=1))
    await add_usage(db, f"{old:%Y-%m-%d}")
    await add_usage(db, f"{NOW:%Y-%m-%d}")
    dry = await archive(db, keep_days=30).prune(dry_run=True, now=NOW)
    assert (dry.generations, dry.job_events, dry.usage_days) == (1, 1, 1)
    assert await left(db) == (3, 3, 2)  # a dry run deletes nothing
    report = await archive(db, keep_days=30).prune(now=NOW)
    assert (report.generations, report.job_events, report.usage_days) == (1, 1, 1)
    assert await left(db) == (2, 2, 1)
    assert sorted(r.id for r in await list_generations(db)) == [running, recent]


async def test_prune_keeps_the_newest_rows(db: Database) -> None:
    ids = [await store(db, f"p{i}", "x", at=NOW - timedelta(hours=10 - i)) for i in range(5)]
    report = await archive(db, keep_rows=2).prune(now=NOW)
    assert report is not None and report.generations == 3
    assert sorted(r.id for r in await list_generations(db)) == ids[3:]
    assert await archive(db).prune(now=NOW) is None  # both limits off: nothing to do


async def test_the_daily_prune_runs_once_a_day_across_processes(db: Database) -> None:
    settings = StorageSettings(keep_days=1)
    first, second = DailyPrune(db, settings, "host:1:a"), DailyPrune(db, settings, "host:2:b")
    await store(db, "old", "gone", at=NOW - timedelta(days=3))
    reports = await asyncio.gather(first.tick(NOW), second.tick(NOW))
    assert sum(r is not None for r in reports) == 1
    await store(db, "old too", "gone", at=NOW - timedelta(days=3))
    assert [await p.tick(NOW + timedelta(hours=23)) for p in (first, second)] == [None, None]
    assert await count(db) == 1
    later = [await p.tick(NOW + timedelta(days=1, seconds=1)) for p in (second, first)]
    assert later[0] is not None and later[0].generations == 1 and later[1] is None
    assert await count(db) == 0


async def test_the_heartbeat_runs_the_prune(db: Database) -> None:
    await store(db, "old", "gone", at=NOW - timedelta(days=3))
    lease = ProcessLease(db, clock=lambda: NOW, interval_s=0.05)
    prune = DailyPrune(db, StorageSettings(keep_days=1), lease.id)
    lease.chores.append(prune.tick)
    async with lease.held():
        await wait_until(lambda: asyncio.sleep(0, prune.last_report), 10, "the prune")

    assert await count(db) == 0


@pytest.mark.slow
async def test_cli_prune_says_what_it_did(tmp_path: Path) -> None:
    async with Database.open(default_sqlite_url(tmp_path / "data")) as db:
        older = await store(db, "older", "x", at=NOW - timedelta(hours=1))
        newer = await store(db, "newer", "x")
    off = await asyncio.to_thread(genbot_here, "history", "prune")
    dry = await asyncio.to_thread(genbot_here, "history", "prune", "--keep-rows", "1", "--dry-run")
    done = await asyncio.to_thread(genbot_here, "history", "prune", "--keep-rows", "1")
    assert off.returncode == 0 and "retention is off" in off.stdout
    assert "would delete 1 generation(s), 0 job event(s), 0 day(s) of usage" in dry.stdout
    assert "deleted 1 generation(s)" in done.stdout, done.stderr
    async with Database.open(default_sqlite_url(tmp_path / "data")) as db:
        assert [r.id for r in await list_generations(db)] == [newer] and older != newer
