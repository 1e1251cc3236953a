"""``instanceView.patchStatus``: a machine's last assessment and installation, in Azure's shape.

The summaries use ``startTime`` and ``lastModifiedTime`` where the operation results they
come from say ``startDateTime``; Azure spells them that way and clients read them so.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from pyhotpatch.storage._tables import machines, machines_seen, presence

_ASSESSMENT_FIELDS = (
    "status",
    "assessmentActivityId",
    "rebootPending",
    "criticalAndSecurityPatchCount",
    "otherPatchCount",
    "error",
)
_INSTALLATION_FIELDS = (
    "status",
    "installationActivityId",
    "maintenanceWindowExceeded",
    "notSelectedPatchCount",
    "excludedPatchCount",
    "pendingPatchCount",
    "installedPatchCount",
    "failedPatchCount",
    "error",
)


def _summary(result: dict[str, Any] | None, fields: tuple[str, ...]) -> dict[str, Any]:
    if not result:
        return {"status": "Unknown"}
    summary = {key: result[key] for key in fields if key in result}
    if "startDateTime" in result:
        summary["startTime"] = result["startDateTime"]
    summary["lastModifiedTime"] = result.get("lastModifiedTime") or result.get("startDateTime")
    return summary


def patch_status(conn: Connection, vm_id: str) -> dict[str, Any]:
    """The ``VirtualMachinePatchStatus`` of the machine ``vm_id`` (any case)."""
    row = conn.execute(
        select(machines.c.assessment, machines.c.installation, presence.c.last_seen)
        .select_from(machines_seen)
        .where(machines.c.resource_id == vm_id.lower())
    ).first()
    assessment = row.assessment if row else None
    installation = row.installation if row else None
    statuses = []
    if row is None:
        statuses.append(
            {
                "code": "PatchStatus/NoAgent",
                "level": "Warning",
                "displayStatus": "No agent",
                "message": "No node agent has enrolled this machine: it cannot be assessed or patched.",
            }
        )
    return {
        "availablePatchSummary": _summary(assessment, _ASSESSMENT_FIELDS),
        "lastPatchInstallationSummary": _summary(installation, _INSTALLATION_FIELDS),
        "configurationStatuses": statuses,
    }
