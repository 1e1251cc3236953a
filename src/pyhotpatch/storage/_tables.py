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
    Index,
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
    Column("halted", UTCDateTime, nullable=True),  # when a rollout of it halted
    Column("halt_reason", Text, nullable=True),
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
    Column("agent_version", String(64), nullable=True),
    Column("health", JSON, nullable=False),  # the agent's last health signal
    Column("reported", JSON, nullable=False),  # image, baseline, active hotpatch, transition
    Column("assessment", JSON, nullable=True),  # the last VirtualMachineAssessPatchesResult
    Column("installation", JSON, nullable=True),  # the last VirtualMachineInstallPatchesResult
    Column("baseline", String(16), nullable=True),  # reported: the baseline it runs
    Column("hotpatch", String(16), nullable=True),  # reported: its active hotpatch
    Column("rejoin_after", String(16), nullable=True),  # hotpatch back on: waits for a newer one
    Column("next_assessment", UTCDateTime, nullable=True, index=True),
    # a stack upgrade waits for a window
    Column("upgrade_requested", UTCDateTime, nullable=True, index=True),
    # what each machine runs, read without its documents' pages (region looks join on it)
    Index("ix_agent_machines_runs", "resource_id", "baseline", "hotpatch", "rejoin_after"),
)

#: when each enrolled machine's agent was last heard from. Every heartbeat writes it, every
#: minute or so per machine, and the orchestrator reads it for the whole fleet each pass, so
#: it lives in a narrow table of its own rather than in the wide ``agent_machines`` row
presence = Table(
    "agent_presence",
    metadata,
    Column("resource_id", String(600), primary_key=True),  # lowercase VM id
    Column("last_seen", UTCDateTime, nullable=False),
)

#: ``agent_machines`` with each machine's ``last_seen`` (None when never heard from)
machines_seen = machines.outerjoin(presence, presence.c.resource_id == machines.c.resource_id)

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
    Column("ended", UTCDateTime, nullable=True, index=True),
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
    Column("state", String(16), nullable=False),  # queued | leased | done | failed
    Column("lease_until", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Column("result", JSON, nullable=True),
    Column("trigger", String(16), nullable=True),  # auto (the orchestrator) | on-demand
    # the work in a state, and (for pruning) finished work by age
    Index("ix_agent_work_state_updated", "state", "updated"),
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

# --- the orchestrator -------------------------------------------------------------------------

#: where each virtual machine sits and how it is patched, copied from its model on every write
#: so that planning reads narrow rows instead of whole models
fleet_machines = Table(
    "fleet_machines",
    metadata,
    Column("id", String(600), primary_key=True),  # lowercase VM id
    Column("subscription", String(36), nullable=False, index=True),
    Column("region", String(64), nullable=False, index=True),
    Column("zone", String(8), nullable=True),
    Column("availability_set", String(600), nullable=True, index=True),  # lowercase id
    Column("update_domain", Integer, nullable=True),
    Column("time_zone", String(64), nullable=False),  # IANA
    Column("window", String(16), nullable=True),  # its own off-peak window, e.g. 22:00-06:00
    Column("environment", String(16), nullable=False),  # DevTest | Production
    Column("os_type", String(16), nullable=False),  # Windows | Linux
    Column("patch_mode", String(32), nullable=True),
    Column("assessment_mode", String(32), nullable=True),
    Column("hotpatch", Boolean, nullable=False),  # enableHotpatching in the model
    Column("product", String(100), nullable=True, index=True),
    Column("created", UTCDateTime, nullable=False),
    Index("ix_fleet_machines_plan", "product", "patch_mode", "region"),
)

#: one automatic rollout per release
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("release", String(16), nullable=False, unique=True),
    Column("product", String(100), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("phases", JSON, nullable=False),  # lists of regions, in order
    Column("phase", Integer, nullable=False),  # the phase under way (0-based)
    Column("settings", JSON, nullable=False),  # the orchestrator settings it started with
    Column("batches", Integer, nullable=False),  # batches started so far
    Column("published", UTCDateTime, nullable=False),
    Column("deadline", UTCDateTime, nullable=False),  # every machine has it by then
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=True),  # why it halted, was cancelled or superseded
)

#: a rollout's progress in one region: its ring and when Production may start
rollout_regions = Table(
    "rollout_regions",
    metadata,
    Column("rollout", Integer, primary_key=True),
    Column("region", String(64), primary_key=True),
    Column("phase", Integer, nullable=False),
    Column("ring", String(16), nullable=False),  # DevTest | Production
    Column("soak_until", UTCDateTime, nullable=True),
    Column("done", UTCDateTime, nullable=True),
    Column("batches", Integer, nullable=False),
)

#: machines dispatched together, then judged together by the health gate
rollout_batches = Table(
    "rollout_batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", Integer, nullable=False, index=True),
    Column("number", Integer, nullable=False),  # 1 for the rollout's first batch
    Column("region", String(64), nullable=False),
    Column("ring", String(16), nullable=False),
    Column("zone", String(8), nullable=True),
    Column("state", String(16), nullable=False, index=True),
    Column("size", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("unhealthy", Integer, nullable=False),
    Column("started", UTCDateTime, nullable=False),
    Column("installed", UTCDateTime, nullable=True),  # every install of it ended
    Column("judged", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
)

#: one machine's install of a rollout's release, with its retries and revert
rollout_installs = Table(
    "rollout_installs",
    metadata,
    Column("rollout", Integer, primary_key=True),
    Column("machine", String(600), primary_key=True, index=True),
    Column("batch", Integer, nullable=True, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # hotpatch | baseline | restart
    Column("attempts", Integer, nullable=False),
    Column("work", Integer, nullable=True),  # the agent work item of the current attempt
    Column("started", UTCDateTime, nullable=False),
    Column("ended", UTCDateTime, nullable=True),
    Column("retry_after", UTCDateTime, nullable=True),
    Column("healthy", Boolean, nullable=True),
    Column("error", JSON, nullable=True),
    # a rollout's installs in a state: counted when a batch is judged, failed ones retried
    Index("ix_rollout_installs_rollout_state", "rollout", "state"),
)

#: what operators are told: halted rollouts, reverts that could not be queued
notices = Table(
    "orchestrator_notices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("level", String(16), nullable=False),
    Column("rollout", Integer, nullable=True),
    Column("release", String(16), nullable=True),
    Column("subject", String(200), nullable=False),
    Column("message", Text, nullable=False),
)
