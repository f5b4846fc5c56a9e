"""Reading and writing HTTP API keys (stored hashed: sha256 of the key, never the key).

A key is ``gb_`` + 32 random URL-safe characters (192 bits), so a plain sha256 is enough: a
slow password hash only matters for guessable secrets. Like the other storage modules, every
function runs one short transaction and returns frozen dataclasses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from genbot.errors import InvalidRequest, NotFound
from genbot.storage.db import Database
from genbot.storage.tables import ApiKey, utcnow

KEY_PREFIX = "gb_"
PREFIX_CHARS = 10  # "gb_" + 7 characters: enough to tell keys apart in a list, useless to an attacker
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, kw_only=True)
class ApiKeyRow:
    """One stored key, without its secret."""

    id: int
    name: str
    prefix: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key may still be used."""
        return self.revoked_at is None


def hash_key(key: str) -> str:
    """The sha256 hex digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def create_key(db: Database, name: str, *, admin: bool = False) -> tuple[ApiKeyRow, str]:
    """Store a new key named ``name``; returns its row and the key itself (shown once)."""
    if not _NAME.match(name):
        raise InvalidRequest(f"key names are 1-64 of A-Z a-z 0-9 _ . -, got {name!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:PREFIX_CHARS], admin=admin, created_at=utcnow())
    try:
        async with db.write() as session:
            session.add(row)
            await session.flush()
            return _to_row(row), key
    except IntegrityError as e:
        raise InvalidRequest(f"an API key named {name!r} already exists") from e


async def list_keys(db: Database) -> list[ApiKeyRow]:
    """Every key, revoked ones included, by name."""
    async with db.read() as session:
        return [_to_row(k) for k in await session.scalars(select(ApiKey).order_by(ApiKey.name))]


async def revoke_key(db: Database, name: str) -> ApiKeyRow:
    """Revoke the key named ``name`` (NotFound if there is none); revoking twice is harmless."""
    async with db.write() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.name == name))
        if row is None:
            raise NotFound(f"no API key named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _to_row(row)


async def find_key(db: Database, key: str) -> ApiKeyRow | None:
    """The active key matching ``key``, or None (unknown or revoked)."""
    query = select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    async with db.read() as session:
        row = await session.scalar(query)
        return _to_row(row) if row is not None else None


async def touch_key(db: Database, key_id: int, when: datetime | None = None) -> None:
    """Record that a key was used (callers throttle this: it is a write)."""
    async with db.write() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when or utcnow()))


def _to_row(row: ApiKey) -> ApiKeyRow:
    """A detached copy of an ORM row."""
    return ApiKeyRow(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        admin=row.admin,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
