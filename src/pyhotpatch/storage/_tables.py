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

# --- the ARM-compatible control plane ---------------------------------------------------------

subscriptions = Table(
    "arm_subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),  # a lowercase GUID
    Column("display_name", String(200), nullable=False),
    Column("state", String(32), nullable=False),
    Column("created", UTCDateTime, nullable=False),
)

#: bearer tokens, stored as sha256 digests; a token is scoped to one subscription (or none,
#: for administrators) and, for node agents, to one machine
tokens = Table(
    "auth_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("subscription", String(36), nullable=True, index=True),
    Column("machine", String(600), nullable=True, index=True),
    Column("created", UTCDateTime, nullable=False),
    Column("expires", UTCDateTime, nullable=True),
    Column("revoked", UTCDateTime, nullable=True),
)

audit = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("principal", String(36), nullable=True),
    Column("principal_name", String(200), nullable=True),
    Column("subscription", String(36), nullable=True, index=True),
    Column("method", String(10), nullable=False),
    Column("path", String(2000), nullable=False),
    Column("status", Integer, nullable=False),
    Column("request_id", String(36), nullable=False),
)

#: Microsoft.Features registrations; ``state`` moves on once ``due`` has passed
features = Table(
    "arm_features",
    metadata,
    Column("subscription", String(36), primary_key=True),
    Column("namespace", String(100), primary_key=True),  # lowercase
    Column("name", String(100), primary_key=True),  # lowercase
    Column("state", String(32), nullable=False),
    Column("due", UTCDateTime, nullable=True),
    Column("changed", UTCDateTime, nullable=False),
)

#: resource-provider registrations per subscription, moving on like features
providers = Table(
    "arm_providers",
    metadata,
    Column("subscription", String(36), primary_key=True),
    Column("namespace", String(100), primary_key=True),  # lowercase
    Column("state", String(32), nullable=False),
    Column("due", UTCDateTime, nullable=True),
    Column("changed", UTCDateTime, nullable=False),
)

#: every ARM resource (resource groups, availability sets, virtual machines) as its JSON model
resources = Table(
    "arm_resources",
    metadata,
    Column("id", String(600), primary_key=True),  # the full resource id, lowercase
    Column("subscription", String(36), nullable=False, index=True),
    Column("resource_group", String(90), nullable=True, index=True),  # lowercase
    Column(
        "type", String(200), nullable=False, index=True
    ),  # lowercase, e.g. microsoft.compute/virtualmachines
    Column("name", String(200), nullable=False),  # as the creator spelled it
    Column("body", JSON, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)

# --- machines, their agents and the work handed to them ---------------------------------------

#: one row per enrolled machine (a virtualMachines resource with a running agent)
machines = Table(
    "agent_machines",
    metadata,
    Column("resource_id", String(600), primary_key=True),  # lowercase VM id
    Column("subscription", String(36), nullable=False, index=True),
    Column("enrolled", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=True, index=True),
    Column("agent_version", String(64), nullable=True),
    Column("health", JSON, nullable=False),  # the agent's last health signal
    Column("reported", JSON, nullable=False),  # image, baseline, active hotpatch, transition
    Column("assessment", JSON, nullable=True),  # the last VirtualMachineAssessPatchesResult
    Column("installation", JSON, nullable=True),  # the last VirtualMachineInstallPatchesResult
)

#: ARM long-running operations (assessPatches, installPatches)
operations = Table(
    "arm_operations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subscription", String(36), nullable=False, index=True),
    Column("location", String(64), nullable=False),
    Column("resource_id", String(600), nullable=False, index=True),  # lowercase VM id
    Column("kind", String(32), nullable=False),  # assessPatches | installPatches
    Column("status", String(16), nullable=False),  # InProgress | Succeeded | Failed | Canceled
    Column("request", JSON, nullable=False),
    Column("output", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("started", UTCDateTime, nullable=False),
    Column("ended", UTCDateTime, nullable=True),
    Column("principal", String(36), nullable=True),
)

#: the durable queue of work for agents: leased, then reported done or failed
work_items = Table(
    "agent_work",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("machine", String(600), nullable=False, index=True),  # lowercase VM id
    Column("operation", String(36), nullable=True, index=True),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),  # queued | leased | done | failed
    Column("lease_until", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Column("result", JSON, nullable=True),
)

#: every assessment and installation a machine ran, kept for the 30-day history
patch_history = Table(
    "patch_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("machine", String(600), nullable=False, index=True),
    Column("operation", String(36), nullable=True),
    Column("kind", String(32), nullable=False),  # assessment | installation
    Column("started", UTCDateTime, nullable=False, index=True),
    Column("ended", UTCDateTime, nullable=True),
    Column("status", String(32), nullable=False),
    Column("result", JSON, nullable=False),
)
