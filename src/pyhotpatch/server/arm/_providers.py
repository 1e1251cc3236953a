"""Resource-provider registration: ``/subscriptions/{s}/providers[/{namespace}[/register]]``.

A subscription must register a provider before it may create that provider's resources,
as in Azure; azure-mgmt-core registers one by itself when a request is refused with 409
``MissingSubscriptionRegistration`` (it posts ``register`` and polls with api-version
2016-02-01), so that old version is served too. Microsoft.Resources and Microsoft.Features
are registration-free and always ``Registered``, as in Azure.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection

from pyhotpatch.server._auth import Authenticator, Principal, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import API_VERSIONS, api_version, page, subscription_id
from pyhotpatch.server.arm._registrations import KNOWN_PROVIDERS, provider_state, set_provider
from pyhotpatch.server.arm._subscriptions import require_subscription

#: the regions this control plane knows, by ARM name, with the display names providers list
REGIONS: dict[str, str] = {
    "eastus": "East US", "eastus2": "East US 2", "southcentralus": "South Central US",
    "westus2": "West US 2", "westus3": "West US 3", "australiaeast": "Australia East",
    "southeastasia": "Southeast Asia", "northeurope": "North Europe",
    "swedencentral": "Sweden Central", "uksouth": "UK South", "westeurope": "West Europe",
    "centralus": "Central US", "southafricanorth": "South Africa North",
    "centralindia": "Central India", "eastasia": "East Asia", "japaneast": "Japan East",
    "koreacentral": "Korea Central", "newzealandnorth": "New Zealand North",
    "canadacentral": "Canada Central", "francecentral": "France Central",
    "germanywestcentral": "Germany West Central", "italynorth": "Italy North",
    "norwayeast": "Norway East", "polandcentral": "Poland Central",
    "spaincentral": "Spain Central", "switzerlandnorth": "Switzerland North",
    "mexicocentral": "Mexico Central", "uaenorth": "UAE North", "brazilsouth": "Brazil South",
    "israelcentral": "Israel Central", "qatarcentral": "Qatar Central",
    "northcentralus": "North Central US", "westus": "West US", "japanwest": "Japan West",
    "westcentralus": "West Central US", "southafricawest": "South Africa West",
    "australiacentral": "Australia Central", "australiacentral2": "Australia Central 2",
    "australiasoutheast": "Australia Southeast", "koreasouth": "Korea South",
    "southindia": "South India", "westindia": "West India", "canadaeast": "Canada East",
    "francesouth": "France South", "germanynorth": "Germany North", "norwaywest": "Norway West",
    "switzerlandwest": "Switzerland West", "ukwest": "UK West", "uaecentral": "UAE Central",
    "brazilsoutheast": "Brazil Southeast", "indonesiacentral": "Indonesia Central",
    "malaysiawest": "Malaysia West", "chilecentral": "Chile Central",
    "austriaeast": "Austria East", "belgiumcentral": "Belgium Central",
    "usgovvirginia": "USGov Virginia", "usgovtexas": "USGov Texas",
    "usgovarizona": "USGov Arizona", "usgoviowa": "USGov Iowa", "usdodeast": "USDoD East",
    "usdodcentral": "USDoD Central",
}  # fmt: skip

#: providers that need no registration (Azure's ``RegistrationFree``)
ALWAYS_REGISTERED = frozenset({"microsoft.resources", "microsoft.features"})
_CANONICAL = {name.lower(): name for name in KNOWN_PROVIDERS}


def canonical_namespace(namespace: str) -> str:
    """The canonical spelling of a known namespace, or ARM's 404 for an unknown one."""
    found = _CANONICAL.get(namespace.lower())
    if found is None:
        raise ApiError(
            404, "InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid."
        )
    return found


def normalize_location(location: str) -> str:
    """A location as ARM stores it (``East US`` → ``eastus``)."""
    return location.replace(" ", "").lower()


def _versions(family: str) -> list[str]:
    return sorted(API_VERSIONS[family], reverse=True)


