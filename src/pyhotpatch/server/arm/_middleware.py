"""ASGI middleware for ARM's transport conventions.

Paths are case-insensitive in ARM (the Azure SDK sends ``resourcegroups``, templates send
``resourceGroups``): the fixed words of a path are folded to the lowercase spelling the
routes declare, while names keep the caller's spelling. Every response carries
``x-ms-request-id`` and ``x-ms-correlation-request-id``. Every change (any method but GET,
HEAD and OPTIONS) is written to the audit log with who made it and how it ended.

An agent's liveness and telemetry are not changes: ``POST /agent/heartbeat`` (every agent,
every minute or so) is not audited, nor are the GETs of ``/agent/jobs``. Everything a user
does is, the enrolment of an agent (``POST /agent/enroll``) included, and so are an agent's
reports of the outcome of work (``POST /agent/jobs/{id}/result``), which finish a user's
patch operation.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from sqlalchemy import Engine, insert

from pyhotpatch.clock import Clock
from pyhotpatch.storage._tables import audit

log = logging.getLogger("pyhotpatch.server.audit")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the fixed words of ARM paths, as the routes spell them
KEYWORDS = {
    word.lower(): word
    for word in (
        "subscriptions", "resourcegroups", "providers", "microsoft.features", "microsoft.compute",
        "microsoft.resources", "features", "virtualmachines", "availabilitysets", "locations",
        "operations", "register", "unregister", "assesspatches", "installpatches", "instanceview",
        "featureproviders", "subscriptionfeatureregistrations", "tenants",
    )
}  # fmt: skip
_QUIET = {"GET", "HEAD", "OPTIONS"}
#: paths whose requests are telemetry, not changes: never audited, whatever their method
_UNAUDITED = {"/agent/heartbeat"}


def subscription_of(path: str) -> str | None:
    """The subscription a path acts on: ARM paths, and machine paths under ``/hotpatch/machines``.

    The audit log is read per subscription, so a revert queued for a machine must be
    filed under that machine's subscription.
    """
    parts = path.split("/")
    if len(parts) > 4 and [p.lower() for p in parts[1:4]] == [
        "hotpatch",
        "machines",
        "subscriptions",
    ]:
        return parts[4].lower()[:36]
    if len(parts) > 2 and parts[1].lower() == "subscriptions":
        return parts[2].lower()[:36]
    return None


def fold_path(path: str) -> str:
    """``path`` with ARM's fixed words in the routes' spelling."""
    if not path.lower().startswith(("/subscriptions", "/providers", "/tenants")):
        return path
    parts = path.split("/")
    return "/".join(KEYWORDS.get(part.lower(), part) for part in parts)


class ArmMiddleware:
    """Case-insensitive paths, request ids on every answer, an audit record of every change."""

    def __init__(self, app: App, engine: Engine, clock: Clock) -> None:
        self.app = app
        self.engine = engine
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = scope["path"]  # the audit keeps the path as the caller spelled it
        scope["path"] = fold_path(sent)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = str(uuid.uuid4())
        correlation = headers.get("x-ms-correlation-request-id") or request_id
        extra = [
            (b"x-ms-request-id", request_id.encode()),
            (b"x-ms-correlation-request-id", correlation.encode()),
        ]
        client = headers.get("x-ms-client-request-id")
        if client and headers.get("x-ms-return-client-request-id", "").lower() == "true":
            extra.append((b"x-ms-client-request-id", client.encode("latin-1")))
        audited = scope["method"] not in _QUIET and scope["path"].rstrip("/") not in _UNAUDITED
        recorded = False

        async def answer(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
                if audited:
                    # the record is durable before the caller learns how the change ended
                    recorded = True
                    await anyio.to_thread.run_sync(
                        self._record, scope, sent, message["status"], request_id
                    )
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            if audited and not recorded:  # the request broke off before any answer
                await anyio.to_thread.run_sync(self._record, scope, sent, 500, request_id)

    def _record(self, scope: Scope, path: str, status: int, request_id: str) -> None:
        principal = scope.get("state", {}).get("principal")
        subscription = subscription_of(path)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(audit).values(
                        at=self.clock(),
                        principal=getattr(principal, "id", None),
                        principal_name=getattr(principal, "name", None),
                        subscription=subscription,
                        method=scope["method"],
                        path=path[:2000],
                        status=status,
                        request_id=request_id,
                    )
                )
        except Exception:
            log.exception("could not write the audit record of %s %s", scope["method"], path)
