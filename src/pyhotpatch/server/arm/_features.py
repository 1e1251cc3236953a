"""Microsoft.Features: preview feature flags a subscription registers, as Azure serves them.

Hotpatch once needed ``Microsoft.Compute/InGuestHotPatchVMPreview`` and its two siblings
registered (``az feature register``); with ``--preview-rules`` this control plane still
does. Registration takes a while (``Registering`` → ``Registered``), which the clock
settles on read, so a restarted server answers the same. Register and unregister answer
200 with the feature at once; clients poll ``GET`` for the end state.

api-version 2021-07-01 also models a registration as a resource,
``featureProviders/{ns}/subscriptionFeatureRegistrations/{name}``: PUT registers, DELETE
forgets (back to ``NotRegistered``), and the lists hold the features a subscription has
asked for. Both views share one state per feature.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy import Connection, select

from pyhotpatch.server._auth import Authenticator, Principal, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import api_version, page, subscription_id
from pyhotpatch.server.arm._registrations import PREVIEW_FEATURES, feature_state, set_feature
from pyhotpatch.server.arm._subscriptions import TENANT, require_subscription
from pyhotpatch.storage._tables import features

#: every feature this control plane knows, as (namespace, name) in Azure's spelling
KNOWN_FEATURES: tuple[tuple[str, str], ...] = tuple(
    ("Microsoft.Compute", name) for name in PREVIEW_FEATURES
)
_CANONICAL = {(ns.lower(), name.lower()): (ns, name) for ns, name in KNOWN_FEATURES}
_TYPE = "Microsoft.Features/providers/features"
_REGISTRATION_TYPE = "Microsoft.Features/featureProviders/subscriptionFeatureRegistrations"
_REGISTRATION_VERSION = "2021-07-01"
_DOCS = "https://learn.microsoft.com/azure/automanage/automanage-hotpatch"
_OPERATIONS = (
    ("Microsoft.Features/operations/read", "Operations", "List operations"),
    ("Microsoft.Features/features/read", "Features", "Read features"),
    ("Microsoft.Features/providers/features/read", "Features", "Read a feature"),
    ("Microsoft.Features/providers/features/register/action", "Features", "Register a feature"),
    (
        "Microsoft.Features/providers/features/unregister/action",
        "Features",
        "Unregister a feature",
    ),
    (
        "Microsoft.Features/featureProviders/subscriptionFeatureRegistrations/read",
        "Subscription feature registrations",
        "Read subscription feature registrations",
    ),
    (
        "Microsoft.Features/featureProviders/subscriptionFeatureRegistrations/write",
        "Subscription feature registrations",
        "Register a feature for a subscription",
    ),
    (
        "Microsoft.Features/featureProviders/subscriptionFeatureRegistrations/delete",
        "Subscription feature registrations",
        "Delete a subscription feature registration",
    ),
)


def canonical_feature(namespace: str, name: str) -> tuple[str, str]:
    """A known feature's (namespace, name) in Azure's spelling, or ARM's 404 ``FeatureNotFound``."""
    found = _CANONICAL.get((namespace.lower(), name.lower()))
    if found is None:
        raise ApiError(404, "FeatureNotFound", f"The feature '{name}' could not be found.")
    return found


def feature_json(namespace: str, name: str, state: str, subscription: str) -> dict[str, Any]:
    """A ``FeatureResult`` as Azure spells it."""
    return {
        "id": f"/subscriptions/{subscription}/providers/Microsoft.Features/providers/"
        f"{namespace}/features/{name}",
        "name": f"{namespace}/{name}",
        "properties": {"state": state},
        "type": _TYPE,
    }


def _current(
    conn: Connection, ctx: ArmContext, subscription: str, namespace: str, name: str
) -> dict[str, Any]:
    state = feature_state(conn, subscription, namespace, name, ctx.clock())
    return feature_json(namespace, name, state, subscription)


