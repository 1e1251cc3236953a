"""The orchestrator: the fleet's placement facts, rollouts, their batches and installs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the orchestrator's tables and the columns it reads on machines and releases."""
    op.create_table(
        "fleet_machines",
        sa.Column("id", sa.String(600), nullable=False),
        sa.Column("subscription", sa.String(36), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(8), nullable=True),
        sa.Column("availability_set", sa.String(600), nullable=True),
        sa.Column("update_domain", sa.Integer(), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("window", sa.String(16), nullable=True),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("os_type", sa.String(16), nullable=False),
        sa.Column("patch_mode", sa.String(32), nullable=True),
        sa.Column("assessment_mode", sa.String(32), nullable=True),
        sa.Column("hotpatch", sa.Boolean(), nullable=False),
        sa.Column("product", sa.String(100), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_machines")),
    )
    for column in ("subscription", "region", "availability_set", "product"):
        op.create_index(op.f(f"ix_fleet_machines_{column}"), "fleet_machines", [column])
    op.create_index("ix_fleet_machines_plan", "fleet_machines", ["product", "patch_mode", "region"])
    with op.batch_alter_table("agent_machines") as batch:
        batch.add_column(sa.Column("baseline", sa.String(16), nullable=True))
        batch.add_column(sa.Column("hotpatch", sa.String(16), nullable=True))
        batch.add_column(sa.Column("rejoin_after", sa.String(16), nullable=True))
        batch.add_column(sa.Column("next_assessment", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("upgrade_requested", sa.DateTime(), nullable=True))
        batch.create_index(op.f("ix_agent_machines_next_assessment"), ["next_assessment"])
    with op.batch_alter_table("catalog_releases") as batch:
        batch.add_column(sa.Column("halted", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("halt_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("agent_work") as batch:
        batch.add_column(sa.Column("trigger", sa.String(16), nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("release", sa.String(16), nullable=False),
        sa.Column("product", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("phases", sa.JSON(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("published", sa.DateTime(), nullable=False),
        sa.Column("deadline", sa.DateTime(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint("release", name=op.f("uq_rollouts_release")),
    )
    op.create_index(op.f("ix_rollouts_state"), "rollouts", ["state"])
    op.create_table(
        "rollout_regions",
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("ring", sa.String(16), nullable=False),
        sa.Column("soak_until", sa.DateTime(), nullable=True),
        sa.Column("done", sa.DateTime(), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("rollout", "region", name=op.f("pk_rollout_regions")),
    )
    op.create_table(
        "rollout_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("ring", sa.String(16), nullable=False),
        sa.Column("zone", sa.String(8), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("unhealthy", sa.Integer(), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("installed", sa.DateTime(), nullable=True),
        sa.Column("judged", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_batches")),
    )
    op.create_index(op.f("ix_rollout_batches_rollout"), "rollout_batches", ["rollout"])
    op.create_index(op.f("ix_rollout_batches_state"), "rollout_batches", ["state"])
    op.create_table(
        "rollout_installs",
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.Column("machine", sa.String(600), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("work", sa.Integer(), nullable=True),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("ended", sa.DateTime(), nullable=True),
        sa.Column("retry_after", sa.DateTime(), nullable=True),
        sa.Column("healthy", sa.Boolean(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("rollout", "machine", name=op.f("pk_rollout_installs")),
    )
    op.create_index(op.f("ix_rollout_installs_machine"), "rollout_installs", ["machine"])
    op.create_index(op.f("ix_rollout_installs_state"), "rollout_installs", ["state"])
    op.create_table(
        "orchestrator_notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("rollout", sa.Integer(), nullable=True),
        sa.Column("release", sa.String(16), nullable=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestrator_notices")),
    )
    op.create_index(op.f("ix_orchestrator_notices_at"), "orchestrator_notices", ["at"])


def downgrade() -> None:
    """Drop them."""
    for table in (
        "orchestrator_notices",
        "rollout_installs",
        "rollout_batches",
        "rollout_regions",
        "rollouts",
        "fleet_machines",
    ):
        op.drop_table(table)
    with op.batch_alter_table("agent_work") as batch:
        batch.drop_column("trigger")
    with op.batch_alter_table("catalog_releases") as batch:
        batch.drop_column("halt_reason")
        batch.drop_column("halted")
    with op.batch_alter_table("agent_machines") as batch:
        batch.drop_index(op.f("ix_agent_machines_next_assessment"))
        for column in ("upgrade_requested", "next_assessment", "rejoin_after", "hotpatch"):
            batch.drop_column(column)
        batch.drop_column("baseline")
