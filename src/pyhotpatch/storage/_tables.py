"""Every table of the control plane's database, in one ``MetaData``.

One schema, one linear migration history (``migrations/``): the catalog, the
signed-distribution repository and, later, the ARM resources all live here, so a
single transaction can publish a release and sign the metadata that lists it.
Times are stored as naive UTC and read back as aware UTC (``UTCDateTime``), so
SQLite and PostgreSQL return the same values.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime`` column that round-trips the same on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store as naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Read back as aware UTC."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=timezone.utc)


products = Table(
    "catalog_products",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("title", String(400), nullable=False),
    Column("hotpatch", Boolean, nullable=False),
    Column("upgrade_to", String(100), nullable=True),
    Column("images", JSON, nullable=False),
)

releases = Table(
    "catalog_releases",
    metadata,
    Column("kb", String(16), primary_key=True),
    Column("product", String(100), ForeignKey("catalog_products.name"), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("title", String(400), nullable=False),
    Column("classifications", JSON, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("cves", JSON, nullable=False),
    Column("published", UTCDateTime, nullable=False, index=True),
    Column("available", UTCDateTime, nullable=False),
    Column("baseline", String(16), nullable=True),
    Column("sequence", Integer, nullable=False),
    Column("reboot_behavior", String(32), nullable=False),
    Column("replaces", String(7), nullable=True),
    Column("superseded_by", String(16), nullable=True),
    Column("notes", JSON, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)

artifacts = Table(
    "catalog_artifacts",
    metadata,
    Column("release", String(16), ForeignKey("catalog_releases.kb"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("target_path", String(600), nullable=False, unique=True),
)

settings = Table(
    "catalog_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
)

tuf_metadata = Table(
    "tuf_metadata",
    metadata,
    Column("role", String(32), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("expires", UTCDateTime, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)

#: one row per named lock; writers select theirs ``FOR UPDATE`` to run one at a time
locks = Table(
    "locks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", Text, nullable=True),
)
