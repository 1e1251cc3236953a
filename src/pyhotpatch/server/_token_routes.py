"""``/hotpatch/tokens`` and ``/hotpatch/audit``: who may do what, and what they did."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from pyhotpatch.clock import Clock
from pyhotpatch.server._auth import Authenticator, Principal, TokenStore, forbid, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._conventions import subscription_id
from pyhotpatch.server.arm._subscriptions import ensure_subscription
from pyhotpatch.storage._tables import audit


def token_router(store: TokenStore, auth: Authenticator, clock: Clock) -> APIRouter:
    """Token management (administrators, and owners within their subscription) and the audit log."""
    router = APIRouter(prefix="/hotpatch", tags=["auth"])

    @router.get("/whoami")
    def whoami(principal: Principal = Depends(auth)) -> Any:
        """The caller as the server sees it."""
        return principal.to_json()

    @router.post("/tokens", status_code=201)
    async def create(request: Request, principal: Principal = Depends(auth)) -> Any:
        """A new token; its secret is in this answer only."""
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(
                400, "InvalidRequestContent", "the request body is not valid JSON"
            ) from None
        if not isinstance(body, dict) or set(body) - {
            "name",
            "role",
            "subscription",
            "machine",
            "expiresInDays",
        }:
            raise ApiError(
                400,
                "InvalidRequestContent",
                "a token takes name, role, subscription, machine, expiresInDays",
            )
        role = body.get("role")
        name = body.get("name") or f"{role} token"
        if not isinstance(name, str) or len(name) > 200:
            raise ApiError(
                400,
                "InvalidParameter",
                "name must be a string of at most 200 characters",
                target="name",
            )
        sub = body.get("subscription")
        if sub is not None:
            sub = subscription_id(str(sub))
        if role in ("Administrator", "Agent") or sub is None:
            if principal.role != "Administrator":
                raise forbid(principal, "Hotpatch/tokens/write", "/")
        else:
            require(principal, "own", sub, "Hotpatch/tokens/write")
        days = body.get("expiresInDays")
        expires = None
        if days is not None:
            if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
                raise ApiError(
                    400,
                    "InvalidParameter",
                    "expiresInDays must be 1 to 3650",
                    target="expiresInDays",
                )
            expires = clock() + timedelta(days=days)
        machine = body.get("machine")
        if sub is not None:
            with store.engine.begin() as conn:
                ensure_subscription(conn, sub, clock())
        created, secret = store.create(
            name,
            str(role),
            subscription=sub,
            machine=machine if isinstance(machine, str) else None,
            expires=expires,
        )
        return {**created.to_json(), "token": secret}

    @router.get("/tokens")
    def list_tokens(
        subscription: str | None = Query(None), principal: Principal = Depends(auth)
    ) -> Any:
        """Live tokens: all of them for administrators, a subscription's for its owners."""
        if subscription is not None:
            subscription = subscription_id(subscription)
            require(principal, "own", subscription, "Hotpatch/tokens/read")
        elif principal.role != "Administrator":
            raise forbid(principal, "Hotpatch/tokens/read", "/")
        return {"value": [p.to_json() for p in store.list(subscription)]}

    @router.delete("/tokens/{token_id}")
    def revoke(token_id: str, principal: Principal = Depends(auth)) -> Any:
        """Revoke a token at once."""
        found = store.get(token_id)
        if found is None:
            raise ApiError(404, "NotFound", f"no live token {token_id}")
        if found.subscription is None or found.role in ("Administrator", "Agent"):
            if principal.role != "Administrator":
                raise forbid(principal, "Hotpatch/tokens/delete", "/")
        else:
            require(principal, "own", found.subscription, "Hotpatch/tokens/delete")
        store.revoke(token_id)
        return found.to_json()

    @router.get("/audit")
    def read_audit(
        subscription: str | None = Query(None),
        top: int = Query(100, ge=1, le=1000),
        principal: Principal = Depends(auth),
    ) -> Any:
        """The newest changes, newest first."""
        query = select(audit).order_by(audit.c.id.desc()).limit(top)
        if subscription is not None:
            subscription = subscription_id(subscription)
            require(principal, "own", subscription, "Hotpatch/audit/read")
            query = query.where(audit.c.subscription == subscription)
        elif principal.role != "Administrator":
            raise forbid(principal, "Hotpatch/audit/read", "/")
        with store.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return {
            "value": [
                {
                    "at": r["at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "principal": r["principal_name"],
                    "method": r["method"],
                    "path": r["path"],
                    "status": r["status"],
                    "requestId": r["request_id"],
                }
                for r in rows
            ]
        }

    return router