def _resource_types(namespace: str) -> list[dict[str, Any]]:
    everywhere = list(REGIONS.values())
    if namespace == "Microsoft.Compute":
        versions = _versions("compute")
        regional = [
            {
                "resourceType": kind,
                "locations": everywhere,
                "apiVersions": versions,
                "defaultApiVersion": versions[0],
                "capabilities": capabilities,
            }
            for kind, capabilities in (
                (
                    "availabilitySets",
                    "CrossResourceGroupResourceMove, SupportsTags, SupportsLocation",
                ),
                (
                    "virtualMachines",
                    "CrossResourceGroupResourceMove, SupportsTags, SupportsLocation",
                ),
                ("locations/operations", "None"),
            )
        ]
        return [
            *regional,
            {"resourceType": "locations", "locations": [], "apiVersions": versions},
            {"resourceType": "operations", "locations": [], "apiVersions": versions},
        ]
    family = "features" if namespace == "Microsoft.Features" else "resources"
    kinds = (
        (
            "features",
            "providers",
            "featureProviders",
            "subscriptionFeatureRegistrations",
            "operations",
        )
        if family == "features"
        else ("resourceGroups", "subscriptions", "providers", "operations", "tenants")
    )
    return [
        {"resourceType": kind, "locations": [], "apiVersions": _versions(family)} for kind in kinds
    ]


def provider_json(conn: Connection, subscription: str, namespace: str, ctx: ArmContext) -> Any:
    """The ``Provider`` model of a known namespace for a subscription, as of now."""
    free = namespace.lower() in ALWAYS_REGISTERED
    state = "Registered" if free else provider_state(conn, subscription, namespace, ctx.clock())
    return {
        "id": f"/subscriptions/{subscription}/providers/{namespace}",
        "namespace": namespace,
        "registrationState": state,
        "registrationPolicy": "RegistrationFree" if free else "RegistrationRequired",
        "resourceTypes": _resource_types(namespace),
    }


def providers_router(ctx: ArmContext, auth: Authenticator) -> APIRouter:
    """Provider registration: list, get, register and unregister per subscription."""
    router = APIRouter(tags=["providers"])
    version = Depends(api_version("resources"))

    def allowed(principal: Principal, action: str, subscription: str, operation: str) -> str:
        sub = subscription_id(subscription)
        require(principal, action, sub, operation)
        return sub

    @router.get("/subscriptions/{subscription}/providers", dependencies=[version])
    def list_providers(
        subscription: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """Every provider this control plane serves, with the subscription's registration."""
        sub = allowed(principal, "read", subscription, "Microsoft.Resources/providers/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            found = [provider_json(conn, sub, ns, ctx) for ns in sorted(KNOWN_PROVIDERS)]
        return page(request, found)

    @router.get("/subscriptions/{subscription}/providers/{namespace}", dependencies=[version])
    def get_provider(
        subscription: str, namespace: str, principal: Principal = Depends(auth)
    ) -> Any:
        """One provider and the subscription's registration for it."""
        sub = allowed(principal, "read", subscription, "Microsoft.Resources/providers/read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            return provider_json(conn, sub, canonical_namespace(namespace), ctx)

    @router.post(
        "/subscriptions/{subscription}/providers/{namespace}/register", dependencies=[version]
    )
    def register_provider(
        subscription: str, namespace: str, principal: Principal = Depends(auth)
    ) -> Any:
        """Start registering the subscription for a provider (``Registering``, ``Registered``)."""
        name = canonical_namespace(namespace)
        sub = allowed(principal, "write", subscription, f"{name}/register/action")
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            now = ctx.clock()
            if name.lower() not in ALWAYS_REGISTERED and provider_state(
                conn, sub, name, now
            ) not in ("Registered", "Registering"):
                set_provider(conn, sub, name, "Registering", now + ctx.settings.provider_delay, now)
            return provider_json(conn, sub, name, ctx)

    @router.post(
        "/subscriptions/{subscription}/providers/{namespace}/unregister", dependencies=[version]
    )
    def unregister_provider(
        subscription: str, namespace: str, principal: Principal = Depends(auth)
    ) -> Any:
        """Start unregistering (``Unregistering``, ``Unregistered``); unregistered stays so."""
        name = canonical_namespace(namespace)
        sub = allowed(principal, "write", subscription, f"{name}/unregister/action")
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            now = ctx.clock()
            if name.lower() not in ALWAYS_REGISTERED and provider_state(conn, sub, name, now) in (
                "Registered",
                "Registering",
            ):
                set_provider(
                    conn, sub, name, "Unregistering", now + ctx.settings.provider_delay, now
                )
            return provider_json(conn, sub, name, ctx)

    return router
