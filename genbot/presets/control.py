"""``Presets``: what the service offers about named presets (``service.presets``)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping

from genbot.errors import InvalidRequest, NotFound
from genbot.presets import store
from genbot.presets.rules import GLOBAL_OWNER, LAST_USED, PresetOwner, PresetParams, check_name, parse_params
from genbot.presets.store import PresetRow
from genbot.storage.db import Database


class Presets:
    """Save, load, list and delete presets of one owner, and the global ones admins make."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(
        self, owner: PresetOwner, name: str, params: PresetParams | Mapping[str, object], *, global_: bool = False
    ) -> PresetRow:
        """Create or replace a preset (``global_``: for everyone; the caller checks it is an admin)."""
        check_name(name)
        checked = parse_params(params, f"preset {name!r}")
        return await store.save(self._db, GLOBAL_OWNER if global_ else owner, name, checked)

    async def find(self, owner: PresetOwner, name: str) -> PresetRow:
        """``owner``'s preset ``name``, else the global one; NotFound if neither exists."""
        check_name(name)
        row = await store.get(self._db, owner, name) or await store.get(self._db, GLOBAL_OWNER, name)
        if row is None:
            raise NotFound(f"no preset named {name!r}")
        return row

    async def list(self, owner: PresetOwner) -> builtins.list[PresetRow]:
        """``owner``'s presets, then the global ones (genbot's reserved rows left out)."""
        rows = await store.list_for(self._db, owner) + await store.list_for(self._db, GLOBAL_OWNER)
        return [row for row in rows if not row.name.startswith("_")]

    async def delete(self, owner: PresetOwner, name: str, *, global_: bool = False) -> None:
        """Delete a preset of ``owner`` (``global_``: a global one; the caller checks it is an admin)."""
        check_name(name)
        await store.remove(self._db, GLOBAL_OWNER if global_ else owner, name)

    async def remember(self, owner: PresetOwner, params: PresetParams) -> None:
        """Keep ``params`` as ``owner``'s last used settings (the REPL restores them at start)."""
        await store.save(self._db, owner, LAST_USED, parse_params(params, "last used settings"))

    async def last_used(self, owner: PresetOwner) -> PresetParams | None:
        """``owner``'s last used settings, or None (none yet, or no longer valid)."""
        try:
            row = await store.get(self._db, owner, LAST_USED)
        except InvalidRequest:  # a row that fails re-validation is dropped, not fatal for starting the REPL
            return None
        return row.params if row else None