def registration_json(
    conn: Connection, ctx: ArmContext, subscription: str, namespace: str, name: str
) -> dict[str, Any]:
    """A ``SubscriptionFeatureRegistration`` (api-version 2021-07-01) as of now."""
    state = feature_state(conn, subscription, namespace, name, ctx.clock())
    properties: dict[str, Any] = {
        "tenantId": TENANT,
        "subscriptionId": subscription,
        "featureName": name,
        "displayName": name,
        "providerNamespace": namespace,
        "state": state,
        "authorizationProfile": {},
        "metadata": {},
        "documentationLink": _DOCS,
        "approvalType": "AutoApproval",
        "shouldFeatureDisplayInPortal": False,
        "description": f"Preview feature {name} of {namespace}.",
    }
    changed = conn.execute(
        select(features.c.changed).where(
            features.c.subscription == subscription,
            features.c.namespace == namespace.lower(),
            features.c.name == name.lower(),
        )
    ).scalar()
    if changed is not None and state in ("Registering", "Registered"):
        properties["registrationDate"] = changed.isoformat().replace("+00:00", "Z")
    return {
        "id": f"/subscriptions/{subscription}/providers/Microsoft.Features/featureProviders/"
        f"{namespace}/subscriptionFeatureRegistrations/{name}",
        "name": name,
        "type": _REGISTRATION_TYPE,
        "properties": properties,
    }


def _registration_version(
    version: str = Depends(api_version("features")),
) -> str:
    """Registrations as resources exist only from api-version 2021-07-01 on."""
    if version != _REGISTRATION_VERSION:
        raise ApiError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location '' and API version '{version}' "
            "for type 'featureProviders/subscriptionFeatureRegistrations'. "
            f"The supported api-versions are '{_REGISTRATION_VERSION}'.",
        )
    return version


def _start(conn: Connection, ctx: ArmContext, subscription: str, ns: str, name: str) -> None:
    now = ctx.clock()
    if feature_state(conn, subscription, ns, name, now) not in ("Registered", "Registering"):
        set_feature(
            conn, subscription, ns, name, "Registering", now + ctx.settings.feature_delay, now
        )


