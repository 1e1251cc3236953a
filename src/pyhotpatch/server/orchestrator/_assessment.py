"""Automatic assessment: what each running machine lacks, every few days, in bulk.

The agent reports what it runs (its baseline and active hotpatch) with every heartbeat,
and the catalog says what has been published for that line, so the control plane can tell
what a machine lacks without asking it. An assessment cycle (every
``assess_cycle_minutes``) takes the running machines whose next assessment is due,
computes each one's ``VirtualMachineAssessPatchesResult`` (in the shape an agent's answer
is normalised to), and records it as the machine's latest assessment and in its history.
Machines that run the same thing (product, baseline, hotpatch, OS, assessment mode, reboot
pending) lack the same releases, so a cycle computes one result per such group and writes
it with one statement of each kind: the group is one assessment activity and shares its
id. A machine that was off is due when it comes back, so it is assessed at the first cycle
after. ``assessPatches`` (an operator's Assess now) still asks the agent itself.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Connection, insert, literal, null, or_, select, update

from pyhotpatch.server.arm._operations import ASSESS, normalize_result
from pyhotpatch.server.orchestrator import _fleet
from pyhotpatch.server.orchestrator._releases import Releases
from pyhotpatch.server.orchestrator._settings import Settings
from pyhotpatch.storage._tables import (
    UTCDateTime,
    fleet_machines,
    machines,
    patch_history,
    presence,
)

#: machines assessed per statement
PAGE = 2000


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def assessment(
    found: Releases, machine: _fleet.Machine, now: datetime, *, reboot_pending: bool
) -> dict[str, Any]:
    """The assessment result of ``machine``: every release of its line it lacks."""
    patches = [
        {
            "kbId": release.kb,
            "name": release.title or release.kb,
            "classifications": list(release.classifications),
            "rebootBehavior": release.reboot_behavior,
            "publishedDate": _iso(release.published),
        }
        for release in found.lacking(machine, now, security_only=False)
    ]
    output = {
        "status": "Succeeded",
        "assessmentActivityId": str(uuid.uuid4()),
        "rebootPending": reboot_pending,
        "availablePatches": patches,
        "startDateTime": _iso(now),
    }
    return normalize_result(ASSESS, output, windows=machine.os_type != "Linux", started=now)


def run_cycle(conn: Connection, now: datetime, settings: Settings, found: Releases) -> int:
    """Assess every running machine that is due; how many were assessed."""
    due = [
        or_(machines.c.next_assessment.is_(None), machines.c.next_assessment <= now),
        _fleet.heard_from(now),
    ]
    # a machine whose model is gone has no fleet row: it waits a day rather than spin
    orphans = (
        select(machines.c.resource_id)
        .join(presence, presence.c.resource_id == machines.c.resource_id)
        .where(*due, machines.c.resource_id.not_in(select(fleet_machines.c.id)))
    )
    conn.execute(
        update(machines)
        .where(machines.c.resource_id.in_(orphans))
        .values(next_assessment=now + timedelta(days=1))
    )
    done = 0
    while True:
        # each page assessed is no longer due: the next query finds the rest
        page = list(_fleet.enrolled(conn, where=due, limit=PAGE))
        if not page:
            return done
        # a restart the last installation asked for and did not get: the assessment says so
        pending = set(
            conn.execute(
                select(machines.c.resource_id).where(
                    machines.c.resource_id.in_([m.id for m in page]),
                    machines.c.installation["rebootStatus"].as_string() == "Required",
                )
            ).scalars()
        )
        # machines that run the same thing lack the same releases: one result, and one
        # statement of each kind, per group rather than per machine
        groups: dict[tuple[Any, ...], list[_fleet.Machine]] = {}
        for machine in page:
            key = (
                machine.product,
                machine.baseline,
                machine.active_hotpatch,
                machine.os_type,
                machine.assessment_mode,
                machine.id in pending,
            )
            groups.setdefault(key, []).append(machine)
        for (*_, reboot_pending), group in groups.items():
            result = assessment(found, group[0], now, reboot_pending=reboot_pending)
            _record(
                conn,
                [m.id for m in group],
                result,
                now,
                settings.assess_every(group[0].assessment_mode),
            )
        done += len(page)
        if len(page) < PAGE:
            return done


def _record(
    conn: Connection, ids: list[str], result: dict[str, Any], now: datetime, every: timedelta
) -> None:
    """Store ``result`` as the latest assessment of the machines ``ids`` and in their history."""
    conn.execute(
        update(machines)
        .where(machines.c.resource_id.in_(ids))
        .values(assessment={**result, "lastModifiedTime": _iso(now)}, next_assessment=now + every)
    )
    entry = select(
        machines.c.resource_id,
        null(),
        literal("assessment"),
        literal(now, UTCDateTime),
        literal(now, UTCDateTime),
        literal(result["status"]),
        literal(result, JSON),
    ).where(machines.c.resource_id.in_(ids))
    columns = ["machine", "operation", "kind", "started", "ended", "status", "result"]
    conn.execute(insert(patch_history).from_select(columns, entry))
