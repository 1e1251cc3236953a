"""Indexes for the orchestrator's reads of a rollout's installs by state, and of machines.

Judging a batch counts its rollout's ended installs by state, and a region look reads the
failed ones: with only the ``(rollout, machine)`` key each read walked every install of the
rollout. ``(rollout, state)`` makes both a range read. Region looks and assessment cycles
join every machine of a region to ``agent_machines`` for what it runs; that table's rows
hold the last assessment and installation documents, about two rows to a page, so the join
read a page per machine. ``(resource_id, baseline, hotpatch, rejoin_after)`` answers it
from the index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index installs by rollout and state, and what each machine runs by its id."""
    op.create_index("ix_rollout_installs_rollout_state", "rollout_installs", ["rollout", "state"])
    op.create_index(
        "ix_agent_machines_runs",
        "agent_machines",
        ["resource_id", "baseline", "hotpatch", "rejoin_after"],
    )


def downgrade() -> None:
    """The indexes as they were."""
    op.drop_index("ix_agent_machines_runs", table_name="agent_machines")
    op.drop_index("ix_rollout_installs_rollout_state", table_name="rollout_installs")
