"""Catalog (products, releases, artifacts, settings), signed metadata and write locks.

Revision ID: 0001
Revises: none
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the catalog and signed-distribution tables."""
    op.create_table(
        "catalog_products",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=400), nullable=False),
        sa.Column("hotpatch", sa.Boolean(), nullable=False),
        sa.Column("upgrade_to", sa.String(length=100), nullable=True),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_catalog_products")),
    )
    op.create_table(
        "catalog_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_catalog_settings")),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )
    op.create_table(
        "tuf_metadata",
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("role", "version", name=op.f("pk_tuf_metadata")),
    )
    op.create_table(
        "catalog_releases",
        sa.Column("kb", sa.String(length=16), nullable=False),
        sa.Column("product", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=400), nullable=False),
        sa.Column("classifications", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("cves", sa.JSON(), nullable=False),
        sa.Column("published", sa.DateTime(), nullable=False),
        sa.Column("available", sa.DateTime(), nullable=False),
        sa.Column("baseline", sa.String(length=16), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("reboot_behavior", sa.String(length=32), nullable=False),
        sa.Column("replaces", sa.String(length=7), nullable=True),
        sa.Column("superseded_by", sa.String(length=16), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["product"],
            ["catalog_products.name"],
            name=op.f("fk_catalog_releases_product_catalog_products"),
        ),
        sa.PrimaryKeyConstraint("kb", name=op.f("pk_catalog_releases")),
    )
    with op.batch_alter_table("catalog_releases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_catalog_releases_product"), ["product"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_catalog_releases_published"), ["published"], unique=False
        )

    op.create_table(
        "catalog_artifacts",
        sa.Column("release", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("target_path", sa.String(length=600), nullable=False),
        sa.ForeignKeyConstraint(
            ["release"],
            ["catalog_releases.kb"],
            name=op.f("fk_catalog_artifacts_release_catalog_releases"),
        ),
        sa.PrimaryKeyConstraint("release", "name", name=op.f("pk_catalog_artifacts")),
        sa.UniqueConstraint("target_path", name=op.f("uq_catalog_artifacts_target_path")),
    )
    with op.batch_alter_table("catalog_artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_catalog_artifacts_sha256"), ["sha256"], unique=False)


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("catalog_artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_artifacts_sha256"))

    op.drop_table("catalog_artifacts")
    with op.batch_alter_table("catalog_releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_releases_published"))
        batch_op.drop_index(batch_op.f("ix_catalog_releases_product"))

    op.drop_table("catalog_releases")
    op.drop_table("tuf_metadata")
    op.drop_table("locks")
    op.drop_table("catalog_settings")
    op.drop_table("catalog_products")
