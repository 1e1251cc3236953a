"""Indexes for the reads that grew with the tables they read.

Rollout installs are kept for good, and a batch's installs are read when it bakes and when
it is judged: without an index on ``batch`` each of those reads scanned every install of
every rollout ever run, a cost that grew all year. The hourly prune looked for finished
work and operations older than 30 days by scanning all of them; ``(state, updated)`` on
``agent_work`` (which also serves every lookup by state) and ``ended`` on
``arm_operations`` make that a range read.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index installs by batch, finished work by age, and operations by their end."""
    op.create_index(op.f("ix_rollout_installs_batch"), "rollout_installs", ["batch"])
    op.drop_index(op.f("ix_agent_work_state"), table_name="agent_work")
    op.create_index("ix_agent_work_state_updated", "agent_work", ["state", "updated"])
    op.create_index(op.f("ix_arm_operations_ended"), "arm_operations", ["ended"])


def downgrade() -> None:
    """The indexes as they were."""
    op.drop_index(op.f("ix_arm_operations_ended"), table_name="arm_operations")
    op.drop_index("ix_agent_work_state_updated", table_name="agent_work")
    op.create_index(op.f("ix_agent_work_state"), "agent_work", ["state"])
    op.drop_index(op.f("ix_rollout_installs_batch"), table_name="rollout_installs")
