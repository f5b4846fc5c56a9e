"""Create the generations table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

One row per generation request: prompt, output, sampling parameters, timings, status, and who
asked from where. Timestamps are UTC (timezone-aware on PostgreSQL, naive-UTC text on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``generations`` and its indexes."""
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("max_length", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("stop", sa.JSON(), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("time_to_first_char_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("frontend", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("guild_id", sa.String(length=64), nullable=True),
        sa.Column("channel_id", sa.String(length=64), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'cancelled', 'failed')", name=op.f("ck_generations_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
        sqlite_autoincrement=True,
    )
    for column in ("created_at", "model", "user_id", "status"):
        op.create_index(op.f(f"ix_generations_{column}"), "generations", [column])


def downgrade() -> None:
    """Drop ``generations`` (and with it every stored generation)."""
    for column in ("status", "user_id", "model", "created_at"):
        op.drop_index(op.f(f"ix_generations_{column}"), table_name="generations")
    op.drop_table("generations")
