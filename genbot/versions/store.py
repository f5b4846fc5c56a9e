"""Reading and writing model versions: numbering, the one active version per model, lineage.

Race safety: every function that numbers or activates versions of one model first serialises
on that model. SQLite already runs one writer at a time (``BEGIN IMMEDIATE``); on PostgreSQL a
transaction-scoped advisory lock keyed on the model name does it, so two workers finishing at
once get versions 4 and 5, never 4 twice. The partial unique index on ``model_versions`` backs
"exactly one active version" up in the database itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from genbot.errors import NotFound
from genbot.storage.db import Database
from genbot.storage.tables import ModelVersion, utcnow

# First key of the two-key advisory lock: keeps our locks apart from anyone else's.
_PG_VERSION_LOCK = 0x67626D76  # "gbmv"

# Decides, given the active version (or None) and a candidate, whether the candidate goes live.
ActivationRule = Callable[["ModelVersionRow | None", "ModelVersionRow"], bool]


@dataclass(frozen=True, kw_only=True)
class ModelVersionRow:
    """One version of a model, as the service and front ends see it."""

    id: int
    model: str
    version: int
    path: str  # the model folder load_model reads
    val_loss: float | None  # val_block, nats/char
    val_stateful: float | None
    parent_version: int | None
    corpus: str | None
    job_id: int | None
    created_at: datetime
    active: bool


async def register_version(
    db: Database,
    *,
    model: str,
    path: str,
    val_loss: float | None,
    val_stateful: float | None = None,
    parent_version: int | None = None,
    corpus: str | None = None,
    job_id: int | None = None,
) -> ModelVersionRow:
    """Record a new, inactive version numbered one above the model's highest."""
    async with db.write() as session:
        await _lock_model(db, session, model)
        highest = await session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model == model))
        row = ModelVersion(
            model=model,
            version=(highest or 0) + 1,
            path=path,
            val_loss=val_loss,
            val_stateful=val_stateful,
            parent_version=parent_version,
            corpus=corpus,
            job_id=job_id,
            created_at=utcnow(),
            active=False,
        )
        session.add(row)
        await session.flush()
        return _to_record(row)


async def seed_version(
    db: Database, *, model: str, path: str, val_loss: float | None, val_stateful: float | None = None
) -> ModelVersionRow | None:
    """Record ``path`` as active version 1 if the model has no versions yet; None if it has."""
    async with db.write() as session:
        await _lock_model(db, session, model)
        if await session.scalar(select(func.count()).where(ModelVersion.model == model)):
            return None
        row = ModelVersion(
            model=model,
            version=1,
            path=path,
            val_loss=val_loss,
            val_stateful=val_stateful,
            created_at=utcnow(),
            active=True,
        )
        session.add(row)
        await session.flush()
        return _to_record(row)


async def active_version(db: Database, model: str) -> ModelVersionRow | None:
    """The version of ``model`` that should be serving, or None if none is active."""
    async with db.read() as session:
        row = await session.scalar(select(ModelVersion).where(ModelVersion.model == model, ModelVersion.active))
        return None if row is None else _to_record(row)


async def active_versions(db: Database) -> dict[str, ModelVersionRow]:
    """The active version of every model that has one, by model name (one query per poll)."""
    async with db.read() as session:
        rows = (await session.scalars(select(ModelVersion).where(ModelVersion.active))).all()
        return {row.model: _to_record(row) for row in rows}


async def activate_version(db: Database, model: str, version: int) -> ModelVersionRow:
    """Make ``version`` the one active version of ``model``; raises NotFound if it does not exist."""
    row, _ = await activate_if(db, model, version, lambda _active, _candidate: True)
    return row


async def activate_if(db: Database, model: str, version: int, rule: ActivationRule) -> tuple[ModelVersionRow, bool]:
    """Activate ``version`` if ``rule(active, candidate)`` holds, deciding and switching in one transaction."""
    async with db.write() as session:
        await _lock_model(db, session, model)
        candidate = await _get_row(session, model, version)
        current = await session.scalar(select(ModelVersion).where(ModelVersion.model == model, ModelVersion.active))
        if candidate.active or not rule(None if current is None else _to_record(current), _to_record(candidate)):
            return _to_record(candidate), False
        # Deactivate first: the partial unique index allows one active row at every moment.
        await session.execute(
            update(ModelVersion).where(ModelVersion.model == model, ModelVersion.active).values(active=False),
            execution_options={"synchronize_session": False},
        )
        await session.execute(
            update(ModelVersion).where(ModelVersion.id == candidate.id).values(active=True),
            execution_options={"synchronize_session": False},
        )
        return dataclasses.replace(_to_record(candidate), active=True), True


async def list_versions(db: Database, model: str) -> list[ModelVersionRow]:
    """Every version of ``model``, oldest first."""
    async with db.read() as session:
        query = select(ModelVersion).where(ModelVersion.model == model).order_by(ModelVersion.version)
        return [_to_record(row) for row in (await session.scalars(query)).all()]


async def get_version(db: Database, model: str, version: int) -> ModelVersionRow:
    """One version of a model; raises NotFound if there is none."""
    async with db.read() as session:
        return _to_record(await _get_row(session, model, version))


async def _get_row(session: AsyncSession, model: str, version: int) -> ModelVersion:
    """The ORM row of one version; raises NotFound."""
    row = await session.scalar(select(ModelVersion).where(ModelVersion.model == model, ModelVersion.version == version))
    if row is None:
        raise NotFound(f"model {model!r} has no version {version}")
    return row


async def _lock_model(db: Database, session: AsyncSession, model: str) -> None:
    """Serialise writers of one model's versions until the transaction ends (PostgreSQL only)."""
    if not db.is_sqlite:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:model))"), {"ns": _PG_VERSION_LOCK, "model": model}
        )


def _to_record(row: ModelVersion) -> ModelVersionRow:
    """A detached, immutable copy of an ORM row."""
    return ModelVersionRow(**{f.name: getattr(row, f.name) for f in dataclasses.fields(ModelVersionRow)})


async def delete_versions(db: Database, model: str) -> list[ModelVersionRow]:
    """Forget every version of ``model``; returns what was deleted (the folders are the caller's)."""
    async with db.write() as session:
        await _lock_model(db, session, model)
        rows = (await session.scalars(select(ModelVersion).where(ModelVersion.model == model))).all()
        gone = [_to_record(row) for row in rows]
        for row in rows:
            await session.delete(row)
        return gone
