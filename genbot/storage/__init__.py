"""Storage: SQLAlchemy tables, repository functions and Alembic migrations.

Front ends never import this package (they go through the service); the service opens one
``Database`` for its lifetime and calls the repository functions with it. The migration helpers
are wrapped here so importing the package does not import Alembic (see ``schema.py``).
"""

from typing import Any

from genbot.storage.corpora import (
    CorpusRow,
    NewCorpus,
    add_corpus,
    find_corpus_by_sha,
    get_corpus,
    list_corpora,
    remove_corpus,
)
from genbot.storage.db import Database, create_engine, default_sqlite_url, is_sqlite
from genbot.storage.repository import (
    INTERRUPTED_ERROR,
    GenerationRow,
    NewGeneration,
    finish_generation,
    forget_user,
    get_generation,
    list_generations,
    mark_interrupted,
    start_generation,
    update_progress,
)
from genbot.storage.tables import CorpusKind, GenerationStatus
from genbot.storage.versions import (
    ModelVersionRow,
    activate_if,
    activate_version,
    active_version,
    active_versions,
    get_version,
    list_versions,
    register_version,
    seed_version,
)


def __getattr__(name: str) -> Any:
    """``current_revision``, ``head_revision``, ``upgrade``, ``upgrade_database``: loaded on first use."""
    if name in ("current_revision", "head_revision", "upgrade", "upgrade_database"):
        from genbot.storage import migrate

        return getattr(migrate, name)
    raise AttributeError(f"module 'genbot.storage' has no attribute {name!r}")


__all__ = [
    "INTERRUPTED_ERROR",
    "CorpusKind",
    "CorpusRow",
    "Database",
    "GenerationRow",
    "GenerationStatus",
    "ModelVersionRow",
    "NewCorpus",
    "NewGeneration",
    "activate_if",
    "activate_version",
    "active_version",
    "active_versions",
    "add_corpus",
    "create_engine",
    "current_revision",
    "default_sqlite_url",
    "find_corpus_by_sha",
    "finish_generation",
    "forget_user",
    "get_corpus",
    "get_generation",
    "get_version",
    "head_revision",
    "is_sqlite",
    "list_corpora",
    "list_generations",
    "list_versions",
    "mark_interrupted",
    "register_version",
    "remove_corpus",
    "seed_version",
    "start_generation",
    "update_progress",
    "upgrade",
    "upgrade_database",
]
