"""``service.archive``: export, import and prune the stored generations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from genbot.config import Settings
from genbot.history.store import PruneReport, prune, store_import
from genbot.history.transfer import ImportReport, parse_export
from genbot.storage import repository
from genbot.storage.db import Database
from genbot.storage.repository import MAX_LIST_LIMIT, GenerationRow
from genbot.storage.tables import utcnow


class Archive:
    """The history as a whole: every row of a filter page by page, imports, the prune."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings

    async def rows(self, *, limit: int | None = None, **filters: Any) -> AsyncIterator[GenerationRow]:
        """Every generation matching ``filters`` (as ``service.history`` takes them), up to ``limit``."""
        offset = 0
        while limit is None or offset < limit:
            size = MAX_LIST_LIMIT if limit is None else min(MAX_LIST_LIMIT, limit - offset)
            page = await repository.list_generations(self._db, limit=size, offset=offset, **filters)
            for row in page:
                yield row
            if len(page) < size:
                return
            offset += size

    async def import_export(self, data: bytes, *, user_id: str | None) -> ImportReport:
        """Store a JSON-lines export as ``user_id``'s generations (all lines or none; duplicates skipped)."""
        return await store_import(self._db, parse_export(data), user_id)

    async def prune(
        self,
        *,
        keep_days: int | None = None,
        keep_rows: int | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> PruneReport | None:
        """Prune now with ``[storage]``'s limits (or these); ``dry_run`` only counts; None if both are off."""
        days = self._settings.storage.keep_days if keep_days is None else keep_days
        rows = self._settings.storage.keep_rows if keep_rows is None else keep_rows
        if not days and not rows:
            return None
        return await prune(self._db, now=now or utcnow(), keep_days=days, keep_rows=rows, dry_run=dry_run)
