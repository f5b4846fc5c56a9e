"""Quotas under concurrency: many admissions at once, two processes on one database, dead processes.

Every test runs on a real SQLite file and, when GENBOT_TEST_DATABASE_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from genbot.errors import QuotaExceeded
from genbot.quotas import store as storage
from genbot.quotas.policy import Admission, Limits, QuotaPolicy, Subject
from genbot.storage.db import Database
from genbot.storage.leases import ProcessLease, reap
from genbot.storage.processes import heartbeat, new_process_id
from genbot.storage.tables import Process, QuotaSlot, UsageDaily

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def serving_policy(db: Database, clock: FakeClock) -> QuotaPolicy:
    """A policy owned by a freshly registered (heartbeated) process."""
    owner = new_process_id()
    await heartbeat(db, owner, clock())
    return QuotaPolicy(db, owner, clock)


async def _admit_or_none(policy: QuotaPolicy, subject: Subject, chars: int | None = None) -> Admission | None:
    """The admission, or None if the quota refused it."""
    try:
        return await policy.admit([subject], chars=chars)
    except QuotaExceeded:
        return None


async def test_parallel_admissions_never_grant_more_than_the_daily_quota(db_url: str) -> None:
    key = Subject("key", "k", Limits(chars_per_day=200))
    async with Database.open(db_url, upgrade=True) as db:
        policy = await serving_policy(db, FakeClock())
        admitted = await asyncio.gather(*(_admit_or_none(policy, key, chars=30) for _ in range(40)))
        granted = [a.remaining_chars for a in admitted if a is not None]
        assert sum(g or 0 for g in granted) == 200  # 6 x 30 + one 20, then refusals
        assert sorted(granted, reverse=True)[:7] == [30] * 6 + [20] and len(granted) == 7
        await asyncio.gather(*(a.finish(a.remaining_chars or 0) for a in admitted if a is not None))
        assert (await policy.usage("key", "k")).chars == 200
        assert await _admit_or_none(policy, key, chars=1) is None


async def test_unused_reservations_are_given_back_at_finish(db_url: str) -> None:
    key = Subject("key", "k", Limits(chars_per_day=100))
    async with Database.open(db_url, upgrade=True) as db:
        policy = await serving_policy(db, FakeClock())
        first = await policy.admit([key], chars=80)
        second = await policy.admit([key], chars=80)
        assert (first.remaining_chars, second.remaining_chars) == (80, 20)
        await first.finish(10)  # stopped early: 70 come back
        third = await policy.admit([key], chars=80)
        assert third.remaining_chars == 70
        await second.finish(20)
        await third.finish(70)
        assert (await policy.usage("key", "k")).chars == 100
        assert await storage.open_slots(db, "key", "k") == 0


async def test_parallel_admissions_respect_the_concurrency_limit(db_url: str) -> None:
    key = Subject("key", "k", Limits(concurrent=3))
    async with Database.open(db_url, upgrade=True) as db:
        policy = await serving_policy(db, FakeClock())
        admitted = [a for a in await asyncio.gather(*(_admit_or_none(policy, key) for _ in range(40))) if a]
        assert len(admitted) == 3
        await admitted[0].finish(5)
        again = await asyncio.gather(*(_admit_or_none(policy, key) for _ in range(10)))
        assert len([a for a in again if a]) == 1  # exactly the freed slot


async def test_parallel_admissions_respect_the_cooldown(db_url: str) -> None:
    user = Subject("user", "u", Limits(cooldown_s=10.0))
    async with Database.open(db_url, upgrade=True) as db:
        clock = FakeClock()
        policy = await serving_policy(db, clock)
        admitted = [a for a in await asyncio.gather(*(_admit_or_none(policy, user) for _ in range(40))) if a]
        assert len(admitted) == 1
        clock.now = T0 + timedelta(seconds=10)
        assert len([a for a in await asyncio.gather(*(_admit_or_none(policy, user) for _ in range(40))) if a]) == 1


async def test_a_refused_subject_takes_nothing_from_the_others(db_url: str) -> None:
    user = Subject("user", "u", Limits(chars_per_day=100, cooldown_s=5.0))
    guild = Subject("guild", "g", Limits(concurrent=1))
    async with Database.open(db_url, upgrade=True) as db:
        policy = await serving_policy(db, FakeClock())
        await policy.admit([Subject("user", "other"), guild])
        with pytest.raises(QuotaExceeded, match="already has 1"):
            await policy.admit([user, guild], chars=50)
        alone = await policy.admit([user], chars=100)  # no cooldown was stamped, nothing was reserved
        assert alone.remaining_chars == 100


async def test_slots_of_a_process_that_stopped_heartbeating_do_not_count(db_url: str) -> None:
    key = Subject("key", "k", Limits(concurrent=1))
    async with Database.open(db_url, upgrade=True) as db:
        clock = FakeClock()
        dead = await serving_policy(db, clock)
        await dead.admit([key])  # never finished: its process is killed
        clock.now = T0 + timedelta(seconds=30)
        alive = await serving_policy(db, clock)
        with pytest.raises(QuotaExceeded, match="already has 1"):
            await alive.admit([key])  # the first process may still be running
        clock.now = T0 + timedelta(seconds=61)
        await heartbeat(db, alive.owner or "", clock())  # the live one keeps beating, the dead one does not
        assert await alive.admit([key]) is not None
        await reap(db, clock())
        async with db.read() as session:
            owners = set((await session.scalars(select(QuotaSlot.owner))).all())
            processes = (await session.execute(select(func.count()).select_from(Process))).scalar_one()
        assert owners == {alive.owner} and processes == 1


async def test_count_in_window_under_gather_counts_every_request_once(db_url: str) -> None:
    async with Database.open(db_url, upgrade=True) as db, Database.open(db_url) as other:
        # Two handles share no asyncio lock, like two processes.
        counts = await asyncio.gather(
            *(storage.count_in_window(db if n % 2 else other, "addr", "127.0.0.1", 1000) for n in range(60))
        )
        assert sorted(counts) == list(range(1, 61))
        assert await storage.count_in_window(db, "addr", "127.0.0.1", 1001) == 1  # a new minute starts at 1
        assert await storage.count_in_window(db, "addr", "127.0.0.2", 1001) == 1  # and per subject


# ----- two processes on one database ----------------------------------------------------------


def _run_workers(url: str, mode: str, tmp_path: Path, count: int = 20) -> list[list[int]]:
    """Start two worker processes, let them go at the same moment, return each one's grants."""
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.quota_worker", url, mode, str(count), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        go.touch()
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


