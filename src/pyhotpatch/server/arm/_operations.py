"""``assessPatches`` and ``installPatches`` as ARM long-running operations, and ``instanceView``.

(The instance view itself is built by ``_compute.instance_view_of``, so that
``GET …/instanceView`` and ``GET …?$expand=instanceView`` always agree.)

The flow: ``POST …/virtualMachines/{vm}/assessPatches|installPatches`` checks the request,
the machine and its agent, then records an ``arm_operations`` row (``InProgress``) and queues
work for the machine's agent in one transaction, and answers 202 with ``Azure-AsyncOperation``
and ``Location``, as Azure does. The agent leases the work (``/agent/jobs``) and reports a
result; ``complete`` turns it into Azure's result shape, finishes the operation, updates the
machine's ``patchStatus`` and appends to its history, again in one transaction.

Where Azure leaves room, this control plane decides so:

- A machine with no enrolled agent, or whose agent has not been seen for ``AGENT_STALE``,
  is not running as far as patching goes: the POST is refused at once with 409
  ``OperationNotAllowed``, as Azure refuses operations on a VM that is not running. So is a
  second patch operation while one is in progress on the same machine.
- Deadlines: an assessment must report within ``ASSESS_TIMEOUT``, an installation within
  its ``maximumDuration`` plus ``INSTALL_GRACE``. Work whose lease lapses is handed out once
  more (see ``pyhotpatch.server._queue``). Past the deadline, or after a second lapsed lease,
  the operation fails. This is settled when anyone next looks (the operation's status, the
  agent's poll, a new operation), against the injected clock, so it holds across restarts
  and on simulated time without a timer.
- An operation succeeds whenever the agent produced a result, even one whose own ``status``
  is ``Failed``: patch-level failures are part of the result, as in Azure. It fails when no
  result came, or when the agent reported it could not run at all.

Agents also do work that is no ARM operation (``queue_work``): revert the active hotpatch
(``revertHotpatch``) and move the machine to a hotpatch-capable stack (``upgradeStack``).
They need a live agent too, one such item at a time per machine, and they have deadlines.
A succeeded upgrade changes the VM's ``imageReference`` in the transaction that records
its result (in ``complete``), so that hotpatching can then be enabled on the machine.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, bindparam, insert, select, update

from pyhotpatch.catalog._selection import parse_duration
from pyhotpatch.package import CLASSIFICATIONS
from pyhotpatch.server import _queue
from pyhotpatch.server._auth import Authenticator, Principal, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._compute import (
    CatalogView,
    get_vm,
    instance_view_of,
    resource_key,
    set_image,
)
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import absolute, api_version, subscription_id
from pyhotpatch.server.arm._groups import require_group
from pyhotpatch.server.arm._registrations import require_provider
from pyhotpatch.server.arm._subscriptions import require_subscription
from pyhotpatch.server.arm._vm_model import RUNNING_WINDOW, os_type
from pyhotpatch.storage._tables import (
    machines,
    machines_seen,
    operations,
    patch_history,
    presence,
    releases,
)

#: an agent not seen for this long is taken for stopped
AGENT_STALE = RUNNING_WINDOW  # as long as the VM shows PowerState/running
#: how long an assessment may take from the request to the agent's report
ASSESS_TIMEOUT = timedelta(minutes=10)
#: added to an installation's ``maximumDuration`` before it counts as lost
INSTALL_GRACE = timedelta(minutes=15)
#: the longest ``maximumDuration`` accepted, and the one used when none is given
MAX_DURATION = timedelta(hours=4)
#: how long finished operations and their history are kept (the portal shows 30 days)
HISTORY_KEPT = timedelta(days=30)
#: the largest request body these routes read
MAX_BODY = 1 << 20

#: how long a hotpatch revert may take from the request to the agent's report
REVERT_TIMEOUT = timedelta(minutes=30)
#: how long a stack upgrade may take (a new environment is installed, then the service restarts)
UPGRADE_TIMEOUT = timedelta(hours=4)

ASSESS, INSTALL = "assessPatches", "installPatches"
#: who started a piece of agent work: the orchestrator, or an operator's request
AUTO, ON_DEMAND = "auto", "on-demand"
REVERT, UPGRADE = "revertHotpatch", "upgradeStack"
#: work an agent does outside any ARM operation; one such item at a time per machine
AGENT_WORK = (REVERT, UPGRADE)
#: what a revert goes back to
REVERT_TARGETS = ("previous", "baseline")
IN_PROGRESS, SUCCEEDED, FAILED = "InProgress", "Succeeded", "Failed"
HISTORY_KIND = {ASSESS: "assessment", INSTALL: "installation"}

REBOOT_SETTINGS = ("IfRequired", "Never", "Always")
#: Azure's VMGuestPatchClassificationWindows, the catalog's classifications
WINDOWS_CLASSIFICATIONS = CLASSIFICATIONS
LINUX_CLASSIFICATIONS = ("Critical", "Security", "Other")
PATCH_OPERATION_STATUSES = ("Unknown", "InProgress", "Failed", "Succeeded", "CompletedWithWarnings")
REBOOT_BEHAVIORS = ("Unknown", "NeverReboots", "AlwaysRequiresReboot", "CanRequestReboot")
ASSESSMENT_STATES = ("Unknown", "Available")
INSTALLATION_STATES = ("Unknown", "Installed", "Failed", "Excluded", "NotSelected", "Pending")
REBOOT_STATUSES = ("Unknown", "NotNeeded", "Required", "Started", "Failed", "Completed")
_SECURITY = ("Critical", "Security")
_COUNT_OF_STATE = {
    "Excluded": "excludedPatchCount",
    "NotSelected": "notSelectedPatchCount",
    "Pending": "pendingPatchCount",
    "Installed": "installedPatchCount",
    "Failed": "failedPatchCount",
}

_KB_RE = re.compile(r"^KB[0-9]{4,10}$", re.IGNORECASE)
_VM_PATH = (
    "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute"
    "/virtualmachines/{name}"
)


# --- request validation ---------------------------------------------------------------------


async def json_body(request: Request) -> Any:
    """The request's JSON body, or None when it has none (a dependency for sync routes)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "RequestEntityTooLarge", f"The request body exceeds {MAX_BODY} bytes.")
    if not raw.strip():
        return None
    try:
        return await request.json()
    except ValueError:
        raise ApiError(
            400, "InvalidRequestContent", "The request content was invalid and could not be parsed."
        ) from None


