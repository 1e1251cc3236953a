"""Microsoft.Compute virtual machines and availability sets, served as Azure serves them.

The routes are thin: the model rules (defaults, enums, patch-setting rules and their
Azure error messages) live in ``_vm_model``. Each resource is a row of ``arm_resources``
whose ``body`` is the model exactly as GET returns it (an availability set's
``virtualMachines`` excepted: that list is computed from the machines on every read).

Invariants:

- every request needs the subscription registered for Microsoft.Compute (409
  ``MissingSubscriptionRegistration``, which the Azure SDK answers by registering it);
- a token reaches only its own subscription, and only Contributors and above write;
- Azure's VM PUT is a long-running operation; here the work is done when the answer
  leaves, so the answer is the final model with ``provisioningState: Succeeded``, which
  azure-core's poller takes as finished;
- writes of one subscription's Compute resources take one lock, so two requests can
  neither create the same resource twice nor fill an availability set being deleted;
- deleting a machine revokes its agent's credentials before the resource goes;
- a machine's image changes only through a finished stack upgrade (``set_image``), under the
  same lock as the subscription's other Compute writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, delete, insert, select, update

from pyhotpatch.catalog import Catalog
from pyhotpatch.catalog._model import Image, Product
from pyhotpatch.server._auth import Authenticator, Principal, TokenStore, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import (
    api_version,
    check_preconditions,
    etag_of,
    merge,
    page,
    resource_name,
    subscription_id,
)
from pyhotpatch.server.arm._groups import require_group
from pyhotpatch.server.arm._patchstatus import patch_status
from pyhotpatch.server.arm._registrations import PREVIEW_FEATURES, feature_state, require_provider
from pyhotpatch.server.arm._subscriptions import require_subscription
from pyhotpatch.server.arm._vm_model import (
    RUNNING_WINDOW,
    Place,
    Platform,
    availability_set_view,
    environment,
    instance_view,
    model_image,
    normalise_availability_set,
    normalise_vm,
    os_type,
    patch_settings,
    reported_image,
    request_object,
)
from pyhotpatch.server.orchestrator._fleet import forget_machine, sync_machine
from pyhotpatch.storage import serialized
from pyhotpatch.storage._tables import machines, machines_seen, presence, products, resources

#: the ``arm_resources.type`` of each kind (lowercase, as the table keeps types)
VM_TYPE = "microsoft.compute/virtualmachines"
AS_TYPE = "microsoft.compute/availabilitysets"


def resource_key(subscription: str, group: str, kind: str, name: str) -> str:
    """The ``arm_resources.id`` of a Compute resource: its full id, lowercased."""
    return (
        f"/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/"
        f"{kind}/{name}"
    ).lower()


def vm_not_found(group: str, name: str) -> ApiError:
    """ARM's 404 for a virtual machine that does not exist."""
    return ApiError(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
        f"'{group}' was not found. For more details please go to "
        "https://aka.ms/ARMResourceNotFoundFix",
    )


def set_not_found(group: str, name: str) -> ApiError:
    """ARM's 404 for an availability set that does not exist."""
    return ApiError(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/availabilitySets/{name}' under resource group "
        f"'{group}' was not found. For more details please go to "
        "https://aka.ms/ARMResourceNotFoundFix",
    )


def get_vm(conn: Connection, subscription: str, group: str, name: str) -> dict[str, Any]:
    """The virtual machine's stored model (as GET returns it without ``$expand``), or 404."""
    row = conn.execute(
        select(resources.c.body).where(
            resources.c.id == resource_key(subscription, group, "virtualmachines", name),
            resources.c.type == VM_TYPE,
        )
    ).first()
    if row is None:
        raise vm_not_found(group, name)
    body: dict[str, Any] = dict(row.body)
    return body


def vm_by_id(conn: Connection, vm_id: str) -> dict[str, Any] | None:
    """The stored model of the virtual machine with resource id ``vm_id`` (any case), if any."""
    row = conn.execute(
        select(resources.c.body).where(resources.c.id == vm_id.lower(), resources.c.type == VM_TYPE)
    ).first()
    return dict(row.body) if row is not None else None


def vm_location(conn: Connection, vm_id: str) -> str | None:
    """The location of the virtual machine with resource id ``vm_id`` (any case), if it exists."""
    row = conn.execute(
        select(resources.c.body).where(resources.c.id == vm_id.lower(), resources.c.type == VM_TYPE)
    ).first()
    if row is None:
        return None
    location = row.body.get("location")
    return location if isinstance(location, str) else None


