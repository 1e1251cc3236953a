"""Agents' presence in a narrow table of its own; upgrades due found by index.

Every heartbeat wrote ``last_seen`` into the wide ``agent_machines`` row (assessment and
installation documents included), and the orchestrator reads it for the whole fleet each
pass; ``agent_presence`` holds just that.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Move ``last_seen`` to ``agent_presence``; index ``upgrade_requested``."""
    op.create_table(
        "agent_presence",
        sa.Column("resource_id", sa.String(600), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", name=op.f("pk_agent_presence")),
    )
    op.execute(
        "INSERT INTO agent_presence (resource_id, last_seen) "
        "SELECT resource_id, last_seen FROM agent_machines WHERE last_seen IS NOT NULL"
    )
    with op.batch_alter_table("agent_machines") as batch:
        batch.drop_index(op.f("ix_agent_machines_last_seen"))
        batch.drop_column("last_seen")
        batch.create_index(op.f("ix_agent_machines_upgrade_requested"), ["upgrade_requested"])


def downgrade() -> None:
    """Put ``last_seen`` back on ``agent_machines``."""
    with op.batch_alter_table("agent_machines") as batch:
        batch.drop_index(op.f("ix_agent_machines_upgrade_requested"))
        batch.add_column(sa.Column("last_seen", sa.DateTime(), nullable=True))
        batch.create_index(op.f("ix_agent_machines_last_seen"), ["last_seen"])
    op.execute(
        "UPDATE agent_machines SET last_seen = (SELECT last_seen FROM agent_presence "
        "WHERE agent_presence.resource_id = agent_machines.resource_id)"
    )
    op.drop_table("agent_presence")
