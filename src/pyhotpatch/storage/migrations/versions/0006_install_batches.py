"""Rollout installs found by batch through an index.

Rollout installs are kept for good, and a batch's installs are read when it bakes and
when it is judged: without an index each of those reads scanned every install of every
rollout ever run, a cost that grew all year.

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
    """Index ``rollout_installs.batch``."""
    op.create_index(op.f("ix_rollout_installs_batch"), "rollout_installs", ["batch"])


def downgrade() -> None:
    """Drop the index again."""
    op.drop_index(op.f("ix_rollout_installs_batch"), table_name="rollout_installs")
