"""The fleet as the orchestrator sees it: where each machine sits and what it runs.

``fleet_machines`` copies, from each virtual machine's model, the facts placement and
windows depend on (region, zone, availability set and update domain, time zone and
off-peak window, environment, patch mode, hotpatch, product); ``sync_machine`` is called
in the transaction of every model write, so the copy never lags. The agent's own reports
(baseline, active hotpatch) stay on ``agent_machines`` and its last heartbeat on
``agent_presence``. ``Machine`` joins them into the one record every rule reads.

A machine in an availability set gets its update domain when it is created, as Azure
assigns ``platformUpdateDomain``: round robin over the set's update domains, in the order
machines join, and it keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update

from pyhotpatch.server.arm._vm_model import (
    RUNNING_WINDOW,
    WINDOW_TAG,
    environment,
    iana_time_zone,
    model_image,
    os_type,
)
from pyhotpatch.server.orchestrator._windows import Window
from pyhotpatch.storage._tables import fleet_machines, machines, presence, resources


class Machine(NamedTuple):
    """One machine, with everything the orchestrator's rules read about it.

    ``zone`` is None for a machine in no availability zone; ``window`` is its own window
    or None for the fleet's. ``hotpatch`` is whether it takes hotpatches without a restart:
    enabled in its model, and not waiting to rejoin at its next baseline (``rejoin_after``).
    A named tuple, as region looks and assessment cycles build one for every machine they
    read, and a tuple is built several times faster than a frozen dataclass.
    """

    id: str
    subscription: str
    region: str
    zone: str | None
    availability_set: str | None
    update_domain: int | None
    time_zone: str
    window: str | None
    environment: str
    os_type: str
    patch_mode: str | None
    assessment_mode: str | None
    hotpatch: bool
    product: str | None
    last_seen: datetime | None
    baseline: str | None
    active_hotpatch: str | None
    health: str

    def running(self, now: datetime) -> bool:
        """Whether its agent reported recently enough for the machine to count as running."""
        return self.last_seen is not None and now - self.last_seen <= RUNNING_WINDOW

    def off_peak(self, fleet_window: Window) -> Window:
        """Its own window when it has one, else the fleet's."""
        return Window.parse(self.window) if self.window else fleet_window

    @property
    def automatic(self) -> bool:
        """Whether the platform patches it (``patchMode: AutomaticByPlatform``)."""
        return self.patch_mode == "AutomaticByPlatform"


