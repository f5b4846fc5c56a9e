"""Create the jobs, job_events, schedules and schedule_firings tables.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

``jobs``: durable background jobs (fine-tunes) with their lease, attempts, progress and outcome;
workers claim them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). ``job_events``: each job's log
(trainer JSON lines, worker messages, stderr), bounded per job by the worker. ``schedules``: cron
schedules that queue retrain jobs. ``schedule_firings``: one row per due time of a schedule; its
primary key (schedule_id, fire_time) makes one firing create exactly one job even when two
schedulers race.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables and their indexes (schedules first: jobs refer to them)."""
    _create_schedules()
    _create_jobs()
    _create_job_events()
    _create_schedule_firings()


def downgrade() -> None:
    """Drop the four tables (job folders in the data folder are left alone)."""
    op.drop_table("schedule_firings")
    op.drop_index(op.f("ix_job_events_job_id"), table_name="job_events")
    op.drop_table("job_events")
    for column in ("status", "model", "created_at"):
        op.drop_index(op.f(f"ix_jobs_{column}"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_index(op.f("ix_schedules_next_run_at"), table_name="schedules")
    op.drop_table("schedules")


def _create_schedules() -> None:
    """One row per cron schedule."""
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("corpus", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("job_args", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_schedules_next_run_at"), "schedules", ["next_run_at"])


def _create_jobs() -> None:
    """One row per job."""
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("result_version", sa.Integer(), nullable=True),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("corpus", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name=op.f("fk_jobs_schedule_id_schedules"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sqlite_autoincrement=True,
    )
    for column in ("created_at", "model", "status"):
        op.create_index(op.f(f"ix_jobs_{column}"), "jobs", [column])


def _create_job_events() -> None:
    """One row per log line of a job."""
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_job_events_job_id"), "job_events", ["job_id"])


def _create_schedule_firings() -> None:
    """One row per due time of a schedule: (schedule_id, fire_time) is the primary key."""
    op.create_table(
        "schedule_firings",
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_firings_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_schedule_firings_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("schedule_id", "fire_time", name=op.f("pk_schedule_firings")),
    )