def _lock(subscription: str) -> str:
    """The lock a subscription's Compute writes take."""
    return f"compute:{subscription}"


def _row(conn: Connection, key: str, kind: str) -> Any:
    return conn.execute(
        select(resources.c.body, resources.c.etag).where(
            resources.c.id == key, resources.c.type == kind
        )
    ).first()


def _save(
    conn: Connection,
    *,
    key: str,
    kind: str,
    subscription: str,
    group: str,
    model: dict[str, Any],
    etag: str,
    now: datetime,
    new: bool,
) -> None:
    if new:
        conn.execute(
            insert(resources).values(
                id=key,
                subscription=subscription,
                resource_group=group.lower(),
                type=kind,
                name=model["name"],
                body=model,
                etag=etag,
                created=now,
                updated=now,
            )
        )
    else:
        conn.execute(
            update(resources)
            .where(resources.c.id == key)
            .values(body=model, etag=etag, updated=now)
        )


def _with_etag(model: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The VM model with its ``etag`` (which the body carries, as Compute's does)."""
    etag = etag_of({k: v for k, v in model.items() if k != "etag"})
    return {**model, "etag": etag}, etag


def _merged(current: dict[str, Any], patch: Any) -> dict[str, Any]:
    """A PATCH applied to the stored model: JSON merge, except that ``tags`` are replaced."""
    given = request_object(patch)
    merged = merge(current, {k: v for k, v in given.items() if k != "tags"})
    if "tags" in given:
        merged["tags"] = given["tags"]
    return merged


@dataclass(frozen=True)
class CatalogView:
    """The catalog's products (and their current baselines), read before a transaction opens.

    On SQLite every transaction holds the database's write lock, so the catalog, which
    opens connections of its own, cannot be asked from inside one; a route reads this first.
    """

    products: tuple[Product, ...]
    baselines: dict[str, str]

    @classmethod
    def read(cls, catalog: Catalog, *, baselines: bool = False) -> CatalogView:
        """The catalog as it is now; ``baselines`` also reads each product's current baseline."""
        products = tuple(catalog.products())
        current: dict[str, str] = {}
        if baselines:
            for product in products:
                release = catalog.current_baseline(product.name)
                if release is not None:
                    current[product.name] = release.kb
        return cls(products, current)

    @classmethod
    def within(cls, conn: Connection) -> CatalogView:
        """The catalog's products read on ``conn`` itself (without baselines), inside a transaction."""
        rows = conn.execute(select(products).order_by(products.c.name)).mappings()
        return cls(
            tuple(
                Product(
                    name=row["name"],
                    title=row["title"],
                    images=tuple(
                        Image(i["publisher"], i["offer"], i["sku"]) for i in row["images"]
                    ),
                    hotpatch=bool(row["hotpatch"]),
                    upgrade_to=row["upgrade_to"],
                )
                for row in rows
            ),
            {},
        )

    def product_for_image(self, publisher: str, offer: str, sku: str) -> Product | None:
        """The product a machine created from this image runs, if the catalog knows it."""
        for product in self.products:
            if any(image.matches(publisher, offer, sku) for image in product.images):
                return product
        return None

    def product_named(self, name: str) -> Product | None:
        """The product called ``name``, if the catalog has it."""
        for product in self.products:
            if product.name == name:
                return product
        return None

    def os_name(self, model: dict[str, Any]) -> str | None:
        """The title of the product a VM model's image runs, if known."""
        image = ((model["properties"].get("storageProfile") or {}).get("imageReference")) or {}
        if not all(isinstance(image.get(k), str) for k in ("publisher", "offer", "sku")):
            return None
        product = self.product_for_image(image["publisher"], image["offer"], image["sku"])
        return product.title if product is not None else None


def instance_view_of(conn: Connection, ctx: ArmContext, model: dict[str, Any]) -> dict[str, Any]:
    """The machine's ``instanceView``: patch status, power state and OS from its agent's reports.

    Everything is read on ``conn``, so it may be called inside a transaction.
    """
    row = conn.execute(
        select(presence.c.last_seen, machines.c.reported)
        .select_from(machines_seen)
        .where(machines.c.resource_id == model["id"].lower())
    ).first()
    reported = row.reported if row is not None and isinstance(row.reported, dict) else None
    return instance_view(
        model,
        patch_status=patch_status(conn, model["id"]),
        last_seen=row.last_seen if row is not None else None,
        now=ctx.clock(),
        reported=reported,
        os_name=CatalogView.within(conn).os_name(model),
    )


def _agent_row(conn: Connection, vm_id: str) -> Any:
    return conn.execute(
        select(
            presence.c.last_seen,
            machines.c.health,
            machines.c.reported,
            machines.c.agent_version,
            machines.c.baseline,
            machines.c.rejoin_after,
        )
        .select_from(machines_seen)
        .where(machines.c.resource_id == vm_id.lower())
    ).first()


def _reported(row: Any) -> dict[str, Any]:
    return row.reported if row is not None and isinstance(row.reported, dict) else {}


def _text(value: Any, limit: int = 200) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def machine_document(conn: Connection, model: dict[str, Any]) -> dict[str, Any]:
    """What a machine's agent needs to know about its machine (``GET /agent/machine``).

    The image is the one the agent last reported, when it reported one, else the model's;
    its catalog product says whether the machine can take hotpatches or must first be
    upgraded (``upgradeTo``, ``upgradeImage``). Read on ``conn``, so it may be called inside
    a transaction.
    """
    row = _agent_row(conn, model["id"])
    image = reported_image(_reported(row)) or model_image(model)
    enrolment = hotpatch_enrolment(
        model, row.baseline if row else None, row.rejoin_after if row else None
    )
    catalog = CatalogView.within(conn)
    product = catalog.product_for_image(**image) if image is not None else None
    upgrade = catalog.product_named(product.upgrade_to) if product and product.upgrade_to else None
    settings = patch_settings(model)
    return {
        "id": model["id"],
        "name": model["name"],
        "location": model["location"],
        "zones": list(model.get("zones") or []),
        "osType": os_type(model),
        "image": image,
        "product": product.name if product is not None else None,
        "hotpatchCapable": bool(product is not None and product.hotpatch),
        "upgradeTo": product.upgrade_to if product is not None else None,
        "upgradeImage": upgrade.images[0].to_json() if upgrade and upgrade.images else None,
        "patchMode": settings.get("patchMode"),
        # hotpatch turned back on takes effect at the machine's next baseline
        "enableHotpatching": enrolment == "Enabled",
        "hotpatchEnrolment": enrolment,
        "environment": environment(model),
    }


def hotpatch_status(conn: Connection, ctx: ArmContext, model: dict[str, Any]) -> dict[str, Any]:
    """A machine's hotpatch state as its agent last reported it, for the CLI and the portal.

    Where the agent reported nothing (or something malformed) the model and the catalog
    answer: the image, its product, and whether hotpatching is enabled.
    """
    row = _agent_row(conn, model["id"])
    reported = _reported(row)
    image = reported_image(reported) or model_image(model)
    product = _text(reported.get("product"))
    if product is None and image is not None:
        found = CatalogView.within(conn).product_for_image(**image)
        product = found.name if found is not None else None
    last_seen: datetime | None = row.last_seen if row is not None else None
    enabled = reported.get("hotpatchEnabled")
    if not isinstance(enabled, bool):
        enabled = patch_settings(model).get("enableHotpatching") is True
    transition = reported.get("transition")
    workers = reported.get("workers")
    return {
        "machine": model["id"],
        "enrolled": row is not None,
        "running": last_seen is not None and ctx.clock() - last_seen <= RUNNING_WINDOW,
        "lastSeen": last_seen.isoformat() if last_seen is not None else None,
        "health": row.health if row is not None else None,
        "image": image,
        "product": product,
        "baseline": _text(reported.get("baseline")),
        "activeHotpatch": _text(reported.get("activeHotpatch")),
        "transition": transition if isinstance(transition, (dict, list)) else None,
        "hotpatchEnabled": enabled,
        "enrolment": hotpatch_enrolment(
            model, row.baseline if row else None, row.rejoin_after if row else None
        ),
        "agentVersion": (row.agent_version if row is not None else None)
        or _text(reported.get("agentVersion"), 64),
        "workers": workers if isinstance(workers, (dict, list)) else None,
    }


def _hotpatch_switched(
    conn: Connection, key: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Turning hotpatch off unenrols at once; turning it back on waits for the next baseline.

    The baseline the machine runs when hotpatch comes back on is remembered
    (``rejoin_after``): until the machine runs a newer one, it keeps taking restart-based
    updates.
    """
    was = patch_settings(before).get("enableHotpatching") is True
    now_on = patch_settings(after).get("enableHotpatching") is True
    if was == now_on:
        return
    baseline = None
    if now_on:
        baseline = conn.execute(
            select(machines.c.baseline).where(machines.c.resource_id == key)
        ).scalar()
    conn.execute(
        update(machines).where(machines.c.resource_id == key).values(rejoin_after=baseline)
    )


def hotpatch_enrolment(
    model: dict[str, Any], baseline: str | None, rejoin_after: str | None
) -> str:
    """The machine's hotpatch enrolment as Azure names it: Enabled, Pending or Disabled.

    ``Pending``: hotpatch was turned back on and waits for the machine's next baseline.
    """
    if patch_settings(model).get("enableHotpatching") is not True:
        return "Disabled"
    if rejoin_after is not None and rejoin_after == baseline:
        return "Pending"
    return "Enabled"


def set_image(
    conn: Connection,
    vm_id: str,
    image: dict[str, str],
    now: datetime,
    *,
    baseline: str | None = None,
    enrol: bool = False,
) -> bool:
    """Point the machine's ``imageReference`` at ``image`` after its stack was upgraded.

    ``publisher``, ``offer`` and ``sku`` change; ``version`` stays. A ``latest`` image's
    ``exactVersion`` becomes ``baseline`` (the new stack's baseline, when the agent named it)
    or goes. Clients cannot change an image (a PUT's change is 409), so this is the only way
    it changes. With ``enrol`` (a scheduled upgrade), the machine is enrolled in hotpatch:
    ``AutomaticByPlatform`` with hotpatching enabled. False if the machine no longer exists.
    """
    key = vm_id.lower()
    serialized(conn, _lock(key.split("/")[2]))
    row = _row(conn, key, VM_TYPE)
    if row is None:
        return False
    model = dict(row.body)
    properties = dict(model["properties"])
    storage = dict(properties.get("storageProfile") or {})
    # named by publisher, offer and sku from now on, not by a gallery image id
    reference = {k: v for k, v in (storage.get("imageReference") or {}).items() if k != "id"}
    reference.update({field: image[field] for field in ("publisher", "offer", "sku")})
    version = str(reference.get("version") or "latest")
    reference["version"] = version
    if version.lower() == "latest":
        reference.pop("exactVersion", None)
        if baseline:
            reference["exactVersion"] = baseline
    storage["imageReference"] = reference
    properties["storageProfile"] = storage
    if enrol:
        profile = dict(properties.get("osProfile") or {})
        config_key = (
            "linuxConfiguration" if "linuxConfiguration" in profile else ("windowsConfiguration")
        )
        config = dict(profile.get(config_key) or {})
        patch = dict(config.get("patchSettings") or {})
        patch.update({"patchMode": "AutomaticByPlatform", "enableHotpatching": True})
        config["patchSettings"] = patch
        profile[config_key] = config
        properties["osProfile"] = profile
    model, etag = _with_etag({**model, "properties": properties})
    conn.execute(
        update(resources).where(resources.c.id == key).values(body=model, etag=etag, updated=now)
    )
    product = CatalogView.within(conn).product_for_image(**image)
    sync_machine(conn, model, product.name if product is not None else None, now)
    conn.execute(update(machines).where(machines.c.resource_id == key).values(rejoin_after=None))
    return True


def _expand(value: str | None) -> bool:
    """Whether ``$expand`` asks for the instance view (``userData`` is accepted and ignored)."""
    if value is None:
        return False
    wanted = {part.strip().lower() for part in value.split(",") if part.strip()}
    unknown = wanted - {"instanceview", "userdata", "resiliencypolicy"}
    if unknown:
        raise ApiError(
            400,
            "InvalidParameter",
            f"The value '{value}' of parameter '$expand' is not valid. Allowed values are "
            "'instanceView', 'userData', 'resiliencyPolicy'.",
            target="$expand",
        )
    return "instanceview" in wanted


def _machines_by_set(conn: Connection, subscription: str) -> dict[str, list[str]]:
    """The ids of the VMs in each availability set of a subscription, by lowercase set id."""
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        select(resources.c.body)
        .where(resources.c.subscription == subscription, resources.c.type == VM_TYPE)
        .order_by(resources.c.id)
    ).all()
    for row in rows:
        ref = (row.body.get("properties") or {}).get("availabilitySet") or {}
        if isinstance(ref.get("id"), str):
            found.setdefault(ref["id"].lower(), []).append(row.body["id"])
    return found


def compute_router(ctx: ArmContext, auth: Authenticator) -> APIRouter:
    """Virtual machines and availability sets: create, read, update, delete, list."""
    router = APIRouter(tags=["compute"])
    vm_version = api_version("compute", resource_type="virtualMachines")
    as_version = api_version("compute", resource_type="availabilitySets")
    base = "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute"
    vm_one = f"{base}/virtualmachines/{{name}}"
    as_one = f"{base}/availabilitysets/{{name}}"

    def enter(
        conn: Connection, principal: Principal, subscription: str, action: str, operation: str
    ) -> str:
        """Authorise, then require the subscription and its Microsoft.Compute registration."""
        sub = subscription_id(subscription)
        require(principal, action, sub, f"Microsoft.Compute/{operation}")
        require_subscription(conn, sub)
        require_provider(conn, sub, "Microsoft.Compute", ctx.clock())
        return sub

    def platform(conn: Connection, subscription: str, catalog: CatalogView) -> Platform:
        def availability_set(set_id: str) -> dict[str, Any] | None:
            row = conn.execute(
                select(resources.c.body).where(
                    resources.c.id == set_id.lower(),
                    resources.c.subscription == subscription,
                    resources.c.type == AS_TYPE,
                )
            ).first()
            return dict(row.body) if row is not None else None

        def missing_features() -> list[str]:
            if not ctx.settings.preview_rules:
                return []
            now = ctx.clock()
            return [
                name
                for name in PREVIEW_FEATURES
                if feature_state(conn, subscription, "Microsoft.Compute", name, now) != "Registered"
            ]

        return Platform(
            product_for_image=catalog.product_for_image,
            baseline=catalog.baselines.get,
            availability_set=availability_set,
            sovereign_regions=ctx.settings.sovereign_regions,
            missing_features=missing_features,
        )

    # --- virtual machines ----------------------------------------------------------------------

    def write_vm(
        conn: Connection,
        request: Request,
        sub: str,
        group: str,
        name: str,
        version: str,
        body_of: Callable[[dict[str, Any] | None], Any],
        *,
        must_exist: bool,
        catalog: CatalogView,
    ) -> tuple[dict[str, Any], str, bool]:
        serialized(conn, _lock(sub))
        group_model = require_group(conn, sub, group)
        key = resource_key(sub, group, "virtualmachines", name)
        row = _row(conn, key, VM_TYPE)
        if row is None and must_exist:
            raise vm_not_found(group, name)
        check_preconditions(request, row.etag if row is not None else None)
        existing = dict(row.body) if row is not None else None
        now = ctx.clock()
        model = normalise_vm(
            body_of(existing),
            existing,
            place=Place(sub, group_model["name"], name),
            api_version=version,
            now=now,
            platform=platform(conn, sub, catalog),
        )
        model, etag = _with_etag(model)
        _save(
            conn,
            key=key,
            kind=VM_TYPE,
            subscription=sub,
            group=group,
            model=model,
            etag=etag,
            now=now,
            new=row is None,
        )
        image = model_image(model)
        product = catalog.product_for_image(**image) if image is not None else None
        sync_machine(conn, model, product.name if product is not None else None, now)
        if existing is not None:
            _hotpatch_switched(conn, key, existing, model)
        return model, etag, row is None

    @router.put(vm_one)
    def put_vm(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        version: str = Depends(vm_version),
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Create (201) or replace (200) a virtual machine; done when the answer leaves."""
        resource_name(name, "virtual machine")
        catalog = CatalogView.read(ctx.catalog, baselines=True)
        with ctx.engine.begin() as conn:
            sub = enter(conn, principal, subscription, "write", "virtualMachines/write")
            model, etag, created = write_vm(
                conn,
                request,
                sub,
                group,
                name,
                version,
                lambda _old: body,
                must_exist=False,
                catalog=catalog,
            )
        return JSONResponse(model, 201 if created else 200, headers={"ETag": etag})

    @router.patch(vm_one)
    def patch_vm(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        version: str = Depends(vm_version),
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Change a virtual machine with a JSON merge patch; the result must be valid as a PUT."""
        catalog = CatalogView.read(ctx.catalog, baselines=True)
        with ctx.engine.begin() as conn:
            sub = enter(conn, principal, subscription, "write", "virtualMachines/write")
            model, etag, _ = write_vm(
                conn,
                request,
                sub,
                group,
                name,
                version,
                lambda old: _merged(old or {}, body),
                must_exist=True,
                catalog=catalog,
            )
        return JSONResponse(model, 200, headers={"ETag": etag})

    @router.get(vm_one, dependencies=[Depends(vm_version)])
    def get_vm_route(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        principal: Principal = Depends(auth),
    ) -> Any:
        """One virtual machine; ``$expand=instanceView`` adds its instance view."""
        expand = _expand(request.query_params.get("$expand"))
        with ctx.engine.connect() as conn:
            sub = enter(conn, principal, subscription, "read", "virtualMachines/read")
            require_group(conn, sub, group)
            row = _row(conn, resource_key(sub, group, "virtualmachines", name), VM_TYPE)
            if row is None:
                raise vm_not_found(group, name)
            model = dict(row.body)
            if expand:
                model["properties"] = {
                    **model["properties"],
                    "instanceView": instance_view_of(conn, ctx, model),
                }
        return JSONResponse(model, 200, headers={"ETag": row.etag})

    @router.delete(vm_one, dependencies=[Depends(vm_version)])
    def delete_vm(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        principal: Principal = Depends(auth),
    ) -> Any:
        """Delete a virtual machine (200, or 204 if there was none) and revoke its agent's credentials."""
        store: TokenStore = request.app.state.tokens
        key = resource_key(subscription, group, "virtualmachines", name)
        with ctx.engine.connect() as conn:
            sub = enter(conn, principal, subscription, "write", "virtualMachines/delete")
            require_group(conn, sub, group)
            row = _row(conn, key, VM_TYPE)
            check_preconditions(request, row.etag if row is not None else None)
        if row is None:
            return Response(status_code=204)
        # credentials go first, so an interrupted deletion never leaves a live agent behind
        store.revoke_machine(key)
        with ctx.engine.begin() as conn:
            serialized(conn, _lock(sub))
            conn.execute(delete(resources).where(resources.c.id == key))
            forget_machine(conn, key)
        return Response(status_code=200)

    def list_vms(
        request: Request, principal: Principal, subscription: str, group: str | None
    ) -> Any:
        expand = _expand(request.query_params.get("$expand"))
        with ctx.engine.connect() as conn:
            sub = enter(conn, principal, subscription, "read", "virtualMachines/read")
            query = select(resources.c.body).where(
                resources.c.subscription == sub, resources.c.type == VM_TYPE
            )
            if group is not None:
                require_group(conn, sub, group)
                query = query.where(resources.c.resource_group == group.lower())
            models = [dict(r.body) for r in conn.execute(query.order_by(resources.c.id)).all()]
            if expand:
                for model in models:
                    model["properties"] = {
                        **model["properties"],
                        "instanceView": instance_view_of(conn, ctx, model),
                    }
        return page(request, models)

    @router.get(f"{base}/virtualmachines", dependencies=[Depends(vm_version)])
    def list_group_vms(
        subscription: str, group: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The virtual machines of a resource group."""
        return list_vms(request, principal, subscription, group)

    @router.get(
        "/subscriptions/{subscription}/providers/microsoft.compute/virtualmachines",
        dependencies=[Depends(vm_version)],
    )
    def list_all_vms(
        subscription: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The virtual machines of a subscription."""
        return list_vms(request, principal, subscription, None)

    # --- availability sets ---------------------------------------------------------------------

    def write_set(
        conn: Connection,
        request: Request,
        sub: str,
        group: str,
        name: str,
        body_of: Callable[[dict[str, Any] | None], Any],
        *,
        must_exist: bool,
    ) -> tuple[dict[str, Any], str]:
        serialized(conn, _lock(sub))
        group_model = require_group(conn, sub, group)
        key = resource_key(sub, group, "availabilitysets", name)
        row = _row(conn, key, AS_TYPE)
        if row is None and must_exist:
            raise set_not_found(group, name)
        check_preconditions(request, row.etag if row is not None else None)
        existing = dict(row.body) if row is not None else None
        members = _machines_by_set(conn, sub).get(key, [])
        model = normalise_availability_set(
            body_of(existing),
            existing,
            place=Place(sub, group_model["name"], name),
            has_machines=bool(members),
        )
        etag = etag_of(model)
        _save(
            conn,
            key=key,
            kind=AS_TYPE,
            subscription=sub,
            group=group,
            model=model,
            etag=etag,
            now=ctx.clock(),
            new=row is None,
        )
        return availability_set_view(model, members), etag

    @router.put(as_one, dependencies=[Depends(as_version)])
    def put_set(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Create or replace an availability set (200 either way, as Compute answers)."""
        resource_name(name, "availability set")
        with ctx.engine.begin() as conn:
            sub = enter(conn, principal, subscription, "write", "availabilitySets/write")
            model, etag = write_set(
                conn, request, sub, group, name, lambda _old: body, must_exist=False
            )
        return JSONResponse(model, 200, headers={"ETag": etag})

    @router.patch(as_one, dependencies=[Depends(as_version)])
    def patch_set(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Change an availability set with a JSON merge patch."""
        with ctx.engine.begin() as conn:
            sub = enter(conn, principal, subscription, "write", "availabilitySets/write")
            model, etag = write_set(
                conn,
                request,
                sub,
                group,
                name,
                lambda old: _merged(old or {}, body),
                must_exist=True,
            )
        return JSONResponse(model, 200, headers={"ETag": etag})

    @router.get(as_one, dependencies=[Depends(as_version)])
    def get_set(
        subscription: str, group: str, name: str, principal: Principal = Depends(auth)
    ) -> Any:
        """One availability set, with the virtual machines in it."""
        with ctx.engine.connect() as conn:
            sub = enter(conn, principal, subscription, "read", "availabilitySets/read")
            require_group(conn, sub, group)
            key = resource_key(sub, group, "availabilitysets", name)
            row = _row(conn, key, AS_TYPE)
            if row is None:
                raise set_not_found(group, name)
            members = _machines_by_set(conn, sub).get(key, [])
        return JSONResponse(
            availability_set_view(dict(row.body), members), 200, headers={"ETag": row.etag}
        )

    @router.delete(as_one, dependencies=[Depends(as_version)])
    def delete_set(
        subscription: str,
        group: str,
        name: str,
        request: Request,
        principal: Principal = Depends(auth),
    ) -> Any:
        """Delete an empty availability set (200, or 204 if there was none)."""
        with ctx.engine.begin() as conn:
            sub = enter(conn, principal, subscription, "write", "availabilitySets/delete")
            serialized(conn, _lock(sub))
            require_group(conn, sub, group)
            key = resource_key(sub, group, "availabilitysets", name)
            row = _row(conn, key, AS_TYPE)
            check_preconditions(request, row.etag if row is not None else None)
            if row is None:
                return Response(status_code=204)
            if _machines_by_set(conn, sub).get(key):
                raise ApiError(
                    409,
                    "OperationNotAllowed",
                    f"Availability Set '{row.body['name']}' cannot be deleted. Before deleting "
                    "an Availability Set please ensure that it does not contain any VM.",
                )
            conn.execute(delete(resources).where(resources.c.id == key))
        return Response(status_code=200)

    def list_sets(
        request: Request, principal: Principal, subscription: str, group: str | None
    ) -> Any:
        with ctx.engine.connect() as conn:
            sub = enter(conn, principal, subscription, "read", "availabilitySets/read")
            query = select(resources.c.id, resources.c.body).where(
                resources.c.subscription == sub, resources.c.type == AS_TYPE
            )
            if group is not None:
                require_group(conn, sub, group)
                query = query.where(resources.c.resource_group == group.lower())
            rows = conn.execute(query.order_by(resources.c.id)).all()
            members = _machines_by_set(conn, sub)
        return page(
            request, [availability_set_view(dict(r.body), members.get(r.id, [])) for r in rows]
        )

    @router.get(f"{base}/availabilitysets", dependencies=[Depends(as_version)])
    def list_group_sets(
        subscription: str, group: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The availability sets of a resource group."""
        return list_sets(request, principal, subscription, group)

    @router.get(
        "/subscriptions/{subscription}/providers/microsoft.compute/availabilitysets",
        dependencies=[Depends(as_version)],
    )
    def list_all_sets(
        subscription: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The availability sets of a subscription."""
        return list_sets(request, principal, subscription, None)

    return router
