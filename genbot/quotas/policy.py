"""Quota policy: characters per UTC day, concurrent generations and a cooldown per subject.

A subject is (scope, id): a Discord user or guild, or an HTTP API key. Its limits are the stored
quota row where one exists (a stored None falls back to the caller's default for that limit,
a stored 0 means "no limit") else the caller's defaults. Everything is counted in the database,
so every process sharing it enforces one limit: an admission reserves, in one transaction over
all of its subjects, a slot (the running count) and at most what is left of today's characters,
and stamps the cooldown; ``finish`` frees the slot and charges what was generated, giving back
the rest. Slots belong to this process (``owner``, heartbeated by the service), so those of a
process that died stop counting (see ``genbot.quotas.store`` and ``genbot.storage.processes``).

Use: ``admission = await policy.admit(subjects, chars=wanted)`` before generating (raises
``QuotaExceeded`` with ``retry_after``), cap the length at ``admission.remaining_chars``, and call
``await admission.finish(chars)`` when the generation ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from genbot.errors import InvalidRequest, QuotaExceeded
from genbot.quotas import store as storage
from genbot.quotas.store import QuotaRow, Refusal, SlotRequest, UsageRow
from genbot.storage.db import Database

log = logging.getLogger("genbot.quotas")
# A subject's stored quota is read at most this often per process: a request under no limit then
# costs no read, and a quota stored by another process applies here within this long (one stored
# through this policy applies at once).
STORED_TTL_S = 2.0
_STORED_CACHE_MAX = 10_000  # subjects remembered (many Discord users): past this, start afresh
CONCURRENT_RETRY_S = 5.0  # a running generation's end cannot be predicted; suggest a short wait
RELEASE_ATTEMPTS = 4
RELEASE_FIRST_DELAY_S = 0.25  # doubled after each failed attempt

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


def _slot_request(subject: Subject, limits: Limits) -> SlotRequest:
    """What the storage layer needs to admit one subject."""
    return SlotRequest(
        scope=subject.scope,
        subject=subject.id,
        chars_per_day=limits.chars_per_day or None,
        concurrent=limits.concurrent or None,
        cooldown_s=limits.cooldown_s or None,
    )


def _exceeded(refusal: Refusal, now: datetime) -> QuotaExceeded:
    """The error a front end shows for a refused admission."""
    who = f"{refusal.scope} {refusal.subject}"
    if refusal.reason == "cooldown":
        wait = refusal.wait_s
        return QuotaExceeded(f"{who} is cooling down; try again in {wait:.1f} s", retry_after=wait)
    if refusal.reason == "concurrent":
        message = f"{who} already has {refusal.limit:.0f} generation(s) running"
        return QuotaExceeded(message, retry_after=CONCURRENT_RETRY_S)
    wait = seconds_to_midnight(now)
    message = f"{who} used its {refusal.limit:,.0f} characters for today (or has them reserved by running"
    return QuotaExceeded(f"{message} generations); resets in {wait / 3600:.1f} h", retry_after=wait)


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
    """A request let through: the characters reserved for it, and its ``finish``."""

    def __init__(
        self, policy: QuotaPolicy, subjects: Sequence[Subject], reservation: storage.Reservation, day: str
    ) -> None:
        self._policy = policy
        self._subjects = list(subjects)
        self._slot_ids = reservation.slot_ids
        self.day = day  # the UTC day admitted on: its characters count there, even past midnight
        self.remaining_chars = reservation.chars  # reserved for this request; None: no daily limit applies
        self._finished = False

    async def finish(self, chars: int) -> None:
        """Charge the characters generated, give back the rest and free the slots (only once; never raises)."""
        if self._finished:
            return
        self._finished = True
        keys = [s.key for s in self._subjects]
        await self._policy.release(self._slot_ids, keys, self.day, chars)


class QuotaPolicy:
    """Admits and records usage for any scope; admissions are owned by one serving process."""

    def __init__(self, db: Database, owner: str | None = None, clock: Clock = utc_clock) -> None:
        self._db = db
        self._owner = owner  # processes.id of this process; None: it may not admit (admin tools)
        self.clock = clock  # every "now" of the policy comes from here, so tests can move time
        self._stored: dict[tuple[str, str], tuple[float, QuotaRow | None]] = {}  # key -> (read at, row)

    async def count_request(self, scope: str, subject: str, window: int) -> int:
        """Count one request of a subject in a one-minute window shared by every replica; the total so far."""
        return await storage.count_in_window(self._db, scope, subject, window)

    @property
    def owner(self) -> str | None:
        """The process id that owns this policy's slots."""
        return self._owner

    async def limits(self, subject: Subject) -> Limits:
        """The effective limits of one subject (its stored quota as read within ``STORED_TTL_S``)."""
        return _merge(await self._stored_quota(subject.key), subject.defaults)

    async def _stored_quota(self, key: tuple[str, str]) -> QuotaRow | None:
        now = time.monotonic()
        cached = self._stored.get(key)
        if cached is not None and now - cached[0] < STORED_TTL_S:
            return cached[1]
        row = await storage.get_quota(self._db, *key)
        if len(self._stored) >= _STORED_CACHE_MAX:
            self._stored.clear()
        self._stored[key] = (now, row)
        return row

    async def admit(self, subjects: Sequence[Subject], chars: int | None = None) -> Admission:
        """Reserve a slot and up to ``chars`` characters (None: all that is left) for every subject, or raise.

        QuotaExceeded (with ``retry_after``) names the first limit hit; nothing is counted then.
        """
        if self._owner is None:
            raise RuntimeError("quota admissions need a serving process (an owner id)")
        now = self.clock()
        requests = [_slot_request(subject, await self.limits(subject)) for subject in subjects]
        day = today(now)
        outcome = await storage.reserve(self._db, requests, owner=self._owner, day=day, now=now, want=chars)
        if isinstance(outcome, Refusal):
            raise _exceeded(outcome, now)
        return Admission(self, subjects, outcome, day)

    async def release(self, slot_ids: Sequence[int], subjects: Sequence[tuple[str, str]], day: str, chars: int) -> None:
        """Free slots and charge ``chars`` to each subject's ``day``; retried, logged, never raised."""
        delay = RELEASE_FIRST_DELAY_S
        for attempt in range(1, RELEASE_ATTEMPTS + 1):
            try:
                await storage.release(self._db, slot_ids, subjects, day, chars)
                return
            except Exception:
                if attempt == RELEASE_ATTEMPTS:
                    # The slots stay until this process stops; the characters go uncharged.
                    log.exception("could not release quota slots %s (%d chars)", list(slot_ids), chars)
                    return
                log.warning("could not release quota slots; retrying in %.2f s", delay, exc_info=True)
                await asyncio.sleep(delay)
                delay *= 2

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
        row = await storage.set_quota(
            self._db, scope, subject, chars_per_day=chars_per_day, concurrent=concurrent, cooldown_s=cooldown_s
        )
        self._stored.pop((scope, subject), None)
        return row

    async def usage(self, scope: str, subject: str) -> UsageRow:
        """A subject's usage today, by the policy's clock."""
        return await storage.usage_today(self._db, scope, subject, today(self.clock()))
