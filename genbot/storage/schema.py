"""Is a database already at the newest migration? Answered without importing Alembic.

Alembic costs a serving process about 11 MB of resident memory for the rest of its life, yet a
database that was migrated before needs none of it. The newest revision is read from the
``revision`` / ``down_revision`` lines of ``migrations/versions/*.py`` (the one nothing points
back to) and compared with the ``alembic_version`` table; only a mismatch loads Alembic.
"""

from __future__ import annotations

import re
from functools import cache

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from genbot.resources import migrations_dir

MIGRATIONS_DIR = migrations_dir()
_REVISION = re.compile(r'^revision(?::[^=]*)?=\s*["\']([^"\']+)["\']', re.M)
_DOWN = re.compile(r'^down_revision(?::[^=]*)?=\s*["\']([^"\']+)["\']', re.M)


@cache
def newest_revision() -> str | None:
    """The head of the migration chain, or None if it is not a single plain chain (ask Alembic)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revisions.update(_REVISION.findall(source))
        parents.update(_DOWN.findall(source))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def stored_revision(engine: AsyncEngine) -> str | None:
    """The revision recorded in the database; None for a blank one."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    except DBAPIError:
        return None  # no alembic_version table yet
    return rows[0] if len(rows) == 1 else None


async def is_current(engine: AsyncEngine) -> bool:
    """Whether the database is known to be at the newest revision."""
    head = newest_revision()
    return head is not None and await stored_revision(engine) == head
