"""The quota policy (genbot/quotas.py) over a real database: daily characters, concurrency, cooldowns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from genbot.errors import InvalidRequest, QuotaExceeded
from genbot.quotas import Limits, QuotaPolicy, Subject, seconds_to_midnight
from genbot.storage import Database

T0 = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)


async def test_cooldown_concurrency_and_daily_characters(db_url: str) -> None:
    user = Subject("user", "u1", Limits(chars_per_day=100, concurrent=1, cooldown_s=2.0))
    async with Database.open(db_url, upgrade=True) as db:
        policy = QuotaPolicy(db)
        first = await policy.admit([user], now=T0)
        assert first.remaining_chars == 100
        with pytest.raises(QuotaExceeded, match="cooling down") as cooling:
            await policy.admit([user], now=T0 + timedelta(seconds=0.5))
        assert cooling.value.retry_after == pytest.approx(1.5)
        with pytest.raises(QuotaExceeded, match="already has 1 generation"):
            await policy.admit([user], now=T0 + timedelta(seconds=3))
        await first.finish(70)
        await first.finish(70)  # only counted once
        second = await policy.admit([user], now=T0 + timedelta(seconds=6))
        assert second.remaining_chars == 30
        await second.finish(30)
        with pytest.raises(QuotaExceeded, match="used its 100 characters") as spent:
            await policy.admit([user], now=T0 + timedelta(seconds=9))
        assert spent.value.retry_after == pytest.approx(seconds_to_midnight(T0 + timedelta(seconds=9)))
        tomorrow = await policy.admit([user], now=T0 + timedelta(hours=1, seconds=1))
        assert tomorrow.remaining_chars == 100  # a new UTC day


async def test_a_stored_quota_overrides_the_defaults_and_zero_means_no_limit(db_url: str) -> None:
    key = Subject("key", "k1", Limits(chars_per_day=10, concurrent=1))
    async with Database.open(db_url, upgrade=True) as db:
        policy = QuotaPolicy(db)
        await policy.set_quota("key", "k1", chars_per_day=0)  # concurrent stays the default (1)
        admitted = await policy.admit([key], now=T0)
        assert admitted.remaining_chars is None
        with pytest.raises(QuotaExceeded, match="already has 1"):
            await policy.admit([key], now=T0)
        await admitted.finish(5)
        assert (await policy.usage("key", "k1", now=T0)).chars == 5
        with pytest.raises(InvalidRequest, match="scope must be one of"):
            await policy.set_quota("team", "x", chars_per_day=1)
