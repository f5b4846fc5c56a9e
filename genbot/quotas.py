"""Quota policy: characters per UTC day, concurrent generations and a cooldown per subject.

A subject is (scope, id): a Discord user or guild, or an HTTP API key. Its limits are the stored
quota row where one exists (a stored None falls back to the caller's default for that limit,
a stored 0 means "no limit") else the caller's defaults. Daily usage and the time of the last
request are stored, so they survive restarts; the count of running generations lives in this
process only (a generation does not survive a restart either).

Use: ``admission = await policy.admit(subjects)`` before generating (raises ``QuotaExceeded``
with ``retry_after``), cap the length at ``admission.remaining_chars``, and call
``await admission.finish(chars)`` when the generation ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from genbot.errors import InvalidRequest, QuotaExceeded
from genbot.storage import quotas as storage
from genbot.storage.db import Database
from genbot.storage.quotas import QuotaRow, UsageRow

CONCURRENT_RETRY_S = 5.0  # a running generation's end cannot be predicted; suggest a short wait

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    """The real time, timezone-aware, in UTC (the policy's default clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Limits:
    """Limits of one subject; None or 0 means no limit of that kind."""

    chars_per_day: int | None = None
    concurrent: int | None = None
    cooldown_s: float | None = None


@dataclass(frozen=True)
class Subject:
    """Who is counted: scope 'user', 'guild' or 'key', the id, and the limits without a stored quota."""

    scope: str
    id: str
    defaults: Limits = field(default_factory=Limits)

    @property
    def key(self) -> tuple[str, str]:
        """(scope, id)."""
        return (self.scope, self.id)


def today(now: datetime) -> str:
    """The UTC day of ``now`` as 'YYYY-MM-DD'."""
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: datetime) -> float:
    """Seconds until the next UTC day starts (when daily quotas reset)."""
    now = now.astimezone(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def _merge(stored: QuotaRow | None, defaults: Limits) -> Limits:
    """Stored values override the defaults one by one; None in the row keeps the default."""
    if stored is None:
        return defaults
    return Limits(
        chars_per_day=defaults.chars_per_day if stored.chars_per_day is None else stored.chars_per_day,
        concurrent=defaults.concurrent if stored.concurrent is None else stored.concurrent,
        cooldown_s=defaults.cooldown_s if stored.cooldown_s is None else stored.cooldown_s,
    )


class Admission:
    """A request let through: how many characters it may still use, and its ``finish``."""

    def __init__(self, policy: QuotaPolicy, subjects: Sequence[Subject], remaining_chars: int | None, day: str) -> None:
        self._policy = policy
        self._subjects = list(subjects)
        self.day = day  # the UTC day admitted on: its characters count there, even past midnight
        self.remaining_chars = remaining_chars  # None: no daily limit applies
        self._finished = False

    async def finish(self, chars: int) -> None:
        """Record the characters generated and free the concurrency slot (only once)."""
        if self._finished:
            return
        self._finished = True
        self._policy.release(self._subjects)
        await self._policy.record_chars(self._subjects, chars, day=self.day)


class QuotaPolicy:
    """Checks and records usage for any scope; one per process (it counts running generations)."""

    def __init__(self, db: Database, clock: Clock = utc_clock) -> None:
        self._db = db
        self._clock = clock  # every "now" of the policy comes from here, so tests can move time
        self._running: Counter[tuple[str, str]] = Counter()

    async def limits(self, subject: Subject) -> Limits:
        """The effective limits of one subject."""
        return _merge(await storage.get_quota(self._db, subject.scope, subject.id), subject.defaults)

    async def admit(self, subjects: Sequence[Subject]) -> Admission:
        """Check every subject's limits, then count the request (QuotaExceeded names the first one hit)."""
        now = self._clock()
        remaining: list[int] = []
        for subject in subjects:
            left = await self._check(subject, await self.limits(subject), now)
            if left is not None:
                remaining.append(left)
        for subject in subjects:
            self._running[subject.key] += 1
            await storage.add_usage(self._db, subject.scope, subject.id, today(now), requests=1, at=now)
        return Admission(self, subjects, min(remaining) if remaining else None, today(now))

    async def _check(self, subject: Subject, limits: Limits, now: datetime) -> int | None:
        """Raise QuotaExceeded if ``subject`` may not start now; else its remaining characters today."""
        who = f"{subject.scope} {subject.id}"
        if limits.cooldown_s:
            last = await storage.last_request_at(self._db, subject.scope, subject.id)
            wait = limits.cooldown_s - (now - last).total_seconds() if last else 0.0
            if wait > 0:
                raise QuotaExceeded(f"{who} is cooling down; try again in {wait:.1f} s", retry_after=wait)
        if limits.concurrent and self._running[subject.key] >= limits.concurrent:
            message = f"{who} already has {limits.concurrent} generation(s) running"
            raise QuotaExceeded(message, retry_after=CONCURRENT_RETRY_S)
        if not limits.chars_per_day:
            return None
        used = (await storage.usage_today(self._db, subject.scope, subject.id, today(now))).chars
        if used >= limits.chars_per_day:
            wait = seconds_to_midnight(now)
            message = f"{who} used its {limits.chars_per_day:,} characters for today; resets in {wait / 3600:.1f} h"
            raise QuotaExceeded(message, retry_after=wait)
        return limits.chars_per_day - used

    def release(self, subjects: Sequence[Subject]) -> None:
        """Free the concurrency slots taken by ``admit``."""
        for subject in subjects:
            self._running[subject.key] = max(0, self._running[subject.key] - 1)

    async def record_chars(self, subjects: Sequence[Subject], chars: int, day: str | None = None) -> None:
        """Add generated characters to each subject's usage of ``day`` (default: today by the clock)."""
        day = day or today(self._clock())
        for subject in subjects:
            await storage.add_usage(self._db, subject.scope, subject.id, day, chars=chars)

    async def set_quota(
        self,
        scope: str,
        subject: str,
        *,
        chars_per_day: int | None = None,
        concurrent: int | None = None,
        cooldown_s: float | None = None,
    ) -> QuotaRow:
        """Store a subject's limits (None keeps the caller's default, 0 means no limit)."""
        if scope not in storage.SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(storage.SCOPES)}, got {scope!r}")
        if any(v is not None and v < 0 for v in (chars_per_day, concurrent, cooldown_s)):
            raise InvalidRequest("quota limits must not be negative")
        return await storage.set_quota(
            self._db, scope, subject, chars_per_day=chars_per_day, concurrent=concurrent, cooldown_s=cooldown_s
        )

    async def usage(self, scope: str, subject: str) -> UsageRow:
        """A subject's usage today, by the policy's clock."""
        return await storage.usage_today(self._db, scope, subject, today(self._clock()))
