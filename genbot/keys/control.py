"""``Keys``: what the service offers about HTTP API keys (``service.keys``)."""

from __future__ import annotations

import builtins

from genbot.keys import store
from genbot.keys.store import ApiKeyRow
from genbot.storage.db import Database


class Keys:
    """Create, list and revoke API keys; authenticate a request's key and note its use."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, *, admin: bool = False) -> tuple[ApiKeyRow, str]:
        """Store a new API key; returns its row and the key itself (shown once, stored hashed)."""
        return await store.create_key(self._db, name, admin=admin)

    async def list(self) -> builtins.list[ApiKeyRow]:
        """Every API key (without secrets), revoked ones included."""
        return await store.list_keys(self._db)

    async def revoke(self, name: str) -> ApiKeyRow:
        """Revoke an API key by name (NotFound if there is none)."""
        return await store.revoke_key(self._db, name)

    async def authenticate(self, key: str) -> ApiKeyRow | None:
        """The active API key matching ``key``, or None."""
        return await store.find_key(self._db, key)

    async def touch(self, key_id: int) -> None:
        """Record that an API key was just used."""
        await store.touch_key(self._db, key_id)
