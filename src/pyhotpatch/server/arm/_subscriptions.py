"""Subscriptions, tenants and the cloud metadata document: what clients ask before anything else.

A subscription comes into being when an administrator gives it its first token
(``hotpatch token create --subscription …``); ARM has no public API to create one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection, insert, select

from pyhotpatch.server._auth import Authenticator, Principal, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import api_version, page, subscription_id
from pyhotpatch.storage._tables import subscriptions

TENANT = "00000000-0000-0000-0000-000000000000"


def ensure_subscription(conn: Connection, subscription: str, now: Any) -> None:
    """Create the subscription row if it is new (tokens bring subscriptions into being)."""
    sub = subscription_id(subscription)
    if conn.execute(select(subscriptions.c.id).where(subscriptions.c.id == sub)).first() is None:
        conn.execute(
            insert(subscriptions).values(
                id=sub, display_name=f"Subscription {sub[:8]}", state="Enabled", created=now
            )
        )


def require_subscription(conn: Connection, subscription: str) -> str:
    """The subscription id, lowercased, or ARM's 404 if it does not exist."""
    sub = subscription_id(subscription)
    if conn.execute(select(subscriptions.c.id).where(subscriptions.c.id == sub)).first() is None:
        raise ApiError(
            404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found."
        )
    return sub


def _subscription_json(row: Any) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{row.id}",
        "subscriptionId": row.id,
        "tenantId": TENANT,
        "displayName": row.display_name,
        "state": row.state,
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
    }


def subscriptions_router(ctx: ArmContext, auth: Authenticator) -> APIRouter:
    """``/subscriptions``, ``/tenants`` and ``/metadata/endpoints``."""
    router = APIRouter(tags=["subscriptions"])
    version = api_version("resources")

    @router.get("/subscriptions", dependencies=[Depends(version)])
    def list_subscriptions(request: Request, principal: Principal = Depends(auth)) -> Any:
        """The subscriptions the caller can read."""
        with ctx.engine.connect() as conn:
            rows = conn.execute(select(subscriptions).order_by(subscriptions.c.id)).all()
        visible = [_subscription_json(r) for r in rows if principal.allows("read", r.id)]
        return page(request, visible)

    @router.get("/subscriptions/{subscription}", dependencies=[Depends(version)])
    def get_subscription(subscription: str, principal: Principal = Depends(auth)) -> Any:
        """One subscription."""
        sub = subscription_id(subscription)
        require(principal, "read", sub, "Microsoft.Resources/subscriptions/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub)).one()
        return _subscription_json(row)

    @router.get("/tenants", dependencies=[Depends(version)])
    def list_tenants(request: Request, _principal: Principal = Depends(auth)) -> Any:
        """The one tenant this control plane is."""
        tenant = {
            "id": f"/tenants/{TENANT}",
            "tenantId": TENANT,
            "tenantCategory": "Home",
            "displayName": "pyhotpatch",
            "defaultDomain": "pyhotpatch.local",
        }
        return page(request, [tenant])

    @router.get("/metadata/endpoints")
    def endpoints(request: Request) -> Any:
        """The cloud document ``az cloud register`` reads (no token needed, as in Azure)."""
        base = str(request.base_url).rstrip("/")
        return {
            "name": "pyhotpatch",
            "galleryEndpoint": base,
            "graphEndpoint": base,
            "portalEndpoint": f"{base}/portal",
            "resourceManager": base,
            "authentication": {
                "loginEndpoint": f"{base}/login",
                "audiences": [base],
                "tenant": "common",
                "identityProvider": "AAD",
            },
            "suffixes": {},
        }

    return router
