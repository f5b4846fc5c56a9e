"""Create the corpora and model_versions tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

``corpora``: texts (or caption folders) an admin registered for fine-tuning, with the sha256
that detects re-adding the same content. ``model_versions``: every trained version of a model,
its validation loss and lineage, and which one is active (at most one per model, enforced by a
partial unique index on both SQLite and PostgreSQL). ``job_id`` has no foreign key: the jobs
table arrives in a later revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``corpora`` and ``model_versions`` with their constraints and indexes."""
    _create_corpora()
    _create_model_versions()


def downgrade() -> None:
    """Drop both tables (the corpus files in the data folder are left alone)."""
    op.drop_index(op.f("uq_model_versions_one_active"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_model"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_corpora_sha256"), table_name="corpora")
    op.drop_table("corpora")


def _create_corpora() -> None:
    """One row per registered corpus."""
    op.create_table(
        "corpora",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chars", sa.BigInteger(), nullable=False),
        sa.Column("charset", sa.Text(), nullable=False),
        sa.Column("licence", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('text', 'captions')", name=op.f("ck_corpora_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corpora")),
        sa.UniqueConstraint("name", name=op.f("uq_corpora_name")),
    )
    op.create_index(op.f("ix_corpora_sha256"), "corpora", ["sha256"])


def _create_model_versions() -> None:
    """One row per version of a model; (model, version) is unique."""
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("val_stateful", sa.Float(), nullable=True),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("corpus", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model", "version", name=op.f("uq_model_versions_model_version")),
    )
    op.create_index(op.f("ix_model_versions_model"), "model_versions", ["model"])
    # At most one active version per model, whatever the code above the database does.
    op.create_index(
        op.f("uq_model_versions_one_active"),
        "model_versions",
        ["model"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
