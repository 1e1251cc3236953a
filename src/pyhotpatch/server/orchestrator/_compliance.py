"""Compliance: which machines have every Critical and Security release they should.

A machine is compliant when it lacks no available Critical or Security release of its
line (the newest baseline and the newest hotpatch on the baseline it runs; halted and
superseded releases do not count) and no restart is pending. A machine that never
reported its baseline is ``Unknown``: nothing can be said about it until it is assessed.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from pyhotpatch.server.orchestrator import _fleet
from pyhotpatch.server.orchestrator._fleet import Machine
from pyhotpatch.server.orchestrator._releases import Releases
from pyhotpatch.storage._tables import fleet_machines, machines

COMPLIANT, NON_COMPLIANT, UNKNOWN = "Compliant", "NonCompliant", "Unknown"


def _reboot_pending(assessment: Any, installation: Any) -> bool:
    if isinstance(installation, dict) and installation.get("rebootStatus") == "Required":
        return True
    return isinstance(assessment, dict) and assessment.get("rebootPending") is True


def machine_compliance(
    machine: Machine, found: Releases, now: datetime, *, assessment: Any, installation: Any
) -> dict[str, Any]:
    """One machine's compliance document."""
    missing = found.missing(machine, now) if machine.baseline else []
    pending = _reboot_pending(assessment, installation)
    if machine.baseline is None:
        state = UNKNOWN
    elif missing or pending:
        state = NON_COMPLIANT
    else:
        state = COMPLIANT
    last = assessment.get("lastModifiedTime") if isinstance(assessment, dict) else None
    return {
        "machine": machine.id,
        "state": state,
        "baseline": machine.baseline,
        "activeHotpatch": machine.active_hotpatch,
        "hotpatch": machine.hotpatch,
        "environment": machine.environment,
        "region": machine.region,
        "zone": machine.zone,
        "missingCriticalAndSecurityCount": len(missing),
        "missing": missing,
        "rebootPending": pending,
        "lastAssessment": last,
        "running": machine.running(now),
    }


def _reports(conn: Connection, ids: list[str] | None, subscription: str | None) -> dict[str, Any]:
    query = select(machines.c.resource_id, machines.c.assessment, machines.c.installation)
    if subscription is not None:
        query = query.where(machines.c.subscription == subscription)
    if ids is not None:
        query = query.where(machines.c.resource_id.in_(ids))
    return {row.resource_id: row for row in conn.execute(query)}


def one(conn: Connection, machine_id: str, now: datetime) -> dict[str, Any] | None:
    """The compliance of one enrolled machine, or None if it has no agent."""
    machine = _fleet.machine(conn, machine_id)
    if machine is None:
        return None
    report = _reports(conn, [machine.id], None).get(machine.id)
    return machine_compliance(
        machine,
        Releases.read(conn),
        now,
        assessment=report.assessment if report else None,
        installation=report.installation if report else None,
    )


def fleet(conn: Connection, now: datetime, *, subscription: str | None = None) -> dict[str, Any]:
    """The fleet's compliance: totals, and per region and environment."""
    found = Releases.read(conn)
    reports = _reports(conn, None, subscription)
    totals: Counter[str] = Counter()
    regions: dict[str, Counter[str]] = {}
    environments: dict[str, Counter[str]] = {}
    missing = pending = 0
    scope = [fleet_machines.c.subscription == subscription] if subscription is not None else []
    for machine in _fleet.enrolled(conn, where=scope):
        report = reports.get(machine.id)
        doc = machine_compliance(
            machine,
            found,
            now,
            assessment=report.assessment if report else None,
            installation=report.installation if report else None,
        )
        totals[doc["state"]] += 1
        regions.setdefault(machine.region, Counter())[doc["state"]] += 1
        environments.setdefault(machine.environment, Counter())[doc["state"]] += 1
        missing += doc["missingCriticalAndSecurityCount"]
        pending += doc["rebootPending"]
    count = sum(totals.values())
    return {
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machines": count,
        "compliant": totals[COMPLIANT],
        "nonCompliant": totals[NON_COMPLIANT],
        "unknown": totals[UNKNOWN],
        "compliantPercent": round(100 * totals[COMPLIANT] / count, 1) if count else 100.0,
        "missingCriticalAndSecurity": missing,
        "rebootPending": pending,
        "byRegion": {k: _states(v) for k, v in sorted(regions.items())},
        "byEnvironment": {k: _states(v) for k, v in sorted(environments.items())},
        "notEnrolled": _not_enrolled(conn, subscription),
    }


def _states(counts: Counter[str]) -> dict[str, int]:
    return {
        "compliant": counts[COMPLIANT],
        "nonCompliant": counts[NON_COMPLIANT],
        "unknown": counts[UNKNOWN],
    }


def _not_enrolled(conn: Connection, subscription: str | None) -> int:
    query = (
        select(func.count())
        .select_from(fleet_machines)
        .where(fleet_machines.c.id.not_in(select(machines.c.resource_id)))
    )
    if subscription is not None:
        query = query.where(fleet_machines.c.subscription == subscription)
    return int(conn.execute(query).scalar_one())
