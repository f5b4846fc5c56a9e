"""Processes with heartbeats, quota slots, cooldown stamps and generation owners.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

``processes``: each serving process's id and heartbeat. ``quota_slots``: one row per admitted,
unfinished request and subject (the concurrency count and the characters reserved from the
daily quota), owned by a process, so several processes on one database enforce one limit and a
dead process's slots stop counting. ``cooldowns``: a subject's last admitted request, checked and
stamped in one conditional write. ``generations.owner``: the process writing a running row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three tables and add the owner column."""
    op.create_table(
        "processes",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    op.create_index(op.f("ix_processes_heartbeat_at"), "processes", ["heartbeat_at"])
    op.create_table(
        "quota_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_slots")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_quota_slots_scope_subject", "quota_slots", ["scope", "subject"])
    op.create_index(op.f("ix_quota_slots_owner"), "quota_slots", ["owner"])
    op.create_table(
        "cooldowns",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject", name=op.f("pk_cooldowns")),
    )
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=True))


def downgrade() -> None:
    """Drop the owner column and the three tables."""
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("owner")
    op.drop_table("cooldowns")
    op.drop_index(op.f("ix_quota_slots_owner"), table_name="quota_slots")
    op.drop_index("ix_quota_slots_scope_subject", table_name="quota_slots")
    op.drop_table("quota_slots")
    op.drop_index(op.f("ix_processes_heartbeat_at"), table_name="processes")
    op.drop_table("processes")
