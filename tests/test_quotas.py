"""The quota policy (genbot/quotas/policy.py) over a real database: daily characters, concurrency, cooldowns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from genbot.errors import InvalidRequest, QuotaExceeded
from genbot.quotas.policy import Limits, QuotaPolicy, Subject, seconds_to_midnight
from genbot.storage.db import Database
from genbot.storage.processes import heartbeat, new_process_id

T0 = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand; the policy reads every "now" from it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, offset: timedelta) -> FakeClock:
        """Set the time to T0 + ``offset``; returns itself."""
        self.now = T0 + offset
        return self


async def serving_policy(db: Database, clock: FakeClock) -> QuotaPolicy:
    """A policy owned by a freshly registered (heartbeated) process."""
    owner = new_process_id()
    await heartbeat(db, owner, clock())
    return QuotaPolicy(db, owner, clock)


async def test_cooldown_concurrency_and_daily_characters(db_url: str) -> None:
    user = Subject("user", "u1", Limits(chars_per_day=100, concurrent=1, cooldown_s=2.0))
    async with Database.open(db_url, upgrade=True) as db:
        clock = FakeClock(T0)
        policy = await serving_policy(db, clock)
        first = await policy.admit([user])
        assert first.remaining_chars == 100
        clock.at(timedelta(seconds=0.5))
        with pytest.raises(QuotaExceeded, match="cooling down") as cooling:
            await policy.admit([user])
        assert cooling.value.retry_after == pytest.approx(1.5)
        clock.at(timedelta(seconds=3))
        with pytest.raises(QuotaExceeded, match="already has 1 generation"):
            await policy.admit([user])
        await first.finish(70)
        await first.finish(70)  # only counted once
        clock.at(timedelta(seconds=6))
        second = await policy.admit([user])
        assert second.remaining_chars == 30
        await second.finish(30)
        clock.at(timedelta(seconds=9))
        with pytest.raises(QuotaExceeded, match="used its 100 characters") as spent:
            await policy.admit([user])
        assert spent.value.retry_after == pytest.approx(seconds_to_midnight(T0 + timedelta(seconds=9)))
        clock.at(timedelta(hours=1, seconds=1))
        tomorrow = await policy.admit([user])
        assert tomorrow.remaining_chars == 100  # a new UTC day


async def test_characters_count_on_the_day_the_generation_was_admitted(db_url: str) -> None:
    user = Subject("user", "u1", Limits(chars_per_day=100))
    async with Database.open(db_url, upgrade=True) as db:
        clock = FakeClock(T0 + timedelta(minutes=59))
        policy = await serving_policy(db, clock)
        admitted = await policy.admit([user])
        clock.at(timedelta(hours=1, minutes=1))  # the generation ends after midnight
        await admitted.finish(40)
        assert (await policy.usage("user", "u1")).chars == 0
        clock.at(timedelta(minutes=59))
        assert (await policy.usage("user", "u1")).chars == 40


async def test_a_stored_quota_overrides_the_defaults_and_zero_means_no_limit(db_url: str) -> None:
    key = Subject("key", "k1", Limits(chars_per_day=10, concurrent=1))
    async with Database.open(db_url, upgrade=True) as db:
        policy = await serving_policy(db, FakeClock(T0))
        await policy.set_quota("key", "k1", chars_per_day=0)  # concurrent stays the default (1)
        admitted = await policy.admit([key])
        assert admitted.remaining_chars is None
        with pytest.raises(QuotaExceeded, match="already has 1"):
            await policy.admit([key])
        await admitted.finish(5)
        assert (await policy.usage("key", "k1")).chars == 5
        with pytest.raises(InvalidRequest, match="scope must be one of"):
            await policy.set_quota("team", "x", chars_per_day=1)


async def test_a_stored_quota_applies_at_once_here_and_within_the_ttl_in_another_process(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits are read once per ``STORED_TTL_S`` per process, so a request under no limit costs no
    read; a quota stored through this policy applies at once, one stored elsewhere within the TTL."""
    from genbot.quotas import policy as policy_module
    from genbot.quotas import store

    now = [1000.0]
    monkeypatch.setattr(policy_module.time, "monotonic", lambda: now[0])
    reads: list[tuple[str, str]] = []
    real_get = store.get_quota

    async def counted(db: Database, scope: str, subject: str) -> object:
        reads.append((scope, subject))
        return await real_get(db, scope, subject)

    monkeypatch.setattr(store, "get_quota", counted)
    key = Subject("key", "k1", Limits(chars_per_day=100))
    async with Database.open(db_url, upgrade=True) as db:
        here, elsewhere = await serving_policy(db, FakeClock(T0)), await serving_policy(db, FakeClock(T0))
        assert (await here.limits(key)).chars_per_day == 100
        assert (await here.limits(key)).chars_per_day == 100 and len(reads) == 1  # the second from memory
        await elsewhere.set_quota("key", "k1", chars_per_day=5)
        assert (await here.limits(key)).chars_per_day == 100  # another process's change: not yet
        assert (await elsewhere.limits(key)).chars_per_day == 5  # its own: at once
        now[0] += policy_module.STORED_TTL_S
        assert (await here.limits(key)).chars_per_day == 5  # within the TTL
        await here.set_quota("key", "k1", chars_per_day=0)
        assert (await here.limits(key)).chars_per_day in (0, None)  # 0: no limit, at once
        await elsewhere.set_quota("key", "k1", chars_per_day=1)
        now[0] += policy_module.STORED_TTL_S
        admitted = await here.admit([key], chars=5)  # admissions go by the same limits
        assert admitted.remaining_chars == 1
        with pytest.raises(QuotaExceeded):
            await here.admit([key], chars=5)
