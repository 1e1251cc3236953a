"""Automatic assessment: what each running machine lacks, every few days, in bulk.

The agent reports what it runs (its baseline and active hotpatch) with every heartbeat,
and the catalog says what has been published for that line, so the control plane can tell
what a machine lacks without asking it. An assessment cycle (every
``assess_cycle_minutes``) takes the running machines whose next assessment is due,
computes each one's ``VirtualMachineAssessPatchesResult`` (in the shape an agent's answer
is normalised to), and records it as the machine's latest assessment and in its history, a
page of machines per statement. A machine that was off is due when it comes back, so it is
assessed at the first cycle after. ``assessPatches`` (an operator's Assess now) still asks
the agent itself.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from pyhotpatch.server.arm._operations import ASSESS, normalize_result
from pyhotpatch.server.orchestrator import _fleet
from pyhotpatch.server.orchestrator._releases import Releases
from pyhotpatch.server.orchestrator._settings import Settings
from pyhotpatch.storage._tables import fleet_machines, machines, patch_history, presence

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


class _Assessor:
    """Assessments of one cycle: machines that run the same thing get the same patches."""

    def __init__(self, found: Releases, now: datetime) -> None:
        self.found = found
        self.now = now
        self.known: dict[tuple[Any, ...], dict[str, Any]] = {}

    def __call__(self, machine: _fleet.Machine, reboot_pending: bool) -> dict[str, Any]:
        """``assessment`` of ``machine``, with its own activity id."""
        key = (
            machine.product,
            machine.baseline,
            machine.active_hotpatch,
            machine.os_type,
            reboot_pending,
        )
        template = self.known.get(key)
        if template is None:
            template = assessment(self.found, machine, self.now, reboot_pending=reboot_pending)
            self.known[key] = template
        activity = str(uuid.uuid4())
        return {
            **template,
            "assessmentActivityId": activity,
            "availablePatches": [
                {**patch, "activityId": activity} for patch in template["availablePatches"]
            ],
        }


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
    assess = _Assessor(found, now)
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
        updates, history = [], []
        for machine in page:
            result = assess(machine, machine.id in pending)
            updates.append(
                {
                    "key": machine.id,
                    "result": {**result, "lastModifiedTime": _iso(now)},
                    "due": now + settings.assess_every(machine.assessment_mode),
                }
            )
            history.append(
                {
                    "machine": machine.id,
                    "operation": None,
                    "kind": "assessment",
                    "started": now,
                    "ended": now,
                    "status": result["status"],
                    "result": result,
                }
            )
        conn.execute(_ASSESSED, updates)
        conn.execute(insert(patch_history), history)
        done += len(page)
        if len(page) < PAGE:
            return done


_ASSESSED = (
    update(machines)
    .where(machines.c.resource_id == bindparam("key"))
    .values(assessment=bindparam("result"), next_assessment=bindparam("due"))
)