def _invalid(message: str, target: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message, target=target)


def _missing(name: str, target: str) -> ApiError:
    return _invalid(f"Required parameter '{name}' is missing (null).", target)


def _enum(value: Any, allowed: tuple[str, ...], name: str, target: str) -> str:
    """``value`` in its canonical spelling (ARM compares enum values case-insensitively)."""
    if isinstance(value, str):
        for choice in allowed:
            if choice.lower() == value.lower():
                return choice
    listed = ", ".join(f"'{choice}'" for choice in allowed)
    raise _invalid(
        f"The value '{value}' of parameter '{name}' is not valid. Allowed values are {listed}.",
        target,
    )


def _strings(value: Any, name: str, target: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"The parameter '{name}' must be a list of strings.", target)
    return list(value)


def _datetime(value: Any, name: str, target: str) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    raise _invalid(
        f"The value '{value}' of parameter '{name}' is not a valid ISO 8601 date-time.", target
    )


def install_parameters(body: Any) -> tuple[dict[str, Any], timedelta]:
    """A valid ``VirtualMachineInstallPatchesParameters`` and its maximum duration.

    Enums come back in their canonical spelling; a bad field is ARM's 400
    ``InvalidParameter`` naming it (the first one found).
    """
    if body is None:
        raise _missing("installPatchesInput", "installPatchesInput")
    if not isinstance(body, dict):
        raise _invalid(
            "The request body must be a VirtualMachineInstallPatchesParameters object.",
            "installPatchesInput",
        )
    params: dict[str, Any] = {}
    raw_duration = body.get("maximumDuration")
    duration = MAX_DURATION
    if raw_duration is not None:
        parsed = parse_duration(raw_duration) if isinstance(raw_duration, str) else None
        if parsed is None:
            raise _invalid(
                f"The value '{raw_duration}' of parameter 'maximumDuration' is not a valid "
                "ISO 8601 duration such as PT4H.",
                "maximumDuration",
            )
        if not timedelta(0) < parsed <= MAX_DURATION:
            raise _invalid(
                f"The value '{raw_duration}' of parameter 'maximumDuration' is not valid. "
                "It must be more than zero and at most 4 hours (PT4H).",
                "maximumDuration",
            )
        params["maximumDuration"] = raw_duration
        duration = parsed
    if body.get("rebootSetting") is None:
        raise _missing("rebootSetting", "rebootSetting")
    params["rebootSetting"] = _enum(
        body["rebootSetting"], REBOOT_SETTINGS, "rebootSetting", "rebootSetting"
    )
    params["windowsParameters"] = _windows_parameters(body.get("windowsParameters"))
    params["linuxParameters"] = _linux_parameters(body.get("linuxParameters"))
    return params, duration


def _windows_parameters(raw: Any) -> dict[str, Any]:
    where = "windowsParameters"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _invalid("The parameter 'windowsParameters' must be an object.", where)
    found: dict[str, Any] = {}
    if raw.get("classificationsToInclude") is not None:
        target = f"{where}.classificationsToInclude"
        values = _strings(raw["classificationsToInclude"], "classificationsToInclude", target)
        found["classificationsToInclude"] = [
            _enum(v, WINDOWS_CLASSIFICATIONS, "classificationsToInclude", target) for v in values
        ]
    for key in ("kbNumbersToInclude", "kbNumbersToExclude"):
        if raw.get(key) is None:
            continue
        values = _strings(raw[key], key, f"{where}.{key}")
        for value in values:
            if not _KB_RE.match(value.strip()):
                raise _invalid(
                    f"The entry in '{key}' with value '{value}' is not valid. "
                    "It must be a KBID such as KB4512508.",
                    f"{where}.{key}",
                )
        found[key] = values
    if raw.get("excludeKbsRequiringReboot") is not None:
        if not isinstance(raw["excludeKbsRequiringReboot"], bool):
            raise _invalid(
                "The parameter 'excludeKbsRequiringReboot' must be true or false.",
                f"{where}.excludeKbsRequiringReboot",
            )
        found["excludeKbsRequiringReboot"] = raw["excludeKbsRequiringReboot"]
    if raw.get("maxPatchPublishDate") is not None:
        _datetime(raw["maxPatchPublishDate"], "maxPatchPublishDate", f"{where}.maxPatchPublishDate")
        found["maxPatchPublishDate"] = raw["maxPatchPublishDate"]
    return found


