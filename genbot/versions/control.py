"""``Versions``: what the service offers about model versions (``service.versions``)."""

from __future__ import annotations

import asyncio
import builtins
from pathlib import Path

from genbot.config import Settings
from genbot.networks.checkpoint import load_model
from genbot.storage.db import Database
from genbot.versions import own, store
from genbot.versions.store import ModelVersionRow
from genbot.versions.watcher import rollback_target, seed_bundled_version


class Versions:
    """List a model's versions, activate one, roll back, add/remove/export own models; servers pick changes up live."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings

    async def list(self, model: str) -> builtins.list[ModelVersionRow]:
        """Every recorded version of ``model``, oldest first (a bundled model is version 1)."""
        await seed_bundled_version(self._db, self._settings, model)
        return await store.list_versions(self._db, model)

    async def activate(self, model: str, version: int) -> ModelVersionRow:
        """Make ``version`` the active one, after checking its folder loads; servers pick it up live."""
        await seed_bundled_version(self._db, self._settings, model)
        target = await store.get_version(self._db, model, version)
        await _check_loads(target)
        return await store.activate_version(self._db, model, version)

    async def rollback(self, model: str) -> ModelVersionRow:
        """Activate the version the active one replaced (InvalidRequest if there is none)."""
        await seed_bundled_version(self._db, self._settings, model)
        target = await rollback_target(self._db, model)
        await _check_loads(target)
        return await store.activate_version(self._db, model, target.version)

    # ----- models of your own (genbot/versions/own.py) -----

    async def add_model(self, name: str, folder: Path, *, description: str | None = None) -> ModelVersionRow:
        """Register a folder ``genbot train`` wrote as active version 1 of a new model (served by every front end)."""
        return await own.add_model(self._db, self._settings, name, folder, description=description)

    async def remove_model(self, name: str) -> builtins.list[ModelVersionRow]:
        """Forget a model that is not bundled (every version, and its folders under data_dir/models)."""
        return await own.remove_model(self._db, self._settings, name)

    async def export_model(self, name: str, target: Path, *, version: int | None = None) -> Path:
        """Write a model version (default: the active one) as a plugin folder another genbot loads."""
        return await own.export_model(self._db, self._settings, name, target, version=version)


async def _check_loads(version: ModelVersionRow) -> None:
    """Refuse to activate a version whose folder does not load (CheckpointError says why)."""
    await asyncio.to_thread(load_model, Path(version.path))
