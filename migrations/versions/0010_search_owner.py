"""The SQLite search index knows each row's owner, so one user's search looks at that user's rows only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

SQLite: ``generations_fts`` gains an ``owner`` column holding one token for the row's user
(``'u' || lower(hex(user_id)) || '0'``) and one for its API key (``'k' …``), read from the view
``generations_fts_source``; the triggers write it and also re-index a row whose owner changes.
A search for one user's rows adds ``owner : "u…0"`` to its MATCH, so FTS5 intersects the word
lists with that user's instead of ranking every user's matches (``genbot.storage.search``).
The index is rebuilt from the stored rows; the downgrade puts back revision 0009's. PostgreSQL:
nothing changes (its search starts from the user's rows already).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROP = [
    "DROP TRIGGER IF EXISTS generations_fts_update",
    "DROP TRIGGER IF EXISTS generations_fts_delete",
    "DROP TRIGGER IF EXISTS generations_fts_insert",
    "DROP TABLE IF EXISTS generations_fts",
]
# hex(NULL) is '', so a missing owner is spelled out as no token at all.
OWNER = (
    "trim(iif({row}user_id IS NULL, '', 'u' || lower(hex({row}user_id)) || '0') || ' ' ||"
    " iif({row}api_key_id IS NULL, '', 'k' || lower(hex({row}api_key_id)) || '0'))"
)
UP = [
    *DROP,
    "DROP VIEW IF EXISTS generations_fts_source",
    f"CREATE VIEW generations_fts_source AS SELECT id, prompt, output, {OWNER.format(row='')} AS owner"
    " FROM generations",
    # External content read from the view: a rebuild (and FTS5's integrity check) sees the owner.
    """CREATE VIRTUAL TABLE generations_fts USING fts5(
        prompt, output, owner, content='generations_fts_source', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts(rowid, prompt, output, owner)
        VALUES (new.id, new.prompt, new.output, {OWNER.format(row="new.")});
    END""",
    f"""CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, output, owner)
        VALUES ('delete', old.id, old.prompt, old.output, {OWNER.format(row="old.")});
    END""",
    f"""CREATE TRIGGER generations_fts_update AFTER UPDATE OF prompt, output, user_id, api_key_id ON generations
    BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, output, owner)
        VALUES ('delete', old.id, old.prompt, old.output, {OWNER.format(row="old.")});
        INSERT INTO generations_fts(rowid, prompt, output, owner)
        VALUES (new.id, new.prompt, new.output, {OWNER.format(row="new.")});
    END""",
    "INSERT INTO generations_fts(generations_fts) VALUES ('rebuild')",
]
# Revision 0009's index, as it made it.
DOWN = [
    *DROP,
    "DROP VIEW IF EXISTS generations_fts_source",
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
    """CREATE TRIGGER generations_fts_update AFTER UPDATE OF prompt, output ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, output)
        VALUES ('delete', old.id, old.prompt, old.output);
        INSERT INTO generations_fts(rowid, prompt, output) VALUES (new.id, new.prompt, new.output);
    END""",
    "INSERT INTO generations_fts(generations_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    """Rebuild the SQLite search index with an owner column (nothing to do on PostgreSQL)."""
    if _is_sqlite():
        for statement in UP:
            op.execute(statement)


def downgrade() -> None:
    """Put back revision 0009's SQLite search index, without the owner column."""
    if _is_sqlite():
        for statement in DOWN:
            op.execute(statement)


def _is_sqlite() -> bool:
    # The migration context knows the dialect online and offline (``alembic upgrade --sql``).
    return op.get_context().dialect.name == "sqlite"
