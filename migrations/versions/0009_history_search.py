"""Full-text search over generations, and the record of periodic chores (the daily prune).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

SQLite: ``generations_fts``, an FTS5 table over ``generations(prompt, output)`` that stores no
copy of the text (external content), kept in step by insert, update and delete triggers; the
rows already stored are indexed by a rebuild. PostgreSQL: ``generations.search``, a stored
``tsvector`` generated from the prompt and the output, with a GIN index. Both are invisible to
the ORM (``genbot.storage.search`` says which names autogenerate leaves alone).

``maintenance_runs``: when each periodic chore last ran and which process ran it, so several
processes on one database run the daily prune once between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# porter: "loves" finds "love", as PostgreSQL's english configuration does; remove_diacritics 2:
# "café" finds "cafe".
SQLITE_UP = [
    """CREATE VIRTUAL TABLE generations_fts USING fts5(
        prompt, output, content='generations', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts(rowid, prompt, output) VALUES (new.id, new.prompt, new.output);
    END""",
    """CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, output)
        VALUES ('delete', old.id, old.prompt, old.output);
    END""",
    # A running row gets its output while it streams and at the end: re-index on every change.
    """CREATE TRIGGER generations_fts_update AFTER UPDATE OF prompt, output ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, output)
        VALUES ('delete', old.id, old.prompt, old.output);
        INSERT INTO generations_fts(rowid, prompt, output) VALUES (new.id, new.prompt, new.output);
    END""",
    "INSERT INTO generations_fts(generations_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS generations_fts_update",
    "DROP TRIGGER IF EXISTS generations_fts_delete",
    "DROP TRIGGER IF EXISTS generations_fts_insert",
    "DROP TABLE IF EXISTS generations_fts",
]
POSTGRES_UP = [
    """ALTER TABLE generations ADD COLUMN search tsvector GENERATED ALWAYS AS (
        to_tsvector('english'::regconfig, coalesce(prompt, '') || ' ' || coalesce(output, ''))) STORED""",
    "CREATE INDEX ix_generations_search ON generations USING gin (search)",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_generations_search",
    "ALTER TABLE generations DROP COLUMN IF EXISTS search",
]


def upgrade() -> None:
    """Create the search index of the database's kind and the maintenance table."""
    for statement in SQLITE_UP if _is_sqlite() else POSTGRES_UP:
        op.execute(statement)
    runs = op.create_table(
        "maintenance_runs",
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("task", name=op.f("pk_maintenance_runs")),
    )
    # The row exists before any process claims it, so claiming is an UPDATE that only one wins.
    op.bulk_insert(runs, [{"task": "prune", "last_run_at": None, "owner": None}])


def downgrade() -> None:
    """Drop the maintenance table and the search index."""
    op.drop_table("maintenance_runs")
    for statement in SQLITE_DOWN if _is_sqlite() else POSTGRES_DOWN:
        op.execute(statement)


def _is_sqlite() -> bool:
    # The migration context knows the dialect online and offline (``alembic upgrade --sql``).
    return op.get_context().dialect.name == "sqlite"
