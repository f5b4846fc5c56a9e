"""Reading and writing presets. Like the other stores, one short transaction per function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from genbot.errors import InvalidRequest, NotFound
from genbot.presets.rules import MAX_PRESETS_PER_OWNER, PresetOwner, PresetParams, parse_params
from genbot.storage.db import Database
from genbot.storage.tables import Preset, utcnow


@dataclass(frozen=True, kw_only=True)
class PresetRow:
    """One stored preset, its parameters re-validated."""

    name: str
    owner: PresetOwner
    params: PresetParams
    created_at: datetime
    updated_at: datetime

    @property
    def is_global(self) -> bool:
        """A preset every user may load."""
        return self.owner.is_global

    def to_json(self) -> dict[str, Any]:
        """The preset as the HTTP API and ``genbot presets --json`` give it."""
        return {
            "name": self.name,
            "global": self.is_global,
            "params": self.params.model_dump(mode="json"),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


async def save(db: Database, owner: PresetOwner, name: str, params: PresetParams) -> PresetRow:
    """Create or replace ``owner``'s preset ``name``."""
    for _ in range(2):  # a concurrent first save of the same name wins the insert; replace it then
        try:
            return await _save_once(db, owner, name, params)
        except IntegrityError:
            continue
    raise InvalidRequest(f"preset {name!r} was being saved at the same time; try again")


async def _save_once(db: Database, owner: PresetOwner, name: str, params: PresetParams) -> PresetRow:
    now = utcnow()
    async with db.write() as session:
        row = await session.scalar(_where(select(Preset), owner, name))
        if row is None:
            count = await session.scalar(_where(select(func.count()).select_from(Preset), owner))
            if (count or 0) >= MAX_PRESETS_PER_OWNER:
                raise InvalidRequest(f"at most {MAX_PRESETS_PER_OWNER} presets each: delete one first")
            row = Preset(owner_frontend=owner.frontend, owner_key=owner.key, name=name, created_at=now)
            session.add(row)
        row.params = params.model_dump(mode="json")
        row.updated_at = now
        await session.flush()
        return _to_row(row)


async def get(db: Database, owner: PresetOwner, name: str) -> PresetRow | None:
    """``owner``'s preset ``name``, or None."""
    async with db.read() as session:
        row = await session.scalar(_where(select(Preset), owner, name))
        return _to_row(row) if row is not None else None


async def list_for(db: Database, owner: PresetOwner) -> list[PresetRow]:
    """``owner``'s presets by name."""
    async with db.read() as session:
        rows = await session.scalars(_where(select(Preset), owner).order_by(Preset.name))
        return [_to_row(row) for row in rows]


async def remove(db: Database, owner: PresetOwner, name: str) -> None:
    """Delete ``owner``'s preset ``name`` (NotFound if there is none)."""
    async with db.write() as session:
        result = await session.execute(_where(delete(Preset), owner, name))
        if not getattr(result, "rowcount", 0):
            raise NotFound(f"no preset named {name!r}")


def _where(query: Any, owner: PresetOwner, name: str | None = None) -> Any:
    conditions = [Preset.owner_frontend == owner.frontend, Preset.owner_key == owner.key]
    if name is not None:
        conditions.append(Preset.name == name)
    return query.where(*conditions)


def _to_row(row: Preset) -> PresetRow:
    return PresetRow(
        name=row.name,
        owner=PresetOwner(row.owner_frontend, row.owner_key),
        params=parse_params(row.params, f"stored preset {row.name!r}"),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
