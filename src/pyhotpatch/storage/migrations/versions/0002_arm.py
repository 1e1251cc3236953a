"""ARM resources, registrations, tokens and the audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables of the ARM-compatible control plane."""
    op.create_table(
        "arm_subscriptions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arm_subscriptions")),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("subscription", sa.String(36), nullable=True),
        sa.Column("machine", sa.String(600), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=True),
        sa.Column("revoked", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_auth_tokens_digest")),
    )
    op.create_index(op.f("ix_auth_tokens_subscription"), "auth_tokens", ["subscription"])
    op.create_index(op.f("ix_auth_tokens_machine"), "auth_tokens", ["machine"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("principal", sa.String(36), nullable=True),
        sa.Column("principal_name", sa.String(200), nullable=True),
        sa.Column("subscription", sa.String(36), nullable=True),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(2000), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_subscription"), "audit_log", ["subscription"])
    for table, keys in (
        ("arm_features", ("subscription", "namespace", "name")),
        ("arm_providers", ("subscription", "namespace")),
    ):
        columns = [
            sa.Column("subscription", sa.String(36), nullable=False),
            sa.Column("namespace", sa.String(100), nullable=False),
        ]
        if "name" in keys:
            columns.append(sa.Column("name", sa.String(100), nullable=False))
        op.create_table(
            table,
            *columns,
            sa.Column("state", sa.String(32), nullable=False),
            sa.Column("due", sa.DateTime(), nullable=True),
            sa.Column("changed", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint(*keys, name=op.f(f"pk_{table}")),
        )
    op.create_table(
        "arm_resources",
        sa.Column("id", sa.String(600), nullable=False),
        sa.Column("subscription", sa.String(36), nullable=False),
        sa.Column("resource_group", sa.String(90), nullable=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arm_resources")),
    )
    for column in ("subscription", "resource_group", "type"):
        op.create_index(op.f(f"ix_arm_resources_{column}"), "arm_resources", [column])


def downgrade() -> None:
    """Drop them."""
    for table in (
        "arm_resources",
        "arm_providers",
        "arm_features",
        "audit_log",
        "auth_tokens",
        "arm_subscriptions",
    ):
        op.drop_table(table)