async def test_two_processes_share_one_daily_quota(db_url: str, tmp_path: Path) -> None:
    async with Database.open(db_url, upgrade=True) as db:
        results = await asyncio.to_thread(_run_workers, db_url, "chars", tmp_path)
        async with db.read() as session:  # all days: the workers read the real clock, which may pass midnight
            used = (await session.execute(select(func.sum(UsageDaily.chars)))).scalar_one()
    granted = sum(sum(r) for r in results)
    assert granted == used == 200  # 2 x 20 admissions of 30 characters, one 200-character quota


async def test_two_processes_share_one_concurrency_limit(db_url: str, tmp_path: Path) -> None:
    async with Database.open(db_url, upgrade=True):
        results = await asyncio.to_thread(_run_workers, db_url, "concurrent", tmp_path)
    assert sum(sum(r) for r in results) == 3  # neither finished: together they hold exactly the limit


async def test_two_processes_share_one_cooldown(db_url: str, tmp_path: Path) -> None:
    async with Database.open(db_url, upgrade=True):
        results = await asyncio.to_thread(_run_workers, db_url, "cooldown", tmp_path)
    assert sum(sum(r) for r in results) == 1  # 40 requests at once from two processes: one gets through


async def test_a_held_lease_heartbeats_and_is_removed_on_exit(db_url: str) -> None:
    clock = FakeClock()
    async with Database.open(db_url, upgrade=True) as db:
        async with ProcessLease(db, clock, interval_s=0.01).held() as lease:
            clock.now = T0 + timedelta(minutes=5)
            for _ in range(500):  # the background beat stamps the clock's new time
                async with db.read() as session:
                    beat = (await session.execute(select(Process.heartbeat_at).where(Process.id == lease.id))).scalar()
                if beat == clock.now:
                    break
                await asyncio.sleep(0.01)
            assert beat == clock.now
        async with db.read() as session:
            assert (await session.execute(select(func.count()).select_from(Process))).scalar_one() == 0
