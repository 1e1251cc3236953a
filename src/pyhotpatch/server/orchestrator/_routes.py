"""The orchestrator's API: rollouts, their control, settings, compliance and notices.

Everything lives under ``/hotpatch/…`` and follows the ARM conventions of the rest of the
control plane (errors as ``{"error": {"code", "message"}}``, ``value``/``nextLink`` lists).
Rollouts are about releases, which every subscription shares: any signed-in principal may
read them; pausing, resuming and cancelling them and changing the settings take an
administrator. Compliance is scoped: a subscription's token sees its own machines.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import Connection, func, select

from pyhotpatch.server._agent_routes import machine_in_path
from pyhotpatch.server._auth import Authenticator, Principal, require, require_admin
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._compute import get_vm, machine_document
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import page
from pyhotpatch.server.arm._groups import require_group
from pyhotpatch.server.arm._operations import json_body, upgrade_payload
from pyhotpatch.server.arm._subscriptions import require_subscription
from pyhotpatch.server.orchestrator import _compliance
from pyhotpatch.server.orchestrator._orchestrator import Orchestrator
from pyhotpatch.server.orchestrator._rules import ACTIVE, CANCELED, PAUSED, TransitionRefused
from pyhotpatch.server.orchestrator._settings import Settings, load, save
from pyhotpatch.storage import serialized
from pyhotpatch.storage._tables import (
    fleet_machines,
    machines,
    notices,
    rollout_batches,
    rollout_installs,
    rollout_regions,
    rollouts,
)

_ACTIONS = {"pause": PAUSED, "resume": ACTIVE, "cancel": CANCELED}


def _iso(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def rollout_document(conn: Connection, row: Any, *, detail: bool = False) -> dict[str, Any]:
    """A rollout as the API shows it; with ``detail``, its regions and batches too."""
    counts = {
        state: int(number)
        for state, number in conn.execute(
            select(rollout_installs.c.state, func.count())
            .where(rollout_installs.c.rollout == row.id)
            .group_by(rollout_installs.c.state)
        )
    }
    doc: dict[str, Any] = {
        "id": row.id,
        "release": row.release,
        "product": row.product,
        "state": row.state,
        "reason": row.reason,
        "phase": row.phase,
        "phases": row.phases,
        "batches": row.batches,
        "published": _iso(row.published),
        "deadline": _iso(row.deadline),
        "created": _iso(row.created),
        "updated": _iso(row.updated),
        "installs": counts,
    }
    if detail:
        doc["regions"] = [
            {
                "region": r.region,
                "phase": r.phase,
                "ring": r.ring,
                "soakUntil": _iso(r.soak_until),
                "done": _iso(r.done),
                "batches": r.batches,
            }
            for r in conn.execute(
                select(rollout_regions)
                .where(rollout_regions.c.rollout == row.id)
                .order_by(rollout_regions.c.phase, rollout_regions.c.region)
            )
        ]
        members: dict[int, list[dict[str, Any]]] = {}
        for m in conn.execute(
            select(
                rollout_installs.c.batch,
                rollout_installs.c.machine,
                rollout_installs.c.state,
                rollout_installs.c.healthy,
                fleet_machines.c.availability_set,
                fleet_machines.c.update_domain,
            )
            .select_from(
                rollout_installs.outerjoin(
                    fleet_machines, fleet_machines.c.id == rollout_installs.c.machine
                )
            )
            .where(rollout_installs.c.rollout == row.id, rollout_installs.c.batch.is_not(None))
            .order_by(rollout_installs.c.machine)
        ):
            members.setdefault(m.batch, []).append(
                {
                    "machine": m.machine,
                    "name": m.machine.rsplit("/", 1)[-1],
                    "availabilitySet": (
                        m.availability_set.rsplit("/", 1)[-1] if m.availability_set else None
                    ),
                    "updateDomain": m.update_domain if m.availability_set else None,
                    "state": m.state,
                    "healthy": m.healthy,
                }
            )
        doc["batchList"] = [
            {
                "number": b.number,
                "machines": members.get(b.id, []),
                "region": b.region,
                "ring": b.ring,
                "zone": b.zone,
                "state": b.state,
                "size": b.size,
                "failed": b.failed,
                "unhealthy": b.unhealthy,
                "started": _iso(b.started),
                "installed": _iso(b.installed),
                "judged": _iso(b.judged),
                "reason": b.reason,
            }
            for b in conn.execute(
                select(rollout_batches)
                .where(rollout_batches.c.rollout == row.id)
                .order_by(rollout_batches.c.number)
            )
        ]
        doc["settings"] = row.settings
    return doc


def orchestrator_router(
    ctx: ArmContext, auth: Authenticator, orchestrator: Orchestrator
) -> APIRouter:
    """Rollouts, orchestrator settings and passes, compliance, notices, scheduled upgrades."""
    router = APIRouter(tags=["orchestrator"])

    def one(conn: Connection, rollout: int) -> Any:
        row = conn.execute(select(rollouts).where(rollouts.c.id == rollout)).first()
        if row is None:
            raise ApiError(404, "RolloutNotFound", f"There is no rollout {rollout}.")
        return row

    @router.get("/hotpatch/rollouts")
    def list_rollouts(
        request: Request,
        state: str | None = Query(None, description="Only rollouts in this state."),
        principal: Principal = Depends(auth),
    ) -> Any:
        """Every automatic rollout, newest first."""
        with ctx.engine.connect() as conn:
            query = select(rollouts).order_by(rollouts.c.id.desc())
            if state is not None:
                query = query.where(rollouts.c.state == state)
            found = [rollout_document(conn, row) for row in conn.execute(query)]
        return page(request, found)

    @router.get("/hotpatch/rollouts/{rollout}")
    def get_rollout(
        rollout: int = Path(ge=1, le=2**31 - 1), principal: Principal = Depends(auth)
    ) -> Any:
        """One rollout with its phases, regions (ring, soak) and batches (health gates)."""
        with ctx.engine.connect() as conn:
            return rollout_document(conn, one(conn, rollout), detail=True)

    @router.post("/hotpatch/rollouts/{rollout}/{action}")
    def act(
        action: str,
        rollout: int = Path(ge=1, le=2**31 - 1),
        body: Any = Depends(json_body),
        principal: Principal = Depends(auth),
    ) -> Any:
        """Pause, resume or cancel a rollout (administrators); 409 when it cannot change."""
        require_admin(principal, f"rollouts/{action}")
        wanted = _ACTIONS.get(action)
        if wanted is None:
            raise ApiError(
                404, "UnknownAction", f"'{action}' is not one of: {', '.join(_ACTIONS)}."
            )
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason is not None and not isinstance(reason, str):
            raise ApiError(400, "InvalidParameter", "'reason' must be a string.", target="reason")
        if wanted == CANCELED and not reason:
            reason = f"cancelled by {principal.name}"
        try:
            orchestrator.change(rollout, wanted, reason=reason)
        except LookupError:
            raise ApiError(404, "RolloutNotFound", f"There is no rollout {rollout}.") from None
        except TransitionRefused as exc:
            raise ApiError(
                409,
                "RolloutStateConflict",
                f"Cannot {action} rollout {rollout}: " + "; ".join(exc.reasons) + ".",
            ) from None
        with ctx.engine.connect() as conn:
            return rollout_document(conn, one(conn, rollout), detail=True)

    @router.get("/hotpatch/orchestrator/settings")
    def get_settings(principal: Principal = Depends(auth)) -> Any:
        """The fleet's off-peak window, soak and bake times, health thresholds and limits."""
        with ctx.engine.connect() as conn:
            return load(conn).to_json()

    @router.patch("/hotpatch/orchestrator/settings")
    def patch_settings(body: Any = Depends(json_body), principal: Principal = Depends(auth)) -> Any:
        """Change some settings (administrators); rollouts under way keep theirs."""
        require_admin(principal, "orchestrator/settings/write")
        with ctx.engine.begin() as conn:
            serialized(conn, "orchestrator")
            try:
                changed = Settings.from_json(body, base=load(conn))
            except ValueError as exc:
                raise ApiError(400, "InvalidParameter", str(exc)) from None
            save(conn, changed)
        return changed.to_json()

    @router.post("/hotpatch/orchestrator/passes")
    def run_pass(principal: Principal = Depends(auth)) -> Any:
        """Run one orchestrator pass now (administrators); when the next one is due."""
        require_admin(principal, "orchestrator/passes/action")
        upcoming = orchestrator.tick()
        return {"nextPass": _iso(upcoming)}

    @router.get("/hotpatch/notices")
    def list_notices(
        request: Request,
        release: str | None = Query(None, description="Only notices about this KB id."),
        principal: Principal = Depends(auth),
    ) -> Any:
        """What operators were told (halted rollouts, failed reverts), newest first."""
        with ctx.engine.connect() as conn:
            query = select(notices).order_by(notices.c.id.desc()).limit(1000)
            if release is not None:
                query = query.where(notices.c.release == release.upper())
            found = [
                {
                    "id": n.id,
                    "time": _iso(n.at),
                    "level": n.level,
                    "rollout": n.rollout,
                    "release": n.release,
                    "subject": n.subject,
                    "message": n.message,
                }
                for n in conn.execute(query)
            ]
        return page(request, found)

    @router.get("/hotpatch/compliance")
    def fleet_compliance(
        subscription: str | None = Query(None, description="Only this subscription's machines."),
        principal: Principal = Depends(auth),
    ) -> Any:
        """The fleet's compliance; a subscription's token sees its own subscription only."""
        if principal.role != "Administrator":
            scope = subscription or principal.subscription
            if scope is None:
                raise ApiError(400, "InvalidParameter", "Name a subscription.")
            require(principal, "read", scope, "Microsoft.Compute/virtualMachines/read")
            subscription = scope
        with ctx.engine.connect() as conn:
            return _compliance.fleet(
                conn, ctx.clock(), subscription=subscription.lower() if subscription else None
            )

    @router.get("/hotpatch/machines/{machine:path}/compliance")
    def machine_compliance(machine: str, principal: Principal = Depends(auth)) -> Any:
        """The machine's compliance: baseline, active hotpatch, what it lacks, restart pending."""
        sub, group, name = machine_in_path(machine)
        require(principal, "read", sub, "Microsoft.Compute/virtualMachines/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            key = str(get_vm(conn, sub, group, name)["id"]).lower()
            found = _compliance.one(conn, key, ctx.clock())
        if found is None:
            raise ApiError(
                404, "MachineNotEnrolled", "No agent has enrolled this machine: nothing is known."
            )
        return found

    @router.post("/hotpatch/machines/{machine:path}/scheduleUpgrade", status_code=202)
    def schedule_upgrade(machine: str, principal: Principal = Depends(auth)) -> Any:
        """Move the machine to a hotpatch-capable stack in its next off-peak window.

        The upgrade installs the new stack's baseline with one restart; the machine is then
        enrolled in hotpatch. 202 with when it was asked; 404 if the machine has no agent.
        """
        sub, group, name = machine_in_path(machine)
        require(principal, "write", sub, "Microsoft.Compute/virtualMachines/upgradeStack/action")
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            vm = get_vm(conn, sub, group, name)
            key = str(vm["id"]).lower()
            upgrade_payload(machine_document(conn, vm))  # 409 when there is nothing to move to
            changed = conn.execute(
                machines.update().where(machines.c.resource_id == key).values(upgrade_requested=now)
            )
            if not changed.rowcount:
                raise ApiError(404, "MachineNotEnrolled", "No agent has enrolled this machine.")
        return {"machine": key, "requested": _iso(now), "when": "nextWindow"}

    return router
