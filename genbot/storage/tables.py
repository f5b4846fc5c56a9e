"""ORM tables (SQLAlchemy 2.x typed mappings).

Only the storage package imports these classes; front ends and the service see the plain
records in ``genbot.storage.repository``. Every schema change here needs a new, hand-written
revision in ``migrations/versions`` (append-only); ``tests/test_storage.py`` checks that the
migrations and these classes agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
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
    """One generation request: prompt, output, sampling parameters, timings, who and where."""

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
