"""Machines, long-running operations, the agents' work queue and patch history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables that hand work to agents and keep what they report."""
    op.create_table(
        "agent_machines",
        sa.Column("resource_id", sa.String(600), nullable=False),
        sa.Column("subscription", sa.String(36), nullable=False),
        sa.Column("enrolled", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=True),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.Column("health", sa.JSON(), nullable=False),
        sa.Column("reported", sa.JSON(), nullable=False),
        sa.Column("assessment", sa.JSON(), nullable=True),
        sa.Column("installation", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("resource_id", name=op.f("pk_agent_machines")),
    )
    op.create_index(op.f("ix_agent_machines_subscription"), "agent_machines", ["subscription"])
    op.create_index(op.f("ix_agent_machines_last_seen"), "agent_machines", ["last_seen"])
    op.create_table(
        "arm_operations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("subscription", sa.String(36), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(600), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("ended", sa.DateTime(), nullable=True),
        sa.Column("principal", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arm_operations")),
    )
    op.create_index(op.f("ix_arm_operations_subscription"), "arm_operations", ["subscription"])
    op.create_index(op.f("ix_arm_operations_resource_id"), "arm_operations", ["resource_id"])
    op.create_table(
        "agent_work",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine", sa.String(600), nullable=False),
        sa.Column("operation", sa.String(36), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_work")),
    )
    for column in ("machine", "operation", "state"):
        op.create_index(op.f(f"ix_agent_work_{column}"), "agent_work", [column])
    op.create_table(
        "patch_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine", sa.String(600), nullable=False),
        sa.Column("operation", sa.String(36), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("ended", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patch_history")),
    )
    op.create_index(op.f("ix_patch_history_machine"), "patch_history", ["machine"])
    op.create_index(op.f("ix_patch_history_started"), "patch_history", ["started"])


def downgrade() -> None:
    """Drop them."""
    for table in ("patch_history", "agent_work", "arm_operations", "agent_machines"):
        op.drop_table(table)
