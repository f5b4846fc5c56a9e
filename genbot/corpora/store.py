"""Reading and writing corpus records (the files themselves are handled by ``genbot.corpora.files``).

Like ``genbot.storage.repository``: every function takes an open ``Database`` first, runs one
short transaction and hands back frozen dataclasses, never ORM objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from genbot.errors import CorpusError, NotFound
from genbot.storage.db import Database
from genbot.storage.tables import Corpus, CorpusKind, utcnow

# Key of the transaction-scoped advisory lock that serialises corpus registrations on PostgreSQL.
_PG_CORPUS_LOCK = 0x6762636F  # "gbco"


@dataclass(frozen=True, kw_only=True)
class NewCorpus:
    """A corpus whose files are in place, about to be recorded."""

    name: str
    kind: CorpusKind | str
    path: str  # text: the input.txt file; captions: the folder
    sha256: str
    size_bytes: int
    chars: int
    charset: str  # the sorted distinct characters
    licence: str = ""
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class CorpusRow:
    """One registered corpus, as the service and front ends see it."""

    id: int
    name: str
    kind: CorpusKind
    path: str
    sha256: str
    size_bytes: int
    chars: int
    charset: str
    licence: str
    description: str
    created_at: datetime


async def add_corpus(db: Database, record: NewCorpus) -> CorpusRow:
    """Record a corpus; CorpusError if the name is taken or the same content is registered already.

    The content check and the insert share one serialised transaction, so two processes adding
    the same text under two names at once register it once (the name is backed by a unique
    constraint as well).
    """
    fields = dataclasses.asdict(record) | {"kind": CorpusKind(record.kind).value, "created_at": utcnow()}
    row = Corpus(**fields)
    try:
        async with db.write() as session:
            await _lock_corpora(db, session)
            existing = await session.scalar(select(Corpus).where(Corpus.sha256 == record.sha256).limit(1))
            if existing is not None:
                raise duplicate_content(existing.name, record.sha256)
            session.add(row)
            await session.flush()
            return _to_record(row)
    except IntegrityError as e:
        raise CorpusError(f"a corpus named {record.name!r} already exists") from e


def duplicate_content(name: str, sha256: str) -> CorpusError:
    """The error for content that is already registered as corpus ``name``."""
    return CorpusError(f"the same content is already registered as corpus {name!r} (sha256 {sha256[:12]}…)")


async def _lock_corpora(db: Database, session: AsyncSession) -> None:
    """Serialise corpus registrations until the transaction ends (SQLite's BEGIN IMMEDIATE already does)."""
    if not db.is_sqlite:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CORPUS_LOCK})


async def get_corpus(db: Database, name: str) -> CorpusRow:
    """The corpus called ``name``; raises NotFound if there is none."""
    found = await _one(db, select(Corpus).where(Corpus.name == name))
    if found is None:
        raise NotFound(f"no corpus named {name!r}")
    return found


async def find_corpus_by_sha(db: Database, sha256: str) -> CorpusRow | None:
    """A corpus with exactly this content hash, if one is registered (the oldest if several)."""
    return await _one(db, select(Corpus).where(Corpus.sha256 == sha256).order_by(Corpus.id).limit(1))


async def list_corpora(db: Database) -> list[CorpusRow]:
    """Every registered corpus, by name."""
    async with db.read() as session:
        rows = (await session.scalars(select(Corpus).order_by(Corpus.name))).all()
        return [_to_record(row) for row in rows]


async def remove_corpus(db: Database, name: str) -> CorpusRow:
    """Delete the record of ``name`` and return it; raises NotFound if there is none."""
    async with db.write() as session:
        row = await session.scalar(select(Corpus).where(Corpus.name == name))
        if row is None:
            raise NotFound(f"no corpus named {name!r}")
        record = _to_record(row)
        await session.execute(delete(Corpus).where(Corpus.id == row.id))
        return record


async def _one(db: Database, query: Select[Corpus]) -> CorpusRow | None:
    """The first row a SELECT finds, as a record."""
    async with db.read() as session:
        row = await session.scalar(query)
        return None if row is None else _to_record(row)


def _to_record(row: Corpus) -> CorpusRow:
    """A detached, immutable copy of an ORM row."""
    fields = {f.name: getattr(row, f.name) for f in dataclasses.fields(CorpusRow)}
    return CorpusRow(**fields | {"kind": CorpusKind(row.kind)})