def _linux_parameters(raw: Any) -> dict[str, Any]:
    where = "linuxParameters"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _invalid("The parameter 'linuxParameters' must be an object.", where)
    found: dict[str, Any] = {}
    if raw.get("classificationsToInclude") is not None:
        target = f"{where}.classificationsToInclude"
        values = _strings(raw["classificationsToInclude"], "classificationsToInclude", target)
        found["classificationsToInclude"] = [
            _enum(v, LINUX_CLASSIFICATIONS, "classificationsToInclude", target) for v in values
        ]
    for key in ("packageNameMasksToInclude", "packageNameMasksToExclude"):
        if raw.get(key) is not None:
            found[key] = _strings(raw[key], key, f"{where}.{key}")
    if raw.get("maintenanceRunId") is not None:
        if not isinstance(raw["maintenanceRunId"], str):
            raise _invalid(
                "The parameter 'maintenanceRunId' must be a string.", f"{where}.maintenanceRunId"
            )
        found["maintenanceRunId"] = raw["maintenanceRunId"]
    return found


def revert_parameters(body: Any) -> dict[str, Any]:
    """The payload of a ``revertHotpatch``, from its optional body ``{"kbId", "to"}``.

    ``kbId`` names the hotpatch the caller expects to be active (the agent refuses to revert
    another one); ``to`` is ``previous`` (the hotpatch active before, where the agent keeps
    it, else the baseline: the default) or ``baseline``. 400 ``InvalidParameter`` otherwise.
    """
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestContent", "The request body must be a JSON object.")
    unknown = sorted(set(body) - {"kbId", "to"})
    if unknown:
        raise _invalid(
            f"Unknown parameter '{unknown[0]}': a revert takes only 'kbId' and 'to'.", unknown[0]
        )
    payload: dict[str, Any] = {}
    kb = body.get("kbId")
    if kb is not None:
        if not isinstance(kb, str) or not _KB_RE.match(kb.strip()):
            raise _invalid(
                f"The value '{kb}' of parameter 'kbId' is not valid. It must be a KBID such as "
                "KB4512508.",
                "kbId",
            )
        payload["kbId"] = kb.strip().upper()
    if body.get("to") is not None:
        payload["to"] = _enum(body["to"], REVERT_TARGETS, "to", "to")
    return payload


def upgrade_payload(document: dict[str, Any]) -> dict[str, Any]:
    """The payload of an ``upgradeStack`` for a machine (its ``machine_document``).

    409 ``OperationNotAllowed`` when there is nothing to upgrade to: the machine's product is
    unknown, already hotpatch-capable, or names no (known) product to upgrade to.
    """
    name, product = document["name"], document["product"]
    why = None
    if product is None:
        image = document["image"]
        named = "{publisher}:{offer}:{sku}".format(**image) if image else "(none)"
        why = f"its image '{named}' is not a product of the catalog"
    elif document["hotpatchCapable"]:
        why = f"its product '{product}' is already hotpatch-capable"
    elif document["upgradeTo"] is None:
        why = f"its product '{product}' names no hotpatch-capable product to upgrade to"
    elif document["upgradeImage"] is None:
        why = (
            f"'{document['upgradeTo']}', the product '{product}' upgrades to, "
            "is not in the catalog or has no image"
        )
    if why is not None:
        raise ApiError(
            409,
            "OperationNotAllowed",
            f"Operation '{UPGRADE}' is not allowed on VM '{name}' since {why}.",
        )
    return {"product": document["upgradeTo"], "image": document["upgradeImage"], "from": product}


# --- machines and their agents ----------------------------------------------------------------


def _name_of(machine: str) -> str:
    return machine.rsplit("/", 1)[-1]


def _vm_key(vm: dict[str, Any], subscription: str, group: str, name: str) -> str:
    vm_id = vm.get("id")
    if isinstance(vm_id, str) and vm_id:
        return vm_id.lower()
    return resource_key(subscription, group, "virtualmachines", name)


def agent_alive(last_seen: datetime | None, now: datetime) -> bool:
    """Whether an agent last seen at ``last_seen`` counts as running at ``now``."""
    return last_seen is not None and now - last_seen <= AGENT_STALE


def require_agent(conn: Connection, machine: str, vm_name: str, action: str, now: datetime) -> None:
    """Refuse with 409 ``OperationNotAllowed`` unless the machine's agent is enrolled and alive."""
    row = conn.execute(
        select(presence.c.last_seen)
        .select_from(machines_seen)
        .where(machines.c.resource_id == machine.lower())
    ).first()
    if row is None:
        why = "no agent has enrolled it"
    elif not agent_alive(row.last_seen, now):
        since = row.last_seen.isoformat() if row.last_seen else "its enrolment"
        why = (
            f"no agent has reported for it since {since} "
            f"(an agent must report at least every {int(AGENT_STALE.total_seconds() // 60)} minutes)"
        )
    else:
        return
    raise ApiError(
        409,
        "OperationNotAllowed",
        f"Operation '{action}' is not allowed on VM '{vm_name}' since the VM is not running: {why}.",
    )


# --- results in Azure's shape -----------------------------------------------------------------


def _success_error(windows: bool) -> dict[str, Any]:
    if windows:
        return {"details": [], "code": "Success", "message": "0 error/s reported"}
    return {"details": [], "code": "0", "message": "0 error/s reported."}


def _bad_output(message: str, target: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message, target=target)


