"""Create the quotas and usage_daily tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

``quotas``: per-subject limits (characters per day, concurrent generations, cooldown) for a scope
('user', 'guild' or 'key'); one row per (scope, subject). ``usage_daily``: what each subject used
per UTC day (characters, requests, time of the last request), keyed by (scope, subject, day).
Generic over scope so the Discord bot (users, guilds) and the HTTP API (keys) share them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create both tables."""
    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("chars_per_day", sa.Integer(), nullable=True),
        sa.Column("concurrent", sa.Integer(), nullable=True),
        sa.Column("cooldown_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scope IN ('user', 'guild', 'key')", name=op.f("ck_quotas_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotas")),
        sa.UniqueConstraint("scope", "subject", name=op.f("uq_quotas_scope")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "usage_daily",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "subject", "day", name=op.f("pk_usage_daily")),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("usage_daily")
    op.drop_table("quotas")
