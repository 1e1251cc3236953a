"""Queueing the orchestrator's work for agents: installs, reverts and upgrades.

These write the same rows an operator's request writes (an ``arm_operations`` row for an
install, an ``agent_work`` item the agent leases), marked ``trigger: auto``, so an
automatic install shows in the machine's operations and history like any other, and the
agent needs no second protocol. They never commit: the orchestrator's pass owns the
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from pyhotpatch.server import _queue
from pyhotpatch.server.arm._operations import (
    AUTO,
    IN_PROGRESS,
    INSTALL,
    INSTALL_GRACE,
    REVERT,
    REVERT_TIMEOUT,
    UPGRADE,
    UPGRADE_TIMEOUT,
)
from pyhotpatch.server.orchestrator._fleet import Machine
from pyhotpatch.storage._tables import operations

_OPERATION = insert(operations)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(duration: timedelta) -> str:
    """``duration`` as an ISO 8601 duration in whole minutes (``PT95M``)."""
    return f"PT{max(int(duration.total_seconds() // 60), 1)}M"


def queue_installs(
    conn: Connection,
    batch: Sequence[tuple[Machine, timedelta]],
    kb: str,
    now: datetime,
    *,
    rollout: int,
) -> list[int]:
    """Queue an automatic ``installPatches`` of exactly ``kb`` on each machine; the work items.

    Each ``(machine, duration)`` may run for ``duration`` (what is left of the machine's
    window) and restarts the service only if the release needs it. The batch's operations,
    and then its work items, are written with one statement each.
    """
    windows = {"classificationsToInclude": [], "kbNumbersToInclude": [kb]}
    operations, work = [], []
    for machine, duration in batch:
        parameters: dict[str, Any] = {
            "maximumDuration": duration_text(duration),
            "rebootSetting": "IfRequired",
            "windowsParameters": windows if machine.os_type != "Linux" else {},
            "linuxParameters": windows if machine.os_type == "Linux" else {},
        }
        operation = str(uuid.uuid4())
        operations.append(
            {
                "id": operation,
                "subscription": machine.subscription,
                "location": machine.region,
                "resource_id": machine.id,
                "kind": INSTALL,
                "status": IN_PROGRESS,
                "request": {**parameters, "rollout": rollout},
                "output": None,
                "error": None,
                "started": now,
                "ended": None,
                "principal": None,
            }
        )
        payload = {
            "osType": machine.os_type,
            "deadline": _iso(now + duration + INSTALL_GRACE),
            "parameters": parameters,
            "maximumDuration": parameters["maximumDuration"],
            "rollout": rollout,
        }
        work.append((machine.id, payload, operation))
    if operations:
        conn.execute(_OPERATION, operations)
    return _queue.enqueue_many(conn, INSTALL, work, now, trigger=AUTO)


def queue_revert(conn: Connection, machine: str, now: datetime, *, rollout: int) -> int:
    """Queue the revert of a machine's active hotpatch to the one it had before."""
    payload = {"to": "previous", "deadline": _iso(now + REVERT_TIMEOUT), "rollout": rollout}
    return _queue.enqueue(conn, machine, REVERT, payload, now, trigger=AUTO)


def queue_upgrade(conn: Connection, machine: str, payload: dict[str, Any], now: datetime) -> int:
    """Queue a scheduled stack upgrade (``payload`` as ``upgrade_payload`` builds it)."""
    body = {**payload, "deadline": _iso(now + UPGRADE_TIMEOUT), "enrol": True}
    return _queue.enqueue(conn, machine, UPGRADE, body, now, trigger=AUTO)
