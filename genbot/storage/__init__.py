"""Storage: SQLAlchemy tables, repository functions and Alembic migrations.

Front ends never import this package (they go through the service); the service opens one
``Database`` for its lifetime and calls the repository functions with it.
"""

from genbot.storage.db import Database, create_engine, default_sqlite_url, is_sqlite
from genbot.storage.migrate import current_revision, head_revision, upgrade, upgrade_database
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
from genbot.storage.tables import GenerationStatus

__all__ = [
    "INTERRUPTED_ERROR",
    "Database",
    "GenerationRow",
    "GenerationStatus",
    "NewGeneration",
    "create_engine",
    "current_revision",
    "default_sqlite_url",
    "finish_generation",
    "forget_user",
    "get_generation",
    "head_revision",
    "is_sqlite",
    "list_generations",
    "mark_interrupted",
    "start_generation",
    "update_progress",
    "upgrade",
    "upgrade_database",
]