def _tag(model: dict[str, Any], name: str) -> str | None:
    for key, value in (model.get("tags") or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _settings(model: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    profile = (model.get("properties") or {}).get("osProfile") or {}
    for key in ("windowsConfiguration", "linuxConfiguration"):
        config = profile.get(key)
        if isinstance(config, dict):
            return config, config.get("patchSettings") or {}
    return {}, {}


def facts(model: dict[str, Any], product: str | None) -> dict[str, Any]:
    """The ``fleet_machines`` columns of a virtual machine's model (all but ``created``)."""
    config, patch = _settings(model)
    zones = model.get("zones") or []
    availability = ((model.get("properties") or {}).get("availabilitySet") or {}).get("id")
    named_zone = config.get("timeZone")
    time_zone = iana_time_zone(named_zone) if isinstance(named_zone, str) else None
    return {
        "id": str(model["id"]).lower(),
        "subscription": str(model["id"]).split("/")[2].lower(),
        "region": str(model.get("location") or "local"),
        "zone": str(zones[0]) if zones else None,
        "availability_set": availability.lower() if isinstance(availability, str) else None,
        "time_zone": time_zone or "UTC",
        "window": _tag(model, WINDOW_TAG),
        "environment": environment(model),
        "os_type": os_type(model),
        "patch_mode": patch.get("patchMode"),
        "assessment_mode": patch.get("assessmentMode"),
        "hotpatch": patch.get("enableHotpatching") is True,
        "product": product,
    }


def _update_domain(conn: Connection, availability_set: str) -> int:
    """The update domain of the next machine to join ``availability_set`` (round robin)."""
    body = conn.execute(select(resources.c.body).where(resources.c.id == availability_set)).first()
    count = 5
    if body is not None:
        count = int((body.body.get("properties") or {}).get("platformUpdateDomainCount") or 5)
    members = conn.execute(
        select(func.count())
        .select_from(fleet_machines)
        .where(fleet_machines.c.availability_set == availability_set)
    ).scalar_one()
    return int(members) % max(count, 1)


def sync_machine(
    conn: Connection, model: dict[str, Any], product: str | None, now: datetime
) -> None:
    """Copy a virtual machine's model into ``fleet_machines`` (in the model write's transaction).

    ``product`` is the catalog product its image runs, if known. A new machine in an
    availability set is given its update domain; an existing one keeps its own.
    """
    values = facts(model, product)
    key = values["id"]
    found = conn.execute(select(fleet_machines.c.id).where(fleet_machines.c.id == key)).first()
    if found is not None:
        conn.execute(update(fleet_machines).where(fleet_machines.c.id == key).values(values))
        return
    if values["availability_set"]:
        values["update_domain"] = _update_domain(conn, values["availability_set"])
    conn.execute(insert(fleet_machines).values(created=now, **values))


def backfill(conn: Connection, now: datetime) -> int:
    """Copy every virtual machine that has no ``fleet_machines`` row yet; how many.

    Machines created before the orchestrator existed get their row when the server starts.
    """
    from pyhotpatch.server.arm._compute import VM_TYPE, CatalogView

    known = select(fleet_machines.c.id)
    rows = conn.execute(
        select(resources.c.body)
        .where(resources.c.type == VM_TYPE, resources.c.id.not_in(known))
        .order_by(resources.c.created, resources.c.id)
    ).all()
    catalog = CatalogView.within(conn) if rows else None
    for row in rows:
        image = model_image(row.body)
        product = catalog.product_for_image(**image) if catalog and image else None
        sync_machine(conn, row.body, product.name if product is not None else None, now)
    return len(rows)


def forget_machine(conn: Connection, machine: str) -> None:
    """Remove a deleted machine from the fleet."""
    conn.execute(delete(fleet_machines).where(fleet_machines.c.id == machine.lower()))


_COLUMNS = (
    fleet_machines.c.id,
    fleet_machines.c.subscription,
    fleet_machines.c.region,
    fleet_machines.c.zone,
    fleet_machines.c.availability_set,
    fleet_machines.c.update_domain,
    fleet_machines.c.time_zone,
    fleet_machines.c.window,
    fleet_machines.c.environment,
    fleet_machines.c.os_type,
    fleet_machines.c.patch_mode,
    fleet_machines.c.assessment_mode,
    fleet_machines.c.hotpatch,
    fleet_machines.c.product,
    presence.c.last_seen,
    machines.c.baseline,
    machines.c.hotpatch.label("active_hotpatch"),
    machines.c.rejoin_after,
)


#: Machine's fields from ``id`` to ``assessment_mode``, the first columns of ``_COLUMNS``
_Placement = tuple[
    str,
    str,
    str,
    str | None,
    str | None,
    int | None,
    str,
    str | None,
    str,
    str,
    str | None,
    str | None,
]


def _machine(row: Any, health: Any = None) -> Machine:
    # by position, as this runs for every machine a pass looks at
    placed = cast(_Placement, row[:12])
    hotpatch, product, last_seen, baseline, active_hotpatch, rejoin_after = row[12:18]
    rejoining = rejoin_after is not None and rejoin_after == baseline
    status = health.get("status") if isinstance(health, dict) else None
    return Machine(
        *placed,
        bool(hotpatch) and not rejoining,
        product,
        last_seen,
        baseline,
        active_hotpatch,
        str(status or "Unknown"),
    )


def enrolled(
    conn: Connection,
    *,
    product: str | None = None,
    region: str | None = None,
    ids: Sequence[str] | None = None,
    health: bool = False,
    where: Sequence[ColumnElement[bool]] = (),
    limit: int | None = None,
) -> Iterator[Machine]:
    """The machines with an enrolled agent, optionally of one product, region or id list.

    Their ``health`` is read only when asked for (it is a JSON document per machine);
    otherwise it is ``Unknown``.
    """
    columns = (*_COLUMNS, machines.c.health) if health else _COLUMNS
    query = select(*columns).select_from(
        fleet_machines.join(machines, machines.c.resource_id == fleet_machines.c.id).outerjoin(
            presence, presence.c.resource_id == fleet_machines.c.id
        )
    )
    if product is not None:
        query = query.where(fleet_machines.c.product == product)
    if region is not None:
        query = query.where(fleet_machines.c.region == region)
    if ids is not None:
        query = query.where(fleet_machines.c.id.in_(list(ids)))
    if where:
        query = query.where(*where)
    if limit is not None:
        query = query.limit(limit)
    # rows come a few hundred at a time: one driver call each, not one per row
    for part in conn.execute(query).partitions(500):
        for row in part:
            yield _machine(row, row.health if health else None)


def heard_from(now: datetime) -> ColumnElement[bool]:
    """The SQL twin of ``Machine.running``: its agent beat within the running window."""
    return presence.c.last_seen >= now - RUNNING_WINDOW


def machine(conn: Connection, machine_id: str) -> Machine | None:
    """One enrolled machine with its health, or None."""
    return next(enrolled(conn, ids=[machine_id.lower()], health=True), None)


def region_counts(conn: Connection, product: str) -> dict[str, int]:
    """How many automatically patched machines of ``product`` each region holds."""
    query = (
        select(fleet_machines.c.region, func.count())
        .where(
            fleet_machines.c.product == product,
            fleet_machines.c.patch_mode == "AutomaticByPlatform",
        )
        .group_by(fleet_machines.c.region)
    )
    return {str(region): int(count) for region, count in conn.execute(query)}


def subscription_sizes(conn: Connection) -> dict[str, int]:
    """How many enrolled machines each subscription has."""
    query = (
        select(fleet_machines.c.subscription, func.count())
        .join(machines, machines.c.resource_id == fleet_machines.c.id)
        .group_by(fleet_machines.c.subscription)
    )
    return {str(sub): int(count) for sub, count in conn.execute(query)}


def set_sizes(conn: Connection, sets: Sequence[str]) -> dict[str, int]:
    """How many machines each of ``sets`` (availability set ids) holds."""
    if not sets:
        return {}
    query = (
        select(fleet_machines.c.availability_set, func.count())
        .where(fleet_machines.c.availability_set.in_(list(sets)))
        .group_by(fleet_machines.c.availability_set)
    )
    return {str(key): int(count) for key, count in conn.execute(query)}
