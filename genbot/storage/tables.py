"""ORM tables (SQLAlchemy 2.x typed mappings).

Only the storage package imports these classes; front ends and the service see the plain
records in ``genbot.storage.repository``. Every schema change here needs a new, hand-written
revision in ``migrations/versions`` (append-only); ``tests/test_storage.py`` checks that the
migrations and these classes agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint and index names, so later migrations can address them by name
# (SQLite batch mode and PostgreSQL both need the name to drop or alter a constraint).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always stored in UTC and always read back timezone-aware.

    SQLite has no timezone type and hands back naive values; PostgreSQL uses
    ``timestamp with time zone``. Naive values are refused so local times cannot slip in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; drop the tzinfo for SQLite so stored strings sort chronologically."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value (e.g. datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to SQLite's naive values; normalise PostgreSQL's to UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; its metadata is Alembic's ``target_metadata``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class GenerationStatus(StrEnum):
    """Life cycle of one generation: running, then exactly one of the other three."""

    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Generation(Base):
    """One generation request: prompt, output, sampling parameters, timings, who and where.

    Migration 0009 adds its full-text index outside the ORM (``genbot.storage.search``): on
    SQLite the ``generations_fts`` table and three triggers on this table (remade by 0010 with
    the owner column and the ``generations_fts_source`` view), which a later migration that
    recreates the table (batch mode "recreate") must create again; on PostgreSQL the generated
    ``search`` column.
    """

    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'completed', 'cancelled', 'failed')", name="status"),
        # AUTOINCREMENT: ids of forgotten (deleted) rows are never handed to someone else's row.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    model: Mapped[str] = mapped_column(String(100), index=True)  # plugin / generator name
    model_version: Mapped[str | None] = mapped_column(String(64))  # "3", a tag or a hash
    prompt: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text, default="")
    temperature: Mapped[float] = mapped_column(Float)
    top_k: Mapped[int | None] = mapped_column(Integer)
    top_p: Mapped[float | None] = mapped_column(Float)
    max_length: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    stop: Mapped[list[str]] = mapped_column(JSON, default=list)
    chars: Mapped[int] = mapped_column(Integer, default=0)
    time_to_first_char_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default=GenerationStatus.RUNNING.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    frontend: Mapped[str] = mapped_column(String(16))  # repl / cli / discord / api
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    guild_id: Mapped[str | None] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(64))
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    # The serving process writing the row (processes.id); only a row whose owner stopped
    # heartbeating is marked failed, never one another live process is still writing.
    owner: Mapped[str | None] = mapped_column(String(200))
    # The generation this one continues (or repeats with a new seed): threads of continuations.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"), index=True)


class CorpusKind(StrEnum):
    """What a corpus holds: plain text, or images with COCO-style captions."""

    TEXT = "text"
    CAPTIONS = "captions"


class Corpus(Base):
    """A registered corpus: where its files live in the data folder and what they contain."""

    __tablename__ = "corpora"
    __table_args__ = (CheckConstraint("kind IN ('text', 'captions')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)  # folder under data_dir/corpora
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the stored content
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    chars: Mapped[int] = mapped_column(BigInteger)
    charset: Mapped[str] = mapped_column(Text)  # the sorted distinct characters
    licence: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """One trained version of a model; at most one per model is active (served)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model", "version", name="uq_model_versions_model_version"),
        # Partial unique index: the database itself refuses a second active version.
        Index(
            "uq_model_versions_one_active",
            "model",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, 3… per model
    path: Mapped[str] = mapped_column(Text)  # the model folder load_model reads
    val_loss: Mapped[float | None] = mapped_column(Float)  # val_block, nats/char
    val_stateful: Mapped[float | None] = mapped_column(Float)
    parent_version: Mapped[int | None] = mapped_column(Integer)  # the version it was tuned from
    corpus: Mapped[str | None] = mapped_column(String(64))  # corpus name (kept if it is removed)
    job_id: Mapped[int | None] = mapped_column(Integer)  # no FK: the jobs table comes later
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=False)


