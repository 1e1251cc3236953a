"""The node agents' protocol, under ``/agent/…``: enrol, heartbeat, take work, report results.

Not part of Azure, but shaped like the rest of the API: JSON bodies, ARM-shaped errors,
bearer tokens. An agent enrols once with a user's token (Owner or Contributor of the
machine's subscription, or an administrator) and receives its own ``Agent`` credential,
which reaches that one machine's heartbeat, work and history and nothing else: every query
here is keyed by the credential's machine, never by an id from the request alone.

- ``POST /agent/heartbeat`` is the hot path (every agent, every minute or so): a lean
  Starlette route ahead of all others (``Heartbeats``); heartbeats are committed before they
  are answered, in shared short transactions (``HeartbeatWriter``, group commit). Its answer carries ``nextHeartbeatSeconds``, which grows when the server is
  busy, so a large fleet backs off by itself; heartbeats also renew the leases of work the
  agent holds.
- ``GET /agent/jobs?wait=S`` long-polls: it waits on an in-process notification and
  re-checks the database every ``RECHECK_SECONDS``, so work queued by another process or
  before a restart is found too; idle checks are reads only.
- ``POST /agent/jobs/{id}/result`` is idempotent: a repeated report of a finished item
  answers the stored outcome.

- ``GET /agent/machine`` tells the agent what its machine is: image, catalog product,
  whether it can take hotpatches or must first be upgraded, patch settings, environment.
  The enrolment's answer carries the same document.

The user-facing routes of a machine's agent-side state are here too, because they read and
queue the same things: ``GET /hotpatch/machines/{vm id}/history`` (beside the agent's own
``GET /agent/history``), ``…/hotpatchStatus``, ``POST …/revertHotpatch`` and
``…/upgradeStack`` (work for the agent that is no ARM operation), and ``GET …/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from starlette.routing import Route

from pyhotpatch.clock import Clock
from pyhotpatch.server import _queue
from pyhotpatch.server._auth import Authenticator, Principal, forbid, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._compute import (
    get_vm,
    hotpatch_status,
    machine_document,
    vm_by_id,
)
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import absolute, page, subscription_id
from pyhotpatch.server.arm._groups import require_group
from pyhotpatch.server.arm._operations import (
    FAILED,
    REVERT,
    SUCCEEDED,
    UPGRADE,
    complete,
    expire,
    json_body,
    needs_settling,
    operations_router,
    queue_work,
    revert_parameters,
    upgrade_payload,
)
from pyhotpatch.server.arm._subscriptions import require_subscription
from pyhotpatch.storage._tables import machines, patch_history, presence, work_items

log = logging.getLogger("pyhotpatch.server.agents")

#: the longest a work poll may wait, in seconds
MAX_WAIT = 30.0
#: how often a waiting poll looks at the database, in seconds
RECHECK_SECONDS = 1.0
_KB_RE = re.compile(r"^KB[0-9]{4,10}$", re.IGNORECASE)
#: the largest ``reported`` or ``health`` document an agent may send, in bytes of JSON
MAX_REPORTED = 64 * 1024
HEALTH_STATES = ("Healthy", "Unhealthy", "Unknown")

_MACHINE_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
    r"Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)


class Backoff:
    """How long agents should wait before their next heartbeat, given this server's load.

    ``base`` seconds while heartbeats arrive at no more than ``comfortable`` per second;
    beyond that the interval grows in proportion, up to ``ceiling`` (kept below the 10
    minutes after which an agent counts as gone). Load is real time, not the domain's
    clock, so it is measured with ``now`` (monotonic by default). A ±10 % jitter spreads
    agents that started together.
    """

    def __init__(
        self,
        *,
        base: float = 60.0,
        ceiling: float = 300.0,
        comfortable: float = 100.0,
        window: float = 10.0,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.ceiling = ceiling
        self.comfortable = comfortable
        self.window = window
        self._now = now
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._since = now()
        self._count = 0
        self._rate = 0.0

    def rate(self) -> float:
        """Heartbeats per second: over the last full window, or this one if it is already busier."""
        now = self._now()
        with self._lock:
            elapsed = now - self._since
            if elapsed >= self.window:
                self._rate = self._count / elapsed
                self._since, self._count = now, 0
                elapsed = 0.0
            current = self._count / elapsed if elapsed >= 1.0 else 0.0
            return max(self._rate, current)

    def next(self) -> int:
        """Count one heartbeat; the seconds to wait before the next."""
        rate = self.rate()
        with self._lock:
            self._count += 1
        seconds = self.base * max(1.0, rate / self.comfortable)
        seconds *= self._rng.uniform(0.9, 1.1)
        return int(min(self.ceiling, max(1.0, seconds)))


@dataclass
class _Beat:
    machine: str
    values: dict[str, Any]
    done: Future[dict[str, int] | None]


class HeartbeatWriter:
    """Writes heartbeats in batches: one transaction for all that arrived meanwhile.

    Heartbeats are the hot path: every agent, every minute or so. Each one is committed
    before it is answered (``submit``'s future resolves after the commit), but the commit
    is shared: a writer thread takes every heartbeat waiting, updates their machines, reads
    their queued work and renews their leases in one short transaction, so a busy server
    does one commit per batch instead of one per agent and its requests never queue on the
    database's write lock. The thread stops after ``idle`` seconds without heartbeats and
    starts again with the next one.

    ``submit``'s future gives the machine's queued and leased work counts, or None if the
    machine is not enrolled.
    """

    def __init__(
        self, engine: Engine, clock: Clock, *, batch: int = 500, idle: float = 5.0
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.batch = batch
        self.idle = idle
        self._pending: list[_Beat] = []
        self._wake = threading.Condition()
        self._running = False

    def submit(self, machine: str, values: dict[str, Any]) -> Future[dict[str, int] | None]:
        """Queue a heartbeat of ``machine`` for writing.

        The machine is recorded as seen when the batch is written; ``values`` are the
        ``agent_machines`` columns it reported (possibly none).
        """
        beat = _Beat(machine.lower(), values, Future())
        with self._wake:
            self._pending.append(beat)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="heartbeat-writer", daemon=True).start()
            self._wake.notify()
        return beat.done

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._pending:
                    self._wake.wait(self.idle)
                if not self._pending:
                    self._running = False
                    return
                beats, self._pending = self._pending[: self.batch], self._pending[self.batch :]
            try:
                found = self._write(beats)
            except Exception as exc:
                log.exception("writing %d heartbeats failed", len(beats))
                for beat in beats:
                    beat.done.set_exception(exc)
            else:
                for beat in beats:
                    beat.done.set_result(found.get(beat.machine))

    def _write(self, beats: list[_Beat]) -> dict[str, dict[str, int]]:
        keys = sorted({beat.machine for beat in beats})
        now = self.clock()
        with self.engine.begin() as conn:
            known = _heard(conn, keys, now)
            shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for beat in beats:
                if beat.machine not in known or not beat.values:
                    continue
                columns = tuple(sorted(beat.values))
                row = {f"v_{k}": v for k, v in beat.values.items()}
                shapes.setdefault(columns, []).append({"key": beat.machine, **row})
            for columns, rows in shapes.items():
                conn.execute(
                    update(machines)
                    .where(machines.c.resource_id == bindparam("key"))
                    .values({column: bindparam(f"v_{column}") for column in columns}),
                    rows,
                )
            found = {key: {_queue.QUEUED: 0, _queue.LEASED: 0} for key in known}
            for machine, state, number in conn.execute(
                select(work_items.c.machine, work_items.c.state, func.count())
                .where(
                    work_items.c.machine.in_(list(known)),
                    work_items.c.state.in_(_queue.ACTIVE),
                )
                .group_by(work_items.c.machine, work_items.c.state)
            ):
                found[machine][state] = int(number)
            holding = [key for key, counts in found.items() if counts[_queue.LEASED]]
            for key in holding:
                _queue.renew(conn, key, now)
        return found


def _heard(conn: Connection, keys: Sequence[str], now: datetime) -> set[str]:
    """Record that the enrolled machines among ``keys`` were heard from; which those are.

    An enrolled machine has a presence row once it has been heard from, so one statement
    usually both writes the heartbeats and says which machines are enrolled.
    """
    written: set[str] = set()
    if conn.dialect.update_returning:
        written = set(
            conn.execute(
                update(presence)
                .where(presence.c.resource_id.in_(keys))
                .values(last_seen=now)
                .returning(presence.c.resource_id)
            ).scalars()
        )
    rest = [key for key in keys if key not in written]
    if not rest:
        return written
    known = set(
        conn.execute(
            select(machines.c.resource_id).where(machines.c.resource_id.in_(rest))
        ).scalars()
    )
    seen(conn, sorted(known), now)
    return written | known


def seen(conn: Connection, keys: Sequence[str], now: datetime) -> None:
    """Record that the agents of the machines ``keys`` were heard from at ``now``."""
    if not keys:
        return
    written = conn.execute(
        update(presence).where(presence.c.resource_id.in_(list(keys))).values(last_seen=now)
    ).rowcount
    if written == len(keys):
        return
    present = {
        row.resource_id
        for row in conn.execute(
            select(presence.c.resource_id).where(presence.c.resource_id.in_(list(keys)))
        )
    }
    new = [{"resource_id": key, "last_seen": now} for key in keys if key not in present]
    if new:
        conn.execute(insert(presence), new)


def release_columns(reported: dict[str, Any]) -> dict[str, str | None]:
    """The baseline and active hotpatch an agent reported, as the orchestrator reads them."""

    def kb(value: Any) -> str | None:
        return value.upper() if isinstance(value, str) and _KB_RE.match(value) else None

    return {
        "baseline": kb(reported.get("baseline")),
        "hotpatch": kb(reported.get("activeHotpatch")),
    }


def parse_machine(value: str) -> tuple[str, str, str]:
    """A virtual machine's resource id as (subscription, group, name); 400 if it is not one."""
    match = _MACHINE_RE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ApiError(
            400,
            "InvalidParameter",
            f"'{value}' is not a virtual machine's resource id "
            "(/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Compute/virtualMachines/{name}).",
            target="machine",
        )
    return subscription_id(match["sub"]), match["group"], match["name"]


def machine_in_path(value: str) -> tuple[str, str, str]:
    """The VM id a ``/hotpatch/machines/{vm id}/…`` path carries, as (subscription, group, name).

    The id may come with or without its leading slash; 400 if it is not a VM's id.
    """
    return parse_machine(value if value.startswith("/") else "/" + value)


def agent_machine(principal: Principal) -> str:
    """The machine an Agent credential stands for; 403 for any other caller."""
    if principal.role != "Agent" or not principal.machine:
        raise forbid(principal, "Hotpatch/agent/action", "/agent")
    return principal.machine.lower()


def _document(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidParameter", f"'{name}' must be an object.", target=name)
    if len(json.dumps(value, default=str)) > MAX_REPORTED:
        raise ApiError(
            400, "InvalidParameter", f"'{name}' exceeds {MAX_REPORTED} bytes.", target=name
        )
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestContent", "The request body must be a JSON object.")
    return body


def _history(conn: Connection, machine: str, since: Any) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(patch_history)
        .where(patch_history.c.machine == machine, patch_history.c.started >= since)
        .order_by(patch_history.c.started.desc(), patch_history.c.id.desc())
    )
    return [
        {
            "operation": row.operation,
            "kind": row.kind,
            "status": row.status,
            "startTime": row.started.isoformat(),
            "endTime": row.ended.isoformat() if row.ended else None,
            "result": row.result,
        }
        for row in rows
    ]


class Heartbeats:
    """``POST /agent/heartbeat``, the hot path, served without FastAPI's machinery.

    Every agent calls it every minute or so, so it is a plain Starlette route placed before
    all others (``install_agent_routes``): no route search through the ARM API, no
    dependency resolution, no thread for authentication when the token is cached. It keeps
    the documented route's contract: the same validation, the same ARM-shaped errors (raised
    as ``ApiError``), and the answer only after the heartbeat is committed.
    """

    def __init__(self, ctx: ArmContext, auth: Authenticator) -> None:
        self.ctx = ctx
        self.auth = auth
        self.backoff = Backoff()
        self.writer = HeartbeatWriter(ctx.engine, ctx.clock)

    async def record(self, principal: Principal, body: Any) -> dict[str, int]:
        """Validate and commit one heartbeat of ``principal``'s machine; the answer's body."""
        machine = agent_machine(principal)
        body = _object(body)
        health = _document(body.get("health") or {"status": "Unknown"}, "health")
        if health.get("status") not in HEALTH_STATES:
            raise ApiError(
                400,
                "InvalidParameter",
                "'health.status' must be one of " + ", ".join(HEALTH_STATES) + ".",
                target="health.status",
            )
        values: dict[str, Any] = {"health": health}
        if body.get("reported") is not None:
            values["reported"] = _document(body["reported"], "reported")
            values.update(release_columns(values["reported"]))
        if isinstance(body.get("agentVersion"), str) and len(body["agentVersion"]) <= 64:
            values["agent_version"] = body["agentVersion"]
        waiting = await asyncio.wrap_future(self.writer.submit(machine, values))
        if waiting is None:
            raise ApiError(
                404, "MachineNotEnrolled", "This machine is not enrolled; enrol its agent."
            )
        seconds = self.backoff.next()
        if waiting[_queue.LEASED]:
            seconds = min(seconds, int(_queue.LEASE.total_seconds() // 3))
        return {"nextHeartbeatSeconds": seconds, "work": waiting[_queue.QUEUED]}

    async def endpoint(self, request: Request) -> Response:
        """The heartbeat route's ASGI endpoint."""
        principal = await self.auth.resolve(request)
        body = await json_body(request)
        answer = await self.record(principal, body)
        return Response(json.dumps(answer).encode(), media_type="application/json")

    def route(self) -> Route:
        """The Starlette route of ``endpoint``."""
        return Route("/agent/heartbeat", self.endpoint, methods=["POST"], include_in_schema=False)


def install_agent_routes(app: FastAPI, ctx: ArmContext, auth: Authenticator) -> None:
    """Add the agent protocol to ``app``, its heartbeat route ahead of every other route."""
    beats = Heartbeats(ctx, auth)
    app.include_router(agent_router(ctx, auth, beats))
    app.router.routes.insert(0, beats.route())


def agent_router(
    ctx: ArmContext, auth: Authenticator, heartbeats: Heartbeats | None = None
) -> APIRouter:
    """The agent protocol, the machine history, and the ARM patch operations they serve."""
    notifier = _queue.Notifier()
    beats = heartbeats or Heartbeats(ctx, auth)
    backoff = beats.backoff
    router = APIRouter(tags=["agent"])
    router.include_router(operations_router(ctx, auth, notifier))

    @router.post("/agent/enroll", status_code=201)
    def enroll(
        request: Request, body: Any = Depends(json_body), principal: Principal = Depends(auth)
    ) -> Any:
        """Enrol a machine's agent; a new Agent credential, shown only in this answer.

        Any earlier credential of the machine is revoked: one machine, one agent. The answer's
        ``machine`` is what ``GET /agent/machine`` answers.
        """
        body = _object(body)
        sub, group, name = parse_machine(body.get("machine"))
        require(principal, "write", sub, "Microsoft.Compute/virtualMachines/enroll/action")
        version = body.get("agentVersion")
        if version is not None and (not isinstance(version, str) or len(version) > 64):
            raise ApiError(
                400,
                "InvalidParameter",
                "'agentVersion' must be a string of at most 64 characters.",
                target="agentVersion",
            )
        reported = _document(body.get("reported") or {}, "reported")
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            vm = get_vm(conn, sub, group, name)
            vm_id = str(vm.get("id") or body["machine"])
            key = vm_id.lower()
            values = {
                "agent_version": version,
                "reported": reported,
                **release_columns(reported),
            }
            known = conn.execute(
                select(machines.c.resource_id).where(machines.c.resource_id == key)
            ).first()
            if known is None:
                conn.execute(
                    insert(machines).values(
                        resource_id=key,
                        subscription=sub,
                        enrolled=now,
                        health={"status": "Unknown"},
                        assessment=None,
                        installation=None,
                        **values,
                    )
                )
            else:
                conn.execute(update(machines).where(machines.c.resource_id == key).values(values))
            seen(conn, [key], now)
            document = machine_document(conn, vm)
        tokens = request.app.state.tokens
        tokens.revoke_machine(key)
        agent, secret = tokens.create(
            f"agent {vm.get('name', name)}", "Agent", subscription=sub, machine=key
        )
        return {
            "machine": document,
            "token": secret,
            "tokenId": agent.id,
            "nextHeartbeatSeconds": backoff.next(),
        }

    @router.post("/agent/heartbeat")
    async def heartbeat(
        body: Any = Depends(json_body), principal: Principal = Depends(auth)
    ) -> Any:
        """Record that the agent is alive, with its health and what it reports.

        The answer says when to come back and how much work waits for the agent. (Served by
        ``Heartbeats.endpoint``, which comes first; this declaration documents it.)
        """
        return await beats.record(principal, body)

    def take(machine: str) -> list[_queue.WorkItem]:
        now = ctx.clock()
        with ctx.engine.connect() as conn:
            if not _queue.ready(conn, machine, now):
                return []
        with ctx.engine.begin() as conn:
            expire(conn, machine, now)
            items = _queue.lease(conn, machine, now)
            if items:
                seen(conn, [machine], now)
        return items

    @router.get("/agent/jobs", response_model=None)
    async def work(
        request: Request,
        wait: float = Query(0.0, ge=0.0, le=MAX_WAIT, description="Seconds to wait for work."),
        principal: Principal = Depends(auth),
    ) -> Response:
        """Lease the machine's queued work: 200 with ``items``.

        Waits up to ``wait`` seconds for work to arrive; 204 if none did. A poll whose
        agent has gone away (killed while waiting) leases nothing, so the work waits
        for the agent's next poll rather than for a lease to lapse.
        """
        machine = agent_machine(principal)
        deadline = time.monotonic() + wait
        while True:
            if await request.is_disconnected():
                return Response(status_code=204)
            items = await run_in_threadpool(take, machine)
            if items:
                return JSONResponse({"items": [item.to_json() for item in items]})
            left = deadline - time.monotonic()
            if left <= 0:
                return Response(status_code=204)
            await notifier.wait(machine, min(RECHECK_SECONDS, left))

    @router.post("/agent/jobs/{item_id}/result")
    def result(
        item_id: int = Path(ge=1, le=2**62),
        body: Any = Depends(json_body),
        principal: Principal = Depends(auth),
    ) -> Any:
        """Report the outcome of a work item; finishes its operation. Idempotent."""
        machine = agent_machine(principal)
        body = _object(body)
        status = body.get("status")
        if status not in (SUCCEEDED, FAILED):
            raise ApiError(
                400,
                "InvalidParameter",
                "'status' must be Succeeded or Failed.",
                target="status",
            )
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            item = _queue.get(conn, item_id, machine, for_update=True)
            if item is None:
                raise ApiError(
                    404, "WorkItemNotFound", f"There is no work item {item_id} for this machine."
                )
            if item.finished:
                stored = item.result or {}
                if stored.get("expired"):
                    raise ApiError(
                        409,
                        "WorkItemExpired",
                        f"Work item {item_id} expired before its result came: "
                        f"{(stored.get('error') or {}).get('message', 'it timed out')} "
                        "The result was not recorded.",
                    )
                outcome = stored
                state = item.state
            else:
                outcome = complete(conn, item, status, body.get("output"), body.get("error"), now)
                state = _queue.DONE if status == SUCCEEDED else _queue.FAILED
        return {"id": item.id, "operation": item.operation, "state": state, "outcome": outcome}

    @router.get("/agent/history")
    def agent_history(
        request: Request,
        days: int = Query(30, ge=1, le=90, description="How many days back."),
        principal: Principal = Depends(auth),
    ) -> Any:
        """The machine's own assessments and installations of the last ``days`` days."""
        machine = agent_machine(principal)
        with ctx.engine.connect() as conn:
            found = _history(conn, machine, ctx.clock() - timedelta(days=days))
        return page(request, found)

    @router.get("/agent/machine")
    def own_machine(principal: Principal = Depends(auth)) -> Any:
        """What the agent needs to know about its machine: image, product, patch settings."""
        machine = agent_machine(principal)
        with ctx.engine.connect() as conn:
            model = vm_by_id(conn, machine)
            if model is None:
                raise ApiError(
                    404, "ResourceNotFound", "The machine of this credential no longer exists."
                )
            return machine_document(conn, model)

    def queue(
        request: Request,
        machine: str,
        principal: Principal,
        kind: str,
        payload_of: Callable[[Connection, dict[str, Any]], dict[str, Any]],
    ) -> JSONResponse:
        """Queue agent-side work of ``kind`` for a user: 202 with the work item's id."""
        sub, group, name = machine_in_path(machine)
        require(principal, "write", sub, f"Microsoft.Compute/virtualMachines/{kind}/action")
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            vm = get_vm(conn, sub, group, name)
            vm_id = str(vm["id"])
            payload = payload_of(conn, vm)
            item = queue_work(
                conn, vm=vm, machine=vm_id.lower(), kind=kind, payload=payload, now=now
            )
        notifier.notify(vm_id.lower())
        return JSONResponse(
            {"workItem": item, "kind": kind, "machine": vm_id},
            status_code=202,
            headers={"Location": absolute(request, f"/hotpatch/machines{vm_id}/jobs/{item}")},
        )

    @router.post("/hotpatch/machines/{machine:path}/revertHotpatch", status_code=202)
    def revert_hotpatch(
        request: Request,
        machine: str,
        body: Any = Depends(json_body),
        principal: Principal = Depends(auth),
    ) -> Any:
        """Have the machine's agent revert its active hotpatch (``kbId``: only if it is that one).

        202 with the work item; 409 if the agent is not running or is busy with such work.
        """
        payload = revert_parameters(body)
        return queue(request, machine, principal, REVERT, lambda _conn, _vm: payload)

    @router.post("/hotpatch/machines/{machine:path}/upgradeStack", status_code=202)
    def upgrade_stack(request: Request, machine: str, principal: Principal = Depends(auth)) -> Any:
        """Have the machine's agent move it to its product's hotpatch-capable successor.

        202 with the work item; when it succeeds the VM's image is the new product's, and
        hotpatching can be enabled. 409 if there is nothing to upgrade to or no running agent.
        """
        return queue(
            request,
            machine,
            principal,
            UPGRADE,
            lambda conn, vm: upgrade_payload(machine_document(conn, vm)),
        )

    @router.get("/hotpatch/machines/{machine:path}/jobs/{item_id}")
    def machine_work(
        machine: str,
        item_id: int = Path(ge=1, le=2**62),
        principal: Principal = Depends(auth),
    ) -> Any:
        """One work item of the machine's agent: what it was asked, its state and result."""
        sub, group, name = machine_in_path(machine)
        require(principal, "read", sub, "Microsoft.Compute/virtualMachines/read")
        now = ctx.clock()
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            key = str(get_vm(conn, sub, group, name)["id"]).lower()
            item = _queue.get(conn, item_id, key)
            settle = item is not None and not item.finished and needs_settling(conn, key, now)
        if settle:
            with ctx.engine.begin() as conn:
                expire(conn, key, now)
                item = _queue.get(conn, item_id, key)
        if item is None:
            raise ApiError(
                404, "WorkItemNotFound", f"There is no work item {item_id} for this machine."
            )
        return item.describe()

    @router.get("/hotpatch/machines/{machine:path}/hotpatchStatus")
    def machine_hotpatch_status(machine: str, principal: Principal = Depends(auth)) -> Any:
        """The machine's hotpatch state: running, health, baseline, active hotpatch, transition."""
        sub, group, name = machine_in_path(machine)
        require(principal, "read", sub, "Microsoft.Compute/virtualMachines/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            return hotpatch_status(conn, ctx, get_vm(conn, sub, group, name))

    @router.get("/hotpatch/machines/{machine:path}/history")
    def machine_history(
        request: Request,
        machine: str,
        days: int = Query(30, ge=1, le=90, description="How many days back."),
        principal: Principal = Depends(auth),
    ) -> Any:
        """A virtual machine's assessments and installations of the last ``days`` days."""
        sub, group, name = machine_in_path(machine)
        require(principal, "read", sub, "Microsoft.Compute/virtualMachines/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            require_group(conn, sub, group)
            vm = get_vm(conn, sub, group, name)
            key = str(vm["id"]).lower()
            found = _history(conn, key, ctx.clock() - timedelta(days=days))
        return page(request, found)

    return router