def _api_error(raw: Any, target: str) -> dict[str, Any]:
    """An ``ApiError`` object as an agent may report it: code and message strings, details."""
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("code"), str)
        or not isinstance(raw.get("message"), str)
    ):
        raise _bad_output("An error needs a string 'code' and a string 'message'.", target)
    error: dict[str, Any] = {"details": [], "code": raw["code"][:200], "message": raw["message"]}
    details = raw.get("details")
    if details is not None:
        if not isinstance(details, list):
            raise _bad_output("An error's 'details' must be a list.", f"{target}.details")
        error["details"] = [
            {k: str(v) for k, v in d.items() if k in ("code", "target", "message")}
            for d in details
            if isinstance(d, dict)
        ]
    return error


def _count(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad_output(f"'{key}' must be a whole number, not {value!r}.", f"output.{key}")
    return value


def _flag(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _bad_output(f"'{key}' must be true or false.", f"output.{key}")
    return value


def _text(raw: dict[str, Any], key: str, target: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise _bad_output(f"'{key}' is required.", f"{target}.{key}")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (required and not value):
        raise _bad_output(f"'{key}' must be a string.", f"{target}.{key}")
    return value


def _when(raw: dict[str, Any], key: str, target: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        _datetime(value, key, f"{target}.{key}")
    except ApiError as exc:
        raise _bad_output(exc.message, f"{target}.{key}") from None
    return str(value)


def _output_enum(value: Any, allowed: tuple[str, ...], target: str) -> str:
    try:
        return _enum(value, allowed, target.rsplit(".", 1)[-1], target)
    except ApiError as exc:
        raise _bad_output(exc.message, target) from None


def _patch(raw: Any, target: str, *, windows: bool, install: bool, activity: str) -> dict[str, Any]:
    """One patch as Azure lists it; KB ids without the ``KB`` prefix, no version on Windows."""
    if not isinstance(raw, dict):
        raise _bad_output("A patch must be an object.", target)
    name = _text(raw, "name", target, required=True)
    assert name is not None
    version = _text(raw, "version", target)
    kb = _text(raw, "kbId", target)
    if kb is not None:
        kb = kb.strip()
        kb = kb[2:] if kb[:2].upper() == "KB" else kb
    classifications = raw.get("classifications", [])
    if not isinstance(classifications, list) or not all(
        isinstance(c, str) for c in classifications
    ):
        raise _bad_output(
            "'classifications' must be a list of strings.", f"{target}.classifications"
        )
    patch_id = _text(raw, "patchId", target)
    if not patch_id:
        if windows:
            patch_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kb:{kb or ''}/{name}"))
        else:
            patch_id = f"{name}_{version or ''}"
    patch: dict[str, Any] = {"patchId": patch_id, "name": name}
    if version is not None and not windows:
        patch["version"] = version
    if kb is not None:
        patch["kbId"] = kb
    patch["classifications"] = list(classifications)
    if install:
        if raw.get("installationState") is None:
            raise _bad_output("'installationState' is required.", f"{target}.installationState")
        patch["installationState"] = _output_enum(
            raw["installationState"], INSTALLATION_STATES, f"{target}.installationState"
        )
        return patch
    patch["rebootBehavior"] = _output_enum(
        raw.get("rebootBehavior", "Unknown"), REBOOT_BEHAVIORS, f"{target}.rebootBehavior"
    )
    patch["activityId"] = _text(raw, "activityId", target) or activity
    for key in ("publishedDate", "lastModifiedDateTime"):
        moment = _when(raw, key, target)
        if moment is not None:
            patch[key] = moment
    patch["assessmentState"] = _output_enum(
        raw.get("assessmentState", "Available"), ASSESSMENT_STATES, f"{target}.assessmentState"
    )
    return patch


def _iso(moment: datetime, *, seconds: bool = False) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds" if seconds else "auto")


def normalize_result(kind: str, output: Any, *, windows: bool, started: datetime) -> dict[str, Any]:
    """An agent's result in Azure's shape (``VirtualMachine…PatchesResult``).

    Fields are checked, counts derived where missing, activity ids, ``startDateTime`` and
    the success ``error`` filled in; 400 ``InvalidParameter`` if the output is malformed.
    """
    if not isinstance(output, dict):
        raise _bad_output("The output must be an object.", "output")
    field = "availablePatches" if kind == ASSESS else "patches"
    listed = output.get(field)
    if not isinstance(listed, list):
        raise _bad_output(f"'{field}' is required and must be a list.", f"output.{field}")
    activity_key = "assessmentActivityId" if kind == ASSESS else "installationActivityId"
    activity = _text(output, activity_key, "output") or str(uuid.uuid4())
    patches = [
        _patch(
            p, f"output.{field}[{i}]", windows=windows, install=kind == INSTALL, activity=activity
        )
        for i, p in enumerate(listed)
    ]
    start = _when(output, "startDateTime", "output") or _iso(started, seconds=True)
    error = (
        _api_error(output["error"], "output.error")
        if output.get("error") is not None
        else _success_error(windows)
    )
    if kind == ASSESS:
        security = sum(1 for p in patches if set(p["classifications"]) & set(_SECURITY))
        status = output.get("status", SUCCEEDED)
        return {
            "status": _output_enum(status, PATCH_OPERATION_STATUSES, "output.status"),
            "assessmentActivityId": activity,
            "rebootPending": _flag(output, "rebootPending", False),
            "criticalAndSecurityPatchCount": _count(
                output, "criticalAndSecurityPatchCount", security
            ),
            "otherPatchCount": _count(output, "otherPatchCount", len(patches) - security),
            "startDateTime": start,
            "availablePatches": patches,
            "error": error,
        }
    if output.get("rebootStatus") is None:
        raise _bad_output("'rebootStatus' is required.", "output.rebootStatus")
    tallies = dict.fromkeys(_COUNT_OF_STATE.values(), 0)
    for patch in patches:
        key = _COUNT_OF_STATE.get(patch["installationState"])
        if key:
            tallies[key] += 1
    counts = {key: _count(output, key, tallies[key]) for key in tallies}
    exceeded = _flag(output, "maintenanceWindowExceeded", False)
    default_status = (
        FAILED
        if counts["failedPatchCount"]
        else "CompletedWithWarnings"
        if exceeded or counts["pendingPatchCount"]
        else SUCCEEDED
    )
    result: dict[str, Any] = {
        "status": _output_enum(
            output.get("status", default_status), PATCH_OPERATION_STATUSES, "output.status"
        ),
        "installationActivityId": activity,
        "rebootStatus": _output_enum(
            output["rebootStatus"], REBOOT_STATUSES, "output.rebootStatus"
        ),
        "maintenanceWindowExceeded": exceeded,
        **counts,
        "patches": patches,
        "startDateTime": start,
    }
    if not windows:
        result["maintenanceRunId"] = _text(output, "maintenanceRunId", "output") or ""
    result["error"] = error
    return result


def failure_result(
    kind: str, error: dict[str, Any], *, started: datetime, window_exceeded: bool = False
) -> dict[str, Any]:
    """The result recorded for a machine when an operation ended without the agent's result."""
    if kind == ASSESS:
        return {
            "status": FAILED,
            "assessmentActivityId": str(uuid.uuid4()),
            "rebootPending": False,
            "criticalAndSecurityPatchCount": 0,
            "otherPatchCount": 0,
            "startDateTime": _iso(started, seconds=True),
            "availablePatches": [],
            "error": {"details": [], **error},
        }
    return {
        "status": FAILED,
        "installationActivityId": str(uuid.uuid4()),
        "rebootStatus": "Unknown",
        "maintenanceWindowExceeded": window_exceeded,
        **dict.fromkeys(_COUNT_OF_STATE.values(), 0),
        "patches": [],
        "startDateTime": _iso(started, seconds=True),
        "error": {"details": [], **error},
    }


# --- operations -------------------------------------------------------------------------------


def _operation_row(conn: Connection, operation: str, *, for_update: bool = False) -> Any:
    query = select(operations).where(operations.c.id == operation)
    if for_update:
        query = query.with_for_update()
    return conn.execute(query).first()


# statements run for every finished operation, built once
_LATEST_ASSESSMENT = (
    update(machines)
    .where(machines.c.resource_id == bindparam("key"))
    .values(assessment=bindparam("latest"))
)
_LATEST_INSTALLATION = (
    update(machines)
    .where(machines.c.resource_id == bindparam("key"))
    .values(installation=bindparam("latest"))
)
_HISTORY = insert(patch_history)
_STARTED = select(operations.c.started).where(operations.c.id == bindparam("key"))
_END_OPERATION = (
    update(operations)
    .where(operations.c.id == bindparam("key"), operations.c.status == IN_PROGRESS)
    .values(
        status=bindparam("to"),
        output=bindparam("out"),
        error=bindparam("err"),
        ended=bindparam("at"),
    )
)


def record(
    conn: Connection,
    machine: str,
    kind: str,
    operation: str | None,
    started: datetime,
    result: dict[str, Any],
    now: datetime,
) -> None:
    """Make ``result`` the machine's latest assessment or installation and add it to history.

    History older than ``HISTORY_KEPT`` is pruned by the orchestrator, once an hour.
    """
    stored = {**result, "lastModifiedTime": _iso(now)}
    latest = _LATEST_ASSESSMENT if kind == ASSESS else _LATEST_INSTALLATION
    conn.execute(latest, {"key": machine, "latest": stored})
    conn.execute(
        _HISTORY,
        {
            "machine": machine,
            "operation": operation,
            "kind": HISTORY_KIND[kind],
            "started": started,
            "ended": now,
            "status": str(result.get("status", "Unknown")),
            "result": result,
        },
    )


def _end_operation(
    conn: Connection,
    operation: str | None,
    status: str,
    now: datetime,
    *,
    output: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    if operation is None:
        return
    conn.execute(
        _END_OPERATION,
        {"key": operation, "to": status, "out": output, "err": error, "at": now},
    )


def _started(conn: Connection, item: _queue.WorkItem) -> datetime:
    if item.operation is not None:
        started: datetime | None = conn.execute(_STARTED, {"key": item.operation}).scalar()
        if started is not None:
            return started
    return item.created


def _give_up(
    conn: Connection,
    item: _queue.WorkItem,
    error: dict[str, str],
    now: datetime,
    *,
    window_exceeded: bool = False,
) -> None:
    """End ``item``'s operation as Failed with ``error`` and record the failure for the machine."""
    started = _started(conn, item)
    _end_operation(conn, item.operation, FAILED, now, error=error)
    if item.kind in HISTORY_KIND:
        result = failure_result(item.kind, error, started=started, window_exceeded=window_exceeded)
        record(conn, item.machine, item.kind, item.operation, started, result, now)


def expire(conn: Connection, machine: str, now: datetime) -> None:
    """Settle the machine's work against the clock.

    Lapsed leases are requeued once; the operations of work that lapsed twice, or is past
    its deadline, fail, and the failure is recorded for the machine.
    """
    name = _name_of(machine)
    for item in _queue.lapse(conn, now, machine):
        _give_up(
            conn,
            item,
            {
                "code": "VMAgentStatusCommunicationError",
                "message": f"The agent of VM '{name}' took the work {item.attempts} times and "
                "did not report a result. Verify that the VM is running and its agent healthy.",
            },
            now,
        )
    for item in _queue.overdue(conn, now, machine):
        deadline = item.deadline.isoformat() if item.deadline else "its deadline"
        if item.kind == INSTALL:
            duration = item.payload.get("maximumDuration", "PT4H")
            error = {
                "code": "MaintenanceWindowExceeded",
                "message": f"The installation on VM '{name}' did not finish within its maximum "
                f"duration of {duration}: the agent reported no result by {deadline}.",
            }
        else:
            error = {
                "code": "OperationTimedOut",
                "message": f"The operation '{item.kind}' on VM '{name}' timed out: the agent "
                f"reported no result by {deadline}.",
            }
        expired = {"status": FAILED, "error": error, "expired": True}
        if _queue.finish(conn, item, _queue.FAILED, expired, now):
            _give_up(conn, item, error, now, window_exceeded=item.kind == INSTALL)


def needs_settling(conn: Connection, machine: str, now: datetime) -> bool:
    """Whether ``expire`` would change anything for the machine (a read only)."""
    return any(
        (item.deadline is not None and item.deadline < now)
        or (item.state == _queue.LEASED and item.lease_until is not None and item.lease_until < now)
        for item in _queue.active(conn, machine)
    )


def complete(
    conn: Connection,
    item: _queue.WorkItem,
    status: str,
    output: Any,
    error: Any,
    now: datetime,
) -> dict[str, Any]:
    """Finish ``item`` with the agent's report and its operation with it; the stored outcome.

    ``status`` is ``Succeeded`` (``output`` required, in the shape of Azure's result) or
    ``Failed`` (``error`` says why; ``output`` optional). 400 if the report is malformed.
    """
    windows = item.payload.get("osType", "Windows") != "Linux"
    started = _started(conn, item)
    result = None
    if output is not None and item.kind in HISTORY_KIND:
        result = normalize_result(item.kind, output, windows=windows, started=started)
    elif output is not None:
        if not isinstance(output, dict):
            raise _bad_output("The output must be an object.", "output")
        result = output
    if status == SUCCEEDED and result is None:
        raise _bad_output("A succeeded result needs its 'output'.", "output")
    if item.kind == INSTALL and result is not None:
        result = {**result, **how_installed(item)}
    if status == SUCCEEDED and item.kind == UPGRADE:
        assert result is not None
        result = _upgrade_output(conn, item, result)
        # the machine now runs the new product's image: hotpatching can be enabled on it
        set_image(
            conn,
            item.machine,
            result["image"],
            now,
            baseline=result.get("baseline"),
            enrol=item.payload.get("enrol") is True,
        )
    failure = None
    if status == FAILED:
        failure = (
            _api_error(error, "error")
            if error is not None
            else {
                "details": [],
                "code": "PatchOperationFailed",
                "message": f"The agent reported that '{item.kind}' failed.",
            }
        )
    outcome = {"status": status, "output": result, "error": failure}
    _queue.finish(conn, item, _queue.DONE if status == SUCCEEDED else _queue.FAILED, outcome, now)
    if status == SUCCEEDED:
        _end_operation(conn, item.operation, SUCCEEDED, now, output=result)
    else:
        arm_error = {"code": failure["code"], "message": failure["message"]} if failure else None
        _end_operation(conn, item.operation, FAILED, now, output=result, error=arm_error)
    if item.kind in HISTORY_KIND:
        if result is None:
            assert failure is not None
            result = failure_result(item.kind, failure, started=started)
        record(conn, item.machine, item.kind, item.operation, started, result, now)
    return outcome


def _upgrade_output(
    conn: Connection, item: _queue.WorkItem, output: dict[str, Any]
) -> dict[str, Any]:
    """A succeeded upgrade's output, its ``image`` in the catalog's spelling; 400 if malformed.

    The image must be one of the product the upgrade was queued for: an agent cannot move
    its machine's model to any other image.
    """
    image = output.get("image")
    fields = ("publisher", "offer", "sku")
    if not isinstance(image, dict) or not all(isinstance(image.get(k), str) for k in fields):
        raise _bad_output(
            "A succeeded upgradeStack needs 'image', the publisher, offer and sku it moved to.",
            "output.image",
        )
    wanted = str(item.payload.get("product") or "")
    product = CatalogView.within(conn).product_named(wanted)
    candidates = product.images if product is not None else ()
    match = next((c for c in candidates if c.matches(*(image[k] for k in fields))), None)
    if match is None:
        raise _bad_output(
            "The image {publisher}:{offer}:{sku} is not an image of ".format(**image)
            + f"'{wanted}', the product this upgrade was queued for.",
            "output.image",
        )
    baseline = output.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or not _KB_RE.match(baseline)):
        raise _bad_output(
            "'baseline' must be the KB id of the new stack's baseline.", "output.baseline"
        )
    found = {**output, "image": match.to_json()}
    if baseline is not None:
        found["baseline"] = baseline.upper()
    return found


def how_installed(item: _queue.WorkItem) -> dict[str, Any]:
    """What an installation's result says about how it was started.

    On-demand installs (``installPatches``) skip the availability-first rollout and the
    machine's off-peak window, as Azure's do, and say so; automatic ones name their rollout.
    """
    if item.trigger == AUTO:
        return {
            "installationTrigger": "Automatic",
            "availabilityFirst": True,
            "offPeakWindow": True,
            "rollout": item.payload.get("rollout"),
        }
    return {
        "installationTrigger": "OnDemand",
        "availabilityFirst": False,
        "offPeakWindow": False,
        "note": "Installed on demand: the availability-first rollout and the machine's "
        "off-peak window do not apply.",
    }


def status_body(row: Any) -> dict[str, Any]:
    """The operation as its ``Azure-AsyncOperation`` URL answers (always with 200)."""
    body: dict[str, Any] = {"startTime": _iso(row.started)}
    if row.ended is not None:
        body["endTime"] = _iso(row.ended)
    body["status"] = row.status
    if row.output is not None:
        body["properties"] = {"output": row.output}
    if row.error is not None and row.status != SUCCEEDED:
        body["error"] = row.error
    body["name"] = row.id
    return body


def without_halted(conn: Connection, parameters: dict[str, Any]) -> dict[str, Any]:
    """``installPatches`` parameters that leave out every halted release not asked for by id.

    A release whose rollout the health gate halted installs on no more machines unless an
    operator names its KB id in ``kbNumbersToInclude``.
    """
    halted = [
        row.kb for row in conn.execute(select(releases.c.kb).where(releases.c.halted.is_not(None)))
    ]
    if not halted:
        return parameters
    found = dict(parameters)
    # the agent reads windowsParameters when given, else linuxParameters: change that one
    linux = not found.get("windowsParameters") and bool(found.get("linuxParameters"))
    key = "linuxParameters" if linux else "windowsParameters"
    rules = dict(found.get(key) or {})
    asked = {k.strip().upper() for k in rules.get("kbNumbersToInclude") or ()}
    excluded = list(rules.get("kbNumbersToExclude") or ())
    excluded += [kb for kb in halted if kb not in asked and kb not in excluded]
    rules["kbNumbersToExclude"] = excluded
    found[key] = rules
    return found


def start(
    conn: Connection,
    *,
    subscription: str,
    vm: dict[str, Any],
    machine: str,
    kind: str,
    parameters: dict[str, Any],
    timeout: timedelta,
    principal: Principal,
    now: datetime,
) -> tuple[str, str]:
    """Record a new operation on ``machine`` and queue its work; its id and location.

    Refuses with 409 when the agent is not alive or another patch operation is running.
    """
    name = str(vm.get("name") or _name_of(machine))
    require_agent(conn, machine, name, kind, now)
    expire(conn, machine, now)
    running = conn.execute(
        select(operations.c.id, operations.c.kind).where(
            operations.c.resource_id == machine, operations.c.status == IN_PROGRESS
        )
    ).first()
    if running is not None:
        raise ApiError(
            409,
            "OperationNotAllowed",
            f"Operation '{kind}' is not allowed on VM '{name}' since another patch operation "
            f"('{running.kind}', {running.id}) is in progress.",
        )
    location = str(vm.get("location") or "").replace(" ", "").lower() or "local"
    operation = str(uuid.uuid4())
    conn.execute(
        insert(operations).values(
            id=operation,
            subscription=subscription,
            location=location,
            resource_id=machine,
            kind=kind,
            status=IN_PROGRESS,
            request=parameters,
            output=None,
            error=None,
            started=now,
            ended=None,
            principal=principal.id,
        )
    )
    if kind == INSTALL:
        parameters = without_halted(conn, parameters)
    payload: dict[str, Any] = {
        "osType": os_type(vm),
        "deadline": _iso(now + timeout),
        "parameters": parameters,
    }
    if kind == INSTALL:
        payload["maximumDuration"] = parameters.get("maximumDuration", "PT4H")
    _queue.enqueue(conn, machine, kind, payload, now, operation=operation, trigger=ON_DEMAND)
    return operation, location


def queue_work(
    conn: Connection,
    *,
    vm: dict[str, Any],
    machine: str,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
) -> int:
    """Queue agent-side work of ``kind`` (``AGENT_WORK``) for ``machine``; the item's id.

    Refuses with 409 ``OperationNotAllowed`` when the agent is not alive or the machine's
    agent has another such item queued or running.
    """
    if kind not in AGENT_WORK:
        raise ValueError(f"{kind!r} is not agent-side work")
    name = str(vm.get("name") or _name_of(machine))
    # the machine's row is the lock that keeps two requests from queueing work side by side
    conn.execute(
        select(machines.c.resource_id).where(machines.c.resource_id == machine).with_for_update()
    )
    require_agent(conn, machine, name, kind, now)
    expire(conn, machine, now)
    for item in _queue.active(conn, machine):
        if item.kind in AGENT_WORK:
            raise ApiError(
                409,
                "OperationNotAllowed",
                f"Operation '{kind}' is not allowed on VM '{name}' since its agent has not yet "
                f"finished '{item.kind}' (work item {item.id}).",
            )
    timeout = REVERT_TIMEOUT if kind == REVERT else UPGRADE_TIMEOUT
    body = {**payload, "deadline": _iso(now + timeout)}
    return _queue.enqueue(conn, machine, kind, body, now, trigger=ON_DEMAND)


# --- routes -----------------------------------------------------------------------------------


def operations_router(ctx: ArmContext, auth: Authenticator, notifier: _queue.Notifier) -> APIRouter:
    """``assessPatches``, ``installPatches``, their operation status, and ``instanceView``."""
    router = APIRouter(tags=["virtual machines"])
    vm_version = api_version("compute", resource_type="virtualMachines")
    op_version = api_version("compute", resource_type="locations/operations")

    def begin(
        request: Request,
        api: str,
        principal: Principal,
        subscription: str,
        group: str,
        name: str,
        kind: str,
        parameters: dict[str, Any],
        timeout: timedelta,
    ) -> Response:
        sub = subscription_id(subscription)
        require(principal, "write", sub, f"Microsoft.Compute/virtualMachines/{kind}/action")
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            require_provider(conn, sub, "Microsoft.Compute", now)
            require_group(conn, sub, group)
            vm = get_vm(conn, sub, group, name)
            machine = _vm_key(vm, sub, group, name)
            operation, location = start(
                conn,
                subscription=sub,
                vm=vm,
                machine=machine,
                kind=kind,
                parameters=parameters,
                timeout=timeout,
                principal=principal,
                now=now,
            )
        notifier.notify(machine)
        path = f"/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/operations/{operation}"
        return Response(
            status_code=202,
            headers={
                "Azure-AsyncOperation": absolute(request, path, **{"api-version": api}),
                "Location": absolute(request, path, monitor="true", **{"api-version": api}),
            },
        )

    @router.post(_VM_PATH + "/assesspatches", status_code=202, response_class=Response)
    def assess_patches(
        request: Request,
        subscription: str,
        group: str,
        name: str,
        api: str = Depends(vm_version),
        principal: Principal = Depends(auth),
    ) -> Response:
        """Assess the VM's patches: 202, then poll ``Azure-AsyncOperation`` (Azure's LRO)."""
        return begin(request, api, principal, subscription, group, name, ASSESS, {}, ASSESS_TIMEOUT)

    @router.post(_VM_PATH + "/installpatches", status_code=202, response_class=Response)
    def install_patches(
        request: Request,
        subscription: str,
        group: str,
        name: str,
        api: str = Depends(vm_version),
        principal: Principal = Depends(auth),
        body: Any = Depends(json_body),
    ) -> Response:
        """Install patches on the VM (``VirtualMachineInstallPatchesParameters``): an LRO."""
        sub = subscription_id(subscription)
        require(principal, "write", sub, "Microsoft.Compute/virtualMachines/installPatches/action")
        parameters, duration = install_parameters(body)
        return begin(
            request,
            api,
            principal,
            subscription,
            group,
            name,
            INSTALL,
            parameters,
            duration + INSTALL_GRACE,
        )

    @router.get(
        "/subscriptions/{subscription}/providers/microsoft.compute/locations/{location}"
        "/operations/{operation}",
        response_model=None,
    )
    def operation_status(
        request: Request,
        subscription: str,
        location: str,
        operation: str,
        _api: str = Depends(op_version),
        principal: Principal = Depends(auth),
    ) -> Response:
        """A patch operation's status (always 200), or its result with ``monitor=true``.

        The ``monitor=true`` form is Azure's ``Location`` URL: 202 while the operation
        runs, then 200 with the bare result (or the error, with 409, if it failed).
        """
        sub = subscription_id(subscription)
        require(principal, "read", sub, "Microsoft.Compute/locations/operations/read")
        now = ctx.clock()

        def load(conn: Connection) -> Any:
            row = _operation_row(conn, operation)
            if (
                row is None
                or row.subscription != sub
                or row.location != location.replace(" ", "").lower()
            ):
                raise ApiError(
                    404,
                    "NotFound",
                    f"The operation '{operation}' was not found in location '{location}'.",
                )
            return row

        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            require_provider(conn, sub, "Microsoft.Compute", now)
            row = load(conn)
            settle = row.status == IN_PROGRESS and needs_settling(conn, row.resource_id, now)
        if settle:
            with ctx.engine.begin() as conn:
                expire(conn, row.resource_id, now)
                row = load(conn)
        if request.query_params.get("monitor", "").lower() != "true":
            return JSONResponse(status_body(row))
        if row.status == IN_PROGRESS:
            return Response(status_code=202, headers={"Location": str(request.url)})
        if row.status == SUCCEEDED:
            return JSONResponse(row.output)
        error = row.error or {"code": "OperationFailed", "message": "The operation failed."}
        return JSONResponse({"error": error}, status_code=409)

    @router.get(_VM_PATH + "/instanceview")
    def get_instance_view(
        subscription: str,
        group: str,
        name: str,
        _api: str = Depends(vm_version),
        principal: Principal = Depends(auth),
    ) -> Any:
        """The VM's run-time state: agent, health, power state and ``patchStatus``."""
        sub = subscription_id(subscription)
        require(principal, "read", sub, "Microsoft.Compute/virtualMachines/instanceView/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            require_provider(conn, sub, "Microsoft.Compute", ctx.clock())
            require_group(conn, sub, group)
            return instance_view_of(conn, ctx, get_vm(conn, sub, group, name))

    return router