def features_router(ctx: ArmContext, auth: Authenticator) -> APIRouter:
    """``/providers/Microsoft.Features/operations`` and the per-subscription feature routes."""
    router = APIRouter(tags=["features"])
    version = Depends(api_version("features"))
    base = "/subscriptions/{subscription}/providers/microsoft.features"

    def allowed(principal: Principal, action: str, subscription: str, operation: str) -> str:
        sub = subscription_id(subscription)
        require(principal, action, sub, operation)
        return sub

    @router.get("/providers/microsoft.features/operations", dependencies=[version])
    def list_operations(request: Request, _principal: Principal = Depends(auth)) -> Any:
        """What Microsoft.Features can do (tenant-wide; any caller with a token)."""
        operations = [
            {
                "name": name,
                "display": {
                    "provider": "Microsoft.Features",
                    "resource": resource,
                    "operation": op,
                },
            }
            for name, resource, op in _OPERATIONS
        ]
        return page(request, operations)

    @router.get(f"{base}/features", dependencies=[version])
    def list_all(subscription: str, request: Request, principal: Principal = Depends(auth)) -> Any:
        """Every known feature with the subscription's state."""
        sub = allowed(principal, "read", subscription, "Microsoft.Features/features/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            found = [_current(conn, ctx, sub, ns, name) for ns, name in KNOWN_FEATURES]
        return page(request, found)

    @router.get(f"{base}/providers/{{namespace}}/features", dependencies=[version])
    def list_namespace(
        subscription: str, namespace: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The known features of one namespace (none for a namespace without any)."""
        sub = allowed(principal, "read", subscription, "Microsoft.Features/providers/features/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            found = [
                _current(conn, ctx, sub, ns, name)
                for ns, name in KNOWN_FEATURES
                if ns.lower() == namespace.lower()
            ]
        return page(request, found)

    @router.get(f"{base}/providers/{{namespace}}/features/{{feature}}", dependencies=[version])
    def get_feature(
        subscription: str, namespace: str, feature: str, principal: Principal = Depends(auth)
    ) -> Any:
        """One feature's state for the subscription."""
        sub = allowed(principal, "read", subscription, "Microsoft.Features/providers/features/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            ns, name = canonical_feature(namespace, feature)
            return _current(conn, ctx, sub, ns, name)

    @router.post(
        f"{base}/providers/{{namespace}}/features/{{feature}}/register", dependencies=[version]
    )
    def register(
        subscription: str, namespace: str, feature: str, principal: Principal = Depends(auth)
    ) -> Any:
        """Start registering a feature: ``Registering`` now, ``Registered`` after the delay."""
        sub = allowed(
            principal,
            "write",
            subscription,
            "Microsoft.Features/providers/features/register/action",
        )
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            ns, name = canonical_feature(namespace, feature)
            _start(conn, ctx, sub, ns, name)
            return _current(conn, ctx, sub, ns, name)

    @router.post(
        f"{base}/providers/{{namespace}}/features/{{feature}}/unregister", dependencies=[version]
    )
    def unregister(
        subscription: str, namespace: str, feature: str, principal: Principal = Depends(auth)
    ) -> Any:
        """Start unregistering a feature: ``Unregistering``, then ``Unregistered``."""
        sub = allowed(
            principal,
            "write",
            subscription,
            "Microsoft.Features/providers/features/unregister/action",
        )
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            ns, name = canonical_feature(namespace, feature)
            now = ctx.clock()
            if feature_state(conn, sub, ns, name, now) in ("Registered", "Registering"):
                due = now + ctx.settings.feature_delay
                set_feature(conn, sub, ns, name, "Unregistering", due, now)
            return _current(conn, ctx, sub, ns, name)

    registrations = f"{base}/featureproviders/{{namespace}}/subscriptionfeatureregistrations"
    reg_operation = "Microsoft.Features/featureProviders/subscriptionFeatureRegistrations"
    reg_version = Depends(_registration_version)

    def asked_for(conn: Connection, sub: str, namespace: str | None) -> list[dict[str, Any]]:
        now = ctx.clock()
        return [
            registration_json(conn, ctx, sub, ns, name)
            for ns, name in KNOWN_FEATURES
            if (namespace is None or ns.lower() == namespace.lower())
            and feature_state(conn, sub, ns, name, now) != "NotRegistered"
        ]

    @router.get(f"{base}/subscriptionfeatureregistrations", dependencies=[reg_version])
    def list_all_registrations(
        subscription: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The features the subscription has asked for, in every namespace."""
        sub = allowed(principal, "read", subscription, f"{reg_operation}/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            found = asked_for(conn, sub, None)
        return page(request, found)

    @router.get(registrations, dependencies=[reg_version])
    def list_registrations(
        subscription: str, namespace: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The features the subscription has asked for in one namespace."""
        sub = allowed(principal, "read", subscription, f"{reg_operation}/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            found = asked_for(conn, sub, namespace)
        return page(request, found)

    @router.get(f"{registrations}/{{feature}}", dependencies=[reg_version])
    def get_registration(
        subscription: str, namespace: str, feature: str, principal: Principal = Depends(auth)
    ) -> Any:
        """A feature's registration (``NotRegistered`` if never asked for)."""
        sub = allowed(principal, "read", subscription, f"{reg_operation}/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            ns, name = canonical_feature(namespace, feature)
            return registration_json(conn, ctx, sub, ns, name)

    @router.put(f"{registrations}/{{feature}}", dependencies=[reg_version])
    def put_registration(
        subscription: str,
        namespace: str,
        feature: str,
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Register a feature, as ``register`` does; the body (its ``properties``) is optional."""
        sub = allowed(principal, "write", subscription, f"{reg_operation}/write")
        if body is not None and not isinstance(body, dict):
            raise ApiError(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: "
                "a JSON object is required.",
            )
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            ns, name = canonical_feature(namespace, feature)
            _start(conn, ctx, sub, ns, name)
            return registration_json(conn, ctx, sub, ns, name)

    @router.delete(f"{registrations}/{{feature}}", dependencies=[reg_version])
    def delete_registration(
        subscription: str, namespace: str, feature: str, principal: Principal = Depends(auth)
    ) -> Any:
        """Forget a feature's registration: 200 if there was one, else 204."""
        sub = allowed(principal, "write", subscription, f"{reg_operation}/delete")
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            ns, name = canonical_feature(namespace, feature)
            now = ctx.clock()
            if feature_state(conn, sub, ns, name, now) == "NotRegistered":
                return Response(status_code=204)
            set_feature(conn, sub, ns, name, "NotRegistered", None, now)
        return Response(status_code=200)

    return router