class JobStatus(StrEnum):
    """Life cycle of a background job: queued → running → exactly one of the last three."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Job(Base):
    """A durable background job (a fine-tune): its arguments, lease, progress and outcome."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # "retrain"
    model: Mapped[str] = mapped_column(String(100), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved training options (see genbot.jobs.spec)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # step, losses, chars/s, eta, sample
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # final losses, version, loss curve
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(200))  # "host:pid:uuid" of the worker running it
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far (a re-claim after a crash counts)
    max_attempts: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    result_version: Mapped[int | None] = mapped_column(Integer)  # the model version it produced
    parent_version: Mapped[int | None] = mapped_column(Integer)  # the version it fine-tunes (None: scratch)
    corpus: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id", ondelete="SET NULL"))


class JobEvent(Base):
    """One line of a job's log: a trainer JSON event, a worker message or a line of stderr."""

    __tablename__ = "job_events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempt: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))  # train / worker / stderr
    kind: Mapped[str] = mapped_column(String(16))  # the trainer's event (start/step/eval/done) or "message"
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Schedule(Base):
    """A cron schedule that queues a retrain job of one model on one corpus."""

    __tablename__ = "schedules"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(100))
    corpus: Mapped[str] = mapped_column(String(64))
    cron: Mapped[str] = mapped_column(String(100))  # five-field cron expression, UTC
    job_args: Mapped[dict[str, Any]] = mapped_column(JSON)  # retrain options as the user gave them
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScheduleFiring(Base):
    """One due time of a schedule; the primary key makes each firing create at most one job."""

    __tablename__ = "schedule_firings"

    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True)
    fire_time: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Quota(Base):
    """Limits for one subject of a scope ('user', 'guild' or 'key'); None means unlimited."""

    __tablename__ = "quotas"
    __table_args__ = (
        CheckConstraint("scope IN ('user', 'guild', 'key')", name="scope"),
        UniqueConstraint("scope", "subject"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(200))  # a Discord user/guild id or an API key id
    chars_per_day: Mapped[int | None] = mapped_column(Integer)
    concurrent: Mapped[int | None] = mapped_column(Integer)  # generations running at once
    cooldown_s: Mapped[float | None] = mapped_column(Float)  # seconds between two requests
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageDaily(Base):
    """What one subject used on one UTC day."""

    __tablename__ = "usage_daily"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # "YYYY-MM-DD", UTC
    chars: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    last_request_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Process(Base):
    """A serving process sharing the database; its heartbeat says it is still alive."""

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "host:pid:random"
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class QuotaSlot(Base):
    """One admitted, unfinished request of one subject: a concurrency slot plus its reserved characters.

    Owned by a process: the slots of a process that stopped heartbeating no longer count.
    """

    __tablename__ = "quota_slots"
    __table_args__ = (
        Index("ix_quota_slots_scope_subject", "scope", "subject"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200), index=True)  # processes.id (no FK: a reaped owner may return)
    day: Mapped[str] = mapped_column(String(10))  # the UTC day the characters are reserved on
    reserved: Mapped[int] = mapped_column(Integer)  # characters held back from the daily quota
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Cooldown(Base):
    """When a subject's last request was admitted, across days (checked and stamped in one write)."""

    __tablename__ = "cooldowns"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_request_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RateWindow(Base):
    """Requests of one subject in one fixed minute (minutes since the epoch): shared rate limits."""

    __tablename__ = "rate_windows"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)


class ApiKey(Base):
    """An HTTP API key: only its sha256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it in lists
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Preset(Base):
    """Named sampling settings of one owner (a front end and its user key), or global (owner ``*``/``*``)."""

    __tablename__ = "presets"
    __table_args__ = (
        UniqueConstraint("owner_frontend", "owner_key", "name", name="uq_presets_owner_name"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_frontend: Mapped[str] = mapped_column(String(16))  # api / discord / repl, or "*" for a global preset
    owner_key: Mapped[str] = mapped_column(String(64))  # API key id, Discord user id, local user, or "*"
    name: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # genbot.presets.PresetParams, validated both ways
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MaintenanceRun(Base):
    """When a periodic chore (the daily prune) last ran; claiming it is one conditional write."""

    __tablename__ = "maintenance_runs"

    task: Mapped[str] = mapped_column(String(32), primary_key=True)  # "prune"
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(200))  # the process that ran it last
