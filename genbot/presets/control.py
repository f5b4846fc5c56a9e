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
    """Save, load, list and delete presets of one owner, and the global ones admins make.

    An ``owner`` of None means the global presets alone (the admin's command line manages those).
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(
        self,
        owner: PresetOwner | None,
        name: str,
        params: PresetParams | Mapping[str, object],
        *,
        global_: bool = False,
    ) -> PresetRow:
        """Create or replace a preset (``global_``: for everyone; the caller checks it is an admin)."""
        check_name(name)
        checked = parse_params(params, f"preset {name!r}")
        return await store.save(self._db, _target(owner, global_), name, checked)

    async def find(self, owner: PresetOwner | None, name: str) -> PresetRow:
        """``owner``'s preset ``name``, else the global one; NotFound if neither exists."""
        check_name(name)
        row = await store.get(self._db, owner, name) if owner is not None else None
        row = row or await store.get(self._db, GLOBAL_OWNER, name)
        if row is None:
            raise NotFound(_missing(name, only_global=owner is None))
        return row

    async def list(self, owner: PresetOwner | None) -> builtins.list[PresetRow]:
        """``owner``'s presets, then the global ones (genbot's reserved rows left out)."""
        rows = await store.list_for(self._db, owner) if owner is not None else []
        rows += await store.list_for(self._db, GLOBAL_OWNER)
        return [row for row in rows if not row.name.startswith("_")]

    async def delete(self, owner: PresetOwner | None, name: str, *, global_: bool = False) -> None:
        """Delete a preset of ``owner`` (``global_``: a global one; the caller checks it is an admin)."""
        check_name(name)
        target = _target(owner, global_)
        try:
            await store.remove(self._db, target, name)
        except NotFound:
            raise NotFound(_missing(name, only_global=target.is_global)) from None

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


def _target(owner: PresetOwner | None, global_: bool) -> PresetOwner:
    """Whose preset a save or delete touches: the global ones for ``global_`` or no owner."""
    return GLOBAL_OWNER if global_ or owner is None else owner


def _missing(name: str, *, only_global: bool) -> str:
    """What a caller is told about a preset that is not there."""
    return f"no global preset named {name!r}" if only_global else f"no preset named {name!r}"
