"""Cron schedules: each due time queues exactly one job, even with two schedulers racing; ``genbot serve``.

Tests taking ``jobs_env`` run on a SQLite file and, when GENBOT_TEST_DATABASE_URL is set, on
PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from genbot.config import load_settings
from genbot.errors import InvalidRequest
from genbot.jobs import Jobs, RetrainRequest, next_fire_time
from genbot.jobs.schedule_store import fire_schedule, list_firings, list_schedules
from genbot.service import GenbotService
from genbot.storage.db import Database
from genbot.storage.tables import JobStatus
from tests.helpers import FAST, genbot_here, opened, wait_until

START = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
REQUEST = RetrainRequest(model="alpha", corpus="plays", steps=5, options=FAST)


def test_next_fire_time_follows_the_cron_expression_in_utc() -> None:
    assert next_fire_time("0 3 * * *", START) == START.replace(hour=3)
    assert next_fire_time("0 3 * * *", START.replace(hour=3)) == START.replace(day=28, hour=3)
    assert next_fire_time("*/10 * * * *", START + timedelta(minutes=1)) == START + timedelta(minutes=10)
    for bad in ("", "0 3 * *", "61 * * * *", "every day", "0 3 * * * *"):
        with pytest.raises(InvalidRequest, match="cron"):
            next_fire_time(bad, START)


async def test_two_schedulers_ticking_at_once_queue_one_job_per_firing(jobs_env: str) -> None:
    settings = load_settings()
    async with opened() as service:
        schedule = await service.jobs.add_schedule(REQUEST, "*/10 * * * *", now=START)
    assert schedule.next_run_at == START + timedelta(minutes=10)

    async with contextlib.AsyncExitStack() as stack:
        handles = [await stack.enter_async_context(Database.open(jobs_env, upgrade=False)) for _ in range(2)]
        schedulers = [Jobs(db, settings).scheduler() for db in handles]
        for n in range(1, 6):
            now = START + timedelta(minutes=10 * n, seconds=1)
            queued = await asyncio.gather(*(s.tick(now) for s in schedulers))
            assert sorted(len(ids) for ids in queued) == [0, 1], (n, queued)
            assert await asyncio.gather(*(s.tick(now) for s in schedulers)) == [[], []]  # nothing due any more
        firings = await list_firings(handles[0], schedule.id)
        jobs = await Jobs(handles[0], settings).list()

    assert [t for t, _ in firings] == [START + timedelta(minutes=10 * n) for n in range(1, 6)]
    assert sorted(job_id for _, job_id in firings) == sorted(job.id for job in jobs)
    assert all(job.schedule_id == schedule.id and job.status == JobStatus.QUEUED for job in jobs)


async def test_a_firing_both_schedulers_saw_due_is_recorded_once(jobs_env: str) -> None:
    settings = load_settings()
    async with opened() as service:
        schedule = await service.jobs.add_schedule(REQUEST, "0 3 * * *", now=START)
        job = await service.jobs.resolve(REQUEST, schedule_id=schedule.id)
    # Both schedulers hold the same snapshot of the due schedule and fire it at the same moment.
    async with contextlib.AsyncExitStack() as stack:
        handles = [await stack.enter_async_context(Database.open(jobs_env, upgrade=False)) for _ in range(2)]
        after = next_fire_time(schedule.cron, schedule.next_run_at)
        firings = await asyncio.gather(*(fire_schedule(db, schedule, next_run_at=after, job=job) for db in handles))
        jobs = await Jobs(handles[0], settings).list()
        (stored,) = await list_schedules(handles[0])

    assert sorted(f.recorded for f in firings) == [False, True]
    assert len(jobs) == 1 and [f.job_id for f in firings if f.recorded] == [jobs[0].id]
    assert stored.next_run_at == after and stored.last_run_at == schedule.next_run_at


async def test_after_downtime_a_schedule_fires_once_and_moves_to_the_future(sqlite_jobs_env: str) -> None:
    async with opened() as service:
        await service.jobs.add_schedule(REQUEST, "0 3 * * *", now=START)
        now = START + timedelta(days=3, hours=5)
        assert len(await service.jobs.scheduler().tick(now)) == 1
        assert await service.jobs.scheduler().tick(now) == []
        (schedule,) = await service.jobs.schedules()
    assert schedule.next_run_at == (START + timedelta(days=4)).replace(hour=3)
    assert schedule.last_run_at == START.replace(hour=3)


async def test_a_schedule_whose_corpus_is_gone_fires_without_a_job(sqlite_jobs_env: str) -> None:
    async with opened() as service:
        schedule = await service.jobs.add_schedule(REQUEST, "0 3 * * *", now=START)
        await service.corpora.remove("plays")
        assert await service.jobs.scheduler().tick(START + timedelta(hours=4)) == []
        assert await list_firings(service.db, schedule.id) == [(START.replace(hour=3), None)]  # type: ignore[arg-type]
        assert await service.jobs.list() == []
        with pytest.raises(InvalidRequest, match="unknown corpus"):
            await service.jobs.add_schedule(REQUEST, "0 3 * * *")


def test_schedule_commands_add_list_and_remove(sqlite_jobs_env: str) -> None:
    added = genbot_here("schedule", "add", "alpha", "--corpus", "plays", "--cron", "0 3 * * *", "--steps", "10")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("schedule 1: retrain alpha on plays at '0 3 * * *' (UTC); next ")
    listed = [json.loads(line) for line in genbot_here("schedule", "list", "--json").stdout.splitlines()]
    assert [(row["id"], row["cron"], row["job_args"]["steps"]) for row in listed] == [(1, "0 3 * * *", 10)]
    bad = genbot_here("schedule", "add", "alpha", "--corpus", "plays", "--cron", "at dawn", "--steps", "10")
    assert bad.returncode == 2 and "five-field cron expression" in bad.stderr
    assert genbot_here("schedule", "remove", "1").stdout.strip() == "schedule 1 removed"
    assert genbot_here("schedule", "list").stdout == ""


@pytest.mark.slow
async def test_serve_fires_a_due_schedule_and_its_embedded_worker_runs_the_job(
    sqlite_jobs_env: str, tmp_path: Path
) -> None:
    async with opened() as service:
        # A schedule whose first run was a minute after "yesterday": due as soon as serve starts.
        await service.jobs.add_schedule(REQUEST, "* * * * *", now=datetime.now(UTC) - timedelta(days=1))
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "genbot", "serve"], stdout=log, stderr=subprocess.STDOUT)
    try:
        async with opened() as service:

            async def succeeded() -> list[object] | None:
                jobs = await service.jobs.list()
                return jobs if jobs and all(job.status == JobStatus.SUCCEEDED for job in jobs) else None

            jobs = await wait_until(succeeded, 120, "the scheduled job to succeed")
    finally:
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert time.monotonic() - started < 30
    assert len(jobs) >= 1
    assert "genbot serving: worker, scheduler" in (tmp_path / "serve.log").read_text()


async def test_service_exposes_jobs_without_loading_models(sqlite_jobs_env: str) -> None:
    async with GenbotService(load_settings(), serving=False) as service:
        assert service.registry is None  # nothing was loaded
        assert await service.jobs.list() == []
