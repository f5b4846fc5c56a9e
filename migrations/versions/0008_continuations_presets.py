"""Continuations (generations.parent_id) and named presets of sampling settings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

``generations.parent_id``: the stored generation a continuation (or a new-seed repeat) came from,
so a chain of continuations can be listed as one thread. ``presets``: named settings (model,
temperature, top-k, top-p, length, stop, seed policy) per owner — a front end and its user key —
or global (owner ``*``/``*``, made by admins); one name per owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the parent link and create the presets table."""
    # SQLite rebuilds the table for the foreign key: keep AUTOINCREMENT (forgotten ids are never reused).
    with op.batch_alter_table("generations", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_generations_parent_id"), ["parent_id"])
        batch.create_foreign_key(
            batch.f("fk_generations_parent_id_generations"), "generations", ["parent_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "presets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_frontend", sa.String(length=16), nullable=False),
        sa.Column("owner_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presets")),
        sa.UniqueConstraint("owner_frontend", "owner_key", "name", name="uq_presets_owner_name"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop the presets table and the parent link."""
    op.drop_table("presets")
    with op.batch_alter_table("generations", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint(batch.f("fk_generations_parent_id_generations"), type_="foreignkey")
        batch.drop_index(batch.f("ix_generations_parent_id"))
        batch.drop_column("parent_id")
