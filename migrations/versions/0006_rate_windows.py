"""Create the rate_windows table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

``rate_windows``: requests counted per (scope, subject) in fixed one-minute windows, so a
per-key rate limit holds across every API replica sharing the database. Old windows are pruned
as new ones open.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "rate_windows",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject", "window", name=op.f("pk_rate_windows")),
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("rate_windows")
