"""``Corpora``: what the service offers about corpora (``service.corpora``)."""

from __future__ import annotations

import builtins
from pathlib import Path

from genbot.config import Settings
from genbot.corpora import store
from genbot.corpora.files import add_corpus_files, remove_corpus_files
from genbot.corpora.store import CorpusRow
from genbot.storage.db import Database


class Corpora:
    """Add, list, show and remove the corpora fine-tunes train on."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings

    async def add(
        self, name: str, paths: builtins.list[Path], kind: str = "text", licence: str = "", description: str = ""
    ) -> CorpusRow:
        """Validate, copy and record a corpus (CorpusError, nothing stored, on any problem)."""
        return await add_corpus_files(self._db, self._settings, name, paths, kind, licence, description)

    async def list(self) -> builtins.list[CorpusRow]:
        """Every registered corpus, by name."""
        return await store.list_corpora(self._db)

    async def get(self, name: str) -> CorpusRow:
        """One corpus by name (NotFound if there is none)."""
        return await store.get_corpus(self._db, name)

    async def remove(self, name: str) -> CorpusRow:
        """Delete a corpus's record and files; returns what was removed."""
        return await remove_corpus_files(self._db, self._settings, name)
